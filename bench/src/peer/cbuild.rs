//! A multi-file C build in the toolchain image, hermeticd beside
//! buildbox-casd + buildbox-run: one compile action per translation unit
//! (`gcc -O2 -c uNN.c`), then one link action on their objects, as a
//! remote-execution client (Bazel, recc) would send them, at most
//! 2 × jobs actions in flight.
//!
//! *Cold*: a fresh salt, so every action misses the cache and runs (the
//! sources are in both CASes already: uploading them is not timed).
//! *Warm*: the same build again: every action is a cache hit.
//!
//! The project is generated here (deterministic): `uNN.c`/`uNN.h` with a
//! few functions each, `main.c` calling them all.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Command as ReCommand, Directory, DirectoryNode, FileNode, command::EnvironmentVariable,
    execution_client::ExecutionClient,
};
use hermeticd::digest::BlobKey;
use prost::Message;
use tonic::transport::Channel;

use super::tree::LocalTree;
use super::{Inputs, Plan, Results, casd::Casd, nonce};
use crate::reapi::client::{Daemon, DaemonOptions, execute, put_action, upload};

/// Writes the project into `dir` (emptied first).
pub fn generate(dir: &Path, units: usize) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut main = String::from("#include <stdio.h>\n");
    for u in 0..units {
        let _ = writeln!(main, "#include \"u{u:02}.h\"");
        let h = format!(
            "#ifndef U{u:02}_H\n#define U{u:02}_H\nunsigned long u{u:02}_run(unsigned long seed);\n#endif\n"
        );
        std::fs::write(dir.join(format!("u{u:02}.h")), h)?;
        let mut c = format!("#include \"u{u:02}.h\"\n#include <string.h>\n\n");
        for f in 0..8 {
            let _ = write!(
                c,
                "static unsigned long f{f}(unsigned long x) {{\n\
                 \x20   unsigned long a[64];\n\
                 \x20   for (int i = 0; i < 64; i++) a[i] = x * {m} + (unsigned long)i * {k};\n\
                 \x20   for (int r = 0; r < 8; r++)\n\
                 \x20       for (int i = 1; i < 64; i++) a[i] ^= (a[i - 1] >> {s}) + (a[i] << {t});\n\
                 \x20   unsigned long h = 0;\n\
                 \x20   for (int i = 0; i < 64; i++) h = h * 31 + a[i];\n\
                 \x20   return h;\n}}\n\n",
                m = 2 * (u * 8 + f) + 1,
                k = u + f + 3,
                s = f % 7 + 1,
                t = (u + f) % 5 + 1,
            );
        }
        let _ = write!(
            c,
            "unsigned long u{u:02}_run(unsigned long seed) {{\n    unsigned long x = seed;\n"
        );
        for f in 0..8 {
            let _ = writeln!(c, "    x = f{f}(x);");
        }
        c.push_str("    return x;\n}\n");
        std::fs::write(dir.join(format!("u{u:02}.c")), c)?;
    }
    main.push_str("\nint main(void) {\n    unsigned long x = 1;\n");
    for u in 0..units {
        let _ = writeln!(main, "    x = u{u:02}_run(x);");
    }
    main.push_str("    printf(\"%lu\\n\", x);\n    return 0;\n}\n");
    std::fs::write(dir.join("main.c"), main)?;
    Ok(())
}

/// Puts `sub` into the Directory `root` as `name`; returns the new root.
fn graft(root: &[u8], name: &str, sub: BlobKey) -> Result<Vec<u8>> {
    let mut d = Directory::decode(root)?;
    d.directories.retain(|n| n.name != name);
    d.directories.push(DirectoryNode {
        name: name.into(),
        digest: Some(sub.to_proto()),
    });
    d.directories.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(d.encode_to_vec())
}

/// One server's view of the build: where the sources sit and how a
/// command is placed in its input root.
#[derive(Clone)]
struct Target {
    channel: Channel,
    /// Makes the input root for a Directory of sources (or objects).
    /// hermeticd: that Directory itself (the image is the root
    /// filesystem, the input root is the working directory); buildbox:
    /// the toolchain's root with it grafted as `src`.
    toolchain_root: Option<Vec<u8>>,
}

impl Target {
    async fn input_root(&self, dir: &Directory) -> Result<BlobKey> {
        let bytes = dir.encode_to_vec();
        let key = upload(&self.channel, &[bytes]).await?[0];
        match &self.toolchain_root {
            None => Ok(key),
            Some(root) => {
                let grafted = graft(root, "src", key)?;
                Ok(upload(&self.channel, &[grafted]).await?[0])
            }
        }
    }

    fn command(&self, argv: &[String], output: &str) -> ReCommand {
        // Both forms of the output: buildbox-run reads either.
        #[allow(deprecated)]
        ReCommand {
            arguments: argv.to_vec(),
            environment_variables: vec![EnvironmentVariable {
                name: "PATH".into(),
                value: "/usr/local/bin:/usr/bin:/bin".into(),
            }],
            output_paths: vec![output.into()],
            output_files: vec![output.into()],
            working_directory: if self.toolchain_root.is_some() {
                "src".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }
}

/// Runs the whole build once; returns its wall time (ms) and whether
/// every action was a cache hit.
async fn build(t: &Target, sources: &Directory, units: usize, salt: &str) -> Result<(f64, bool)> {
    let root = t.input_root(sources).await?;
    // The actions are uploaded before the clock starts.
    let mut compiles = VecDeque::new();
    for u in 0..units {
        let argv: Vec<String> = ["gcc", "-O2", "-c", &format!("u{u:02}.c")]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let cmd = t.command(&argv, &format!("u{u:02}.o"));
        compiles.push_back((
            u,
            put_action(&t.channel, &cmd, root, salt.as_bytes()).await?,
        ));
    }
    let start = Instant::now();
    let queue = Arc::new(Mutex::new(compiles));
    let objects = Arc::new(Mutex::new(Vec::new()));
    let all_hits = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (queue, objects, all_hits) = (queue.clone(), objects.clone(), all_hits.clone());
        let mut exec = ExecutionClient::new(t.channel.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .pop_front();
                let Some((u, action)) = next else { break };
                let resp = execute(&mut exec, action).await?;
                if !resp.cached_result {
                    all_hits.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                let file = resp
                    .result
                    .as_ref()
                    .and_then(|r| r.output_files.first())
                    .and_then(|f| f.digest.clone())
                    .with_context(|| format!("u{u:02}.c: no object in the result"))?;
                objects
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push(FileNode {
                        name: format!("u{u:02}.o"),
                        digest: Some(file),
                        ..Default::default()
                    });
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    // Link: main.c and the objects.
    let mut link_dir = Directory {
        files: objects
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone(),
        ..Default::default()
    };
    link_dir.files.extend(
        sources
            .files
            .iter()
            .filter(|f| f.name.ends_with(".h") || f.name == "main.c")
            .cloned(),
    );
    link_dir.files.sort_by(|a, b| a.name.cmp(&b.name));
    let link_root = t.input_root(&link_dir).await?;
    let mut argv: Vec<String> = ["gcc", "-O2", "-o", "prog", "main.c"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    argv.extend((0..units).map(|u| format!("u{u:02}.o")));
    let cmd = t.command(&argv, "prog");
    let link = put_action(&t.channel, &cmd, link_root, salt.as_bytes()).await?;
    let mut exec = ExecutionClient::new(t.channel.clone());
    let resp = execute(&mut exec, link).await?;
    let wall = start.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        resp.result.is_some_and(|r| !r.output_files.is_empty()),
        "link: no program in the result"
    );
    Ok((
        wall,
        all_hits.load(std::sync::atomic::Ordering::Relaxed) && resp.cached_result,
    ))
}

/// The C build part: its own hermeticd (toolchain default image) and casd.
pub async fn run(
    inputs: &Inputs,
    toolchain: &Path,
    jobs: usize,
    plan: Plan,
    r: &mut Results,
) -> Result<()> {
    let work = &inputs.reapi.work;
    let proj = work.join("cproject");
    generate(&proj, plan.build_units)?;
    r.build_shape = format!(
        "{} translation units (8 functions each) compiled with `gcc -O2 -c`, then one link; \
         {} + 1 actions per build",
        plan.build_units, plan.build_units
    );
    let tar = toolchain.with_extension("tar");
    let image = if tar.is_file() {
        tar
    } else {
        toolchain.to_owned()
    };
    let ri = &inputs.reapi;
    let daemon = Daemon::start_with(
        &ri.hermeticd,
        &ri.sandbox,
        &ri.rootfs,
        &ri.profiles,
        work,
        &DaemonOptions {
            name: Some("cbuild-hermeticd".into()),
            extra: format!("jobs = {jobs}\n"),
            images: vec![("toolchain".into(), image)],
            default_image: Some("toolchain".into()),
            no_fsync: false,
        },
    )?;
    let casd = Casd::start(&inputs.buildbox, work, "cbuild-casd", jobs)?;
    eprintln!("hermetic-bench: uploading the toolchain image to buildbox-casd");
    let tc = LocalTree::walk(toolchain)?;
    let b = casd.connect().await?;
    tc.upload(&b).await?;
    let tc_root = tc.directories.last().context("empty toolchain")?.clone();
    let h = daemon.connect().await?;
    let src = LocalTree::walk(&proj)?;
    let sources = Directory::decode(src.directories.last().context("empty project")?.as_slice())?;
    for ch in [&h, &b] {
        src.upload(ch).await?;
    }
    let targets = [
        Target {
            channel: h,
            toolchain_root: None,
        },
        Target {
            channel: b,
            toolchain_root: Some(tc_root),
        },
    ];
    let nonce = nonce();
    for round in 0..plan.build_rounds + 1 {
        let salt = format!("cbuild-{nonce}-{round}");
        for k in 0..2 {
            let v = (round + k) % 2;
            let (cold, hit) = build(&targets[v], &sources, plan.build_units, &salt).await?;
            anyhow::ensure!(!hit, "a cold build was all cache hits");
            let (warm, hit) = build(&targets[v], &sources, plan.build_units, &salt).await?;
            anyhow::ensure!(hit, "a warm build ran actions");
            // Round 0 warms up (page cache, the toolchain's first staging).
            if round > 0 {
                let (c, w) = if v == 0 {
                    (&mut r.build_cold.hermetic, &mut r.build_warm.hermetic)
                } else {
                    (&mut r.build_cold.buildbox, &mut r.build_warm.buildbox)
                };
                c.push(cold);
                w.push(warm);
            }
        }
    }
    super::hang_up(targets).await;
    drop(casd);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&proj);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_project_has_every_unit_and_a_main() {
        let dir = std::env::temp_dir().join(format!("hermetic-bench-cproj-{}", nonce()));
        generate(&dir, 3).unwrap();
        for name in ["u00.c", "u00.h", "u02.c", "u02.h", "main.c"] {
            assert!(dir.join(name).is_file(), "{name} missing");
        }
        assert!(!dir.join("u03.c").exists());
        let main = std::fs::read_to_string(dir.join("main.c")).unwrap();
        assert!(main.contains("u02_run(x)") && main.contains("#include \"u01.h\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn graft_adds_a_sorted_subdirectory() {
        let root = Directory {
            directories: vec![
                DirectoryNode {
                    name: "bin".into(),
                    digest: None,
                },
                DirectoryNode {
                    name: "usr".into(),
                    digest: None,
                },
            ],
            ..Default::default()
        };
        let sub = crate::reapi::client::F.empty();
        let d = Directory::decode(graft(&root.encode_to_vec(), "src", sub).unwrap().as_slice())
            .unwrap();
        let names: Vec<_> = d.directories.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["bin", "src", "usr"]);
        assert_eq!(d.directories[1].digest, Some(sub.to_proto()));
    }
}
