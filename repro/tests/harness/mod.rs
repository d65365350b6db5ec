//! What the corpus test needs from the host: the helper, the profile, a
//! busybox root, and the runs themselves (staging, spec, status).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hermetic_repro::plan::{self, Aspect, RunVariation};
use hermetic_repro::{Bisection, Tree, TrialTrees, staging};
use hermetic_sandbox::profile::Profile;
use hermetic_sandbox::spec::{LimitOverrides, SPEC_VERSION, Spec, Stdio};
use hermetic_sandbox::status::{Outcome, Status};
use serde::Deserialize;

/// `repro/corpus`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// A corpus case (`case.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The case's directory name (filled in by `load`).
    #[serde(skip)]
    pub name: String,
    /// What it does.
    #[allow(dead_code)]
    pub description: String,
    /// `busybox` or `host`.
    pub rootfs: Rootfs,
    /// The command.
    pub argv: Vec<String>,
    /// The input directory, relative to the case.
    pub inputs: String,
    /// Declared outputs.
    pub outputs: Vec<String>,
    /// Runs in the check.
    #[serde(default = "three")]
    pub runs: usize,
    /// What the check must find.
    pub expect: Expect,
}

fn three() -> usize {
    3
}

/// The image a case runs on.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Rootfs {
    /// A busybox-static root.
    Busybox,
    /// The host's `/`, read-only.
    Host,
    /// The `toolchain` reference image (Debian minbase + gcc, make,
    /// libc6-dev: `images/toolchain/build.sh`), built once by
    /// `scripts/toolchain-image` and unpacked once per target directory.
    Toolchain,
}

/// A case's expectations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The verdict.
    pub reproducible: bool,
    /// Exactly the paths named as differing.
    pub differs: Vec<String>,
    /// Exactly the aspects bisection must name (bisection runs when set).
    #[serde(default)]
    pub responsible: Option<Vec<Aspect>>,
    /// The first differing archive member.
    #[serde(default)]
    pub first_member: Option<String>,
}

impl Case {
    /// Loads `corpus/NAME/case.toml`.
    pub fn load(name: &str) -> Case {
        let path = corpus_dir().join(name).join("case.toml");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut case: Case =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        case.name = name.to_owned();
        case
    }

    fn inputs_path(&self) -> PathBuf {
        corpus_dir().join(&self.name).join(&self.inputs)
    }
}

/// The host side of the test: found once per test process.
#[derive(Debug)]
pub struct Host {
    helper: PathBuf,
    /// The strict profile.
    pub profile: Profile,
    busybox: PathBuf,
    toolchain: OnceLock<Option<PathBuf>>,
    base: PathBuf,
    owner: (u32, u32),
    serial: Mutex<()>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` a buffer of the right
    // size that statfs fills on success.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: statfs returned 0, so it initialized `st`.
    rc == 0 && unsafe { st.assume_init() }.f_type == libc::TMPFS_MAGIC
}

impl Host {
    /// The host, or `None` after a loud SKIP when this is not root (a
    /// failure instead when `CI=true`).
    pub fn get() -> Option<&'static Host> {
        static HOST: OnceLock<Option<Host>> = OnceLock::new();
        HOST.get_or_init(|| {
            if !is_root() {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "the corpus test needs root, and CI=true forbids skipping it"
                );
                eprintln!(
                    "SKIP: the reproducibility corpus runs the sandbox helper and needs root"
                );
                return None;
            }
            Some(Host::new())
        })
        .as_ref()
    }

    fn new() -> Host {
        let exe = std::env::current_exe().expect("current_exe");
        let helper = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .join("hermetic-sandbox");
        assert!(
            helper.is_file(),
            "{} is missing: run `cargo build -p hermetic-sandbox` into the same target directory",
            helper.display()
        );
        let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles");
        let profile = Profile::load(&profiles, "strict").expect("the strict profile");
        let owner = hermetic_sandbox::run::host_ids(&profile.user);
        let busybox = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repro-busybox-rootfs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/busybox-rootfs.sh");
        let built = Command::new(&script)
            .arg(&busybox)
            .output()
            .expect("run busybox-rootfs.sh");
        assert!(
            built.status.success(),
            "busybox-rootfs.sh: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        // Staging on tmpfs: readdir there follows creation order.
        assert!(
            is_tmpfs(Path::new("/dev/shm")),
            "/dev/shm is not a tmpfs: the staging-order cases need one"
        );
        let base = PathBuf::from(format!("/dev/shm/hermetic-repro-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        Host {
            helper,
            profile,
            busybox,
            toolchain: OnceLock::new(),
            base,
            owner,
            serial: Mutex::new(()),
        }
    }

    /// The unpacked toolchain image: the tarball `scripts/toolchain-image`
    /// keeps (building it the first time, about a minute), unpacked under
    /// the target directory and reused while the tarball is the same.
    /// `None` after a loud SKIP where it cannot be built (no mirror, say);
    /// with `CI=true` that fails instead.
    pub fn toolchain(&self) -> Option<&Path> {
        self.toolchain
            .get_or_init(|| {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/toolchain-image");
                let built = Command::new(&script).output().expect("run toolchain-image");
                if !built.status.success() {
                    let why = format!(
                        "scripts/toolchain-image failed (the C corpus case runs in the \
                         toolchain image): {}",
                        String::from_utf8_lossy(&built.stderr)
                    );
                    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                    eprintln!("SKIP: {why}");
                    return None;
                }
                let stdout = String::from_utf8(built.stdout).expect("a UTF-8 path");
                let tar = PathBuf::from(stdout.lines().last().expect("the tarball's path").trim());
                Some(unpack(&tar))
            })
            .as_deref()
    }

    /// One case at a time: timing-sensitive cases need the CPUs.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.serial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh directory for a case's runs.
    pub fn case_dir(&self, name: &str) -> PathBuf {
        let dir = self.base.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&self.base).unwrap();
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Removes a case's directory after it passed, and the base directory
    /// when it is left empty (a failed case's runs stay for a post-mortem).
    pub fn remove_case_dir(&self, dir: &Path) {
        let _ = fs::remove_dir_all(dir);
        let _ = fs::remove_dir(&self.base);
    }

    /// Stages the case's inputs in `v`'s order, runs it with `v` applied,
    /// and returns its output directory. Panics with the step's logs when
    /// the step fails.
    pub fn execute(&self, case: &Case, v: &RunVariation, dir: &Path) -> PathBuf {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).unwrap();
        let input = dir.join("input");
        staging::copy_tree(
            &case.inputs_path(),
            &input,
            v.staging_order_seed,
            Some(self.owner),
        )
        .expect("stage the inputs");
        let mut env: Vec<(String, String)> =
            [("A", "1"), ("B", "2"), ("C", "3"), ("CASE", &case.name)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        plan::permute(&mut env, v.env_order_seed);
        let out = dir.join("out");
        let spec = Spec {
            version: SPEC_VERSION,
            rootfs: match case.rootfs {
                Rootfs::Busybox => self.busybox.clone(),
                Rootfs::Host => "/".into(),
                Rootfs::Toolchain => self
                    .toolchain()
                    .expect("run_case checks the toolchain image first")
                    .to_owned(),
            },
            input: Some(input),
            scratch: dir.join("scratch"),
            output_dir: Some(out.clone()),
            outputs: case.outputs.clone(),
            argv: case.argv.clone(),
            env,
            cwd: String::new(),
            profile: self.profile.clone(),
            limits: LimitOverrides {
                timeout_ms: Some(120_000),
                ..Default::default()
            },
            stdout: Stdio::File(dir.join("stdout.log")),
            stderr: Stdio::File(dir.join("stderr.log")),
            cgroup_parent: None,
            variation: v.sandbox.clone(),
        };
        let spec_file = dir.join("spec.json");
        let status_file = dir.join("status.json");
        fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
        let run = Command::new(&self.helper)
            .arg("--spec")
            .arg(&spec_file)
            .arg("--status")
            .arg(&status_file)
            .output()
            .expect("run hermetic-sandbox");
        let status: Option<Status> = fs::read(&status_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let ok = status
            .as_ref()
            .is_some_and(|s| s.outcome == Outcome::Completed && s.exit_code == Some(0));
        assert!(
            ok && run.status.success(),
            "{}: the step failed under {v:?}: {status:?}\nhelper: {}\nstdout: {}\nstderr: {}",
            case.name,
            String::from_utf8_lossy(&run.stderr),
            fs::read_to_string(dir.join("stdout.log")).unwrap_or_default(),
            fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
        );
        out
    }

    /// One-at-a-time bisection: each trial runs together with a control run
    /// of the baseline, both from an instant just after a wall-clock second
    /// boundary.
    pub fn bisect(&self, case: &Case, baseline: &RunVariation, dir: &Path) -> Bisection {
        let mut runs = Vec::new();
        for (i, (aspect, v)) in plan::one_at_a_time(baseline).into_iter().enumerate() {
            align_to_second();
            let start = Instant::now();
            let at = |delay_ms: u64| {
                let due = Duration::from_millis(delay_ms);
                std::thread::sleep(due.saturating_sub(start.elapsed()));
            };
            let (cdir, tdir) = (
                dir.join(format!("{i}-{aspect}-control")),
                dir.join(format!("{i}-{aspect}-trial")),
            );
            let (control, trial) = std::thread::scope(|s| {
                let c = s.spawn(|| {
                    at(baseline.delay_ms);
                    self.execute(case, baseline, &cdir)
                });
                let t = s.spawn(|| {
                    at(v.delay_ms);
                    self.execute(case, &v, &tdir)
                });
                (c.join().unwrap(), t.join().unwrap())
            });
            let read = |p: &Path| Tree::read(p).expect("read outputs");
            runs.push((aspect, v, read(&control), read(&trial)));
        }
        let trials: Vec<TrialTrees<'_>> = runs
            .iter()
            .map(|(aspect, v, control, trial)| TrialTrees {
                aspect: *aspect,
                variation: v,
                control,
                trial,
            })
            .collect();
        Bisection::judge(&trials)
    }
}

/// `tar` unpacked under the target directory, once: a stamp of its path,
/// size and mtime says whether the unpacked tree is of this tarball.
fn unpack(tar: &Path) -> PathBuf {
    let meta = fs::metadata(tar).expect("the toolchain tarball");
    let stamp = format!(
        "{} {} {:?}\n",
        tar.display(),
        meta.len(),
        meta.modified().expect("mtime")
    );
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repro-toolchain-rootfs");
    let stamp_file = root.with_extension("stamp");
    if fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return root;
    }
    let _ = fs::remove_file(&stamp_file);
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    // Device nodes are left out: the sandbox provides its own /dev.
    let unpacked = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "--exclude=./dev/*"])
        .output()
        .expect("run tar");
    assert!(
        unpacked.status.success(),
        "unpack {}: {}",
        tar.display(),
        String::from_utf8_lossy(&unpacked.stderr)
    );
    fs::write(&stamp_file, stamp).unwrap();
    root
}

/// Sleeps until 30 ms past the next wall-clock second boundary (or this
/// one's, when it is that close), so that runs started together read the
/// same second.
fn align_to_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = u64::from(now.subsec_millis());
    let wait = if into < 30 { 30 - into } else { 1030 - into };
    std::thread::sleep(Duration::from_millis(wait));
}
