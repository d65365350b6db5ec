//! Inputs for the crun baseline: an OCI bundle, and a view of the cgroup
//! mounts that crun accepts.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where a hybrid host mounts its cgroup2 hierarchy.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Writes `DIR/config.json`: crun's own default spec (`crun spec`, as root)
/// with the busybox rootfs as a read-only root, `/bin/true` as the process
/// and no terminal. Everything else (namespaces, mounts, capabilities,
/// masked paths) stays crun's default.
pub fn prepare_bundle(dir: &Path, rootfs: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = dir.join("config.json");
    match std::fs::remove_file(&config) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", config.display()));
        }
        _ => {}
    }
    let out = Command::new("crun")
        .arg("spec")
        .current_dir(dir)
        .output()
        .context("cannot run `crun spec` (apt-get install crun)")?;
    if !out.status.success() {
        bail!(
            "crun spec failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text =
        std::fs::read(&config).with_context(|| format!("cannot read {}", config.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).context("bad config.json from crun spec")?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"]["path"] = rootfs.to_string_lossy().into();
    spec["root"]["readonly"] = true.into();
    std::fs::write(&config, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("cannot write {}", config.display()))
}

/// crun refuses a hybrid host whose cgroup2 mount carries controllers
/// ("cgroups in hybrid mode not supported"), and this machine's carries
/// `hugetlb`. When that is so, the harness moves itself (and so every
/// variant it spawns, alike) into a private mount namespace, a slave of the
/// host's, where that cgroup2 mount is detached: crun then sees a v1 host,
/// as the sandbox helper already does. The host's mounts are untouched.
///
/// Returns a note for the report when it did so.
pub fn hide_hybrid_cgroup2() -> Result<Option<String>> {
    let Ok(controllers) = std::fs::read_to_string(Path::new(UNIFIED).join("cgroup.controllers"))
    else {
        return Ok(None);
    };
    let controllers = controllers.trim();
    if controllers.is_empty() {
        return Ok(None);
    }
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("cannot unshare the mount namespace")?;
    // A slave: host mounts still arrive, ours never leave.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("cannot make / a slave mount")?;
    umount2(UNIFIED, MntFlags::MNT_DETACH).with_context(|| format!("cannot detach {UNIFIED}"))?;
    Ok(Some(format!(
        "the host is hybrid (cgroup2 at `{UNIFIED}` with controllers: {controllers}), which crun refuses; \
         the harness and every variant ran in a private mount namespace without that mount, \
         so crun used v1 cgroups like the sandbox helper"
    )))
}
