//! A real build sealed: a multi-file C program compiled with make inside
//! `hermetic-sandbox`, with the host's root as a read-only image (it has
//! gcc and make; until the toolchain image exists this is the image at
//! hand). The build writes its objects next to its sources in `/work`,
//! so the input tree's directories belong to the step's host ids, as the
//! daemon stages them.
//!
//! Needs root; prints a SKIP line otherwise, and fails instead when CI=true.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hermetic_sandbox::profile::Profile;
use hermetic_sandbox::status::{Outcome, OutputKind, Status};

fn helper() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let helper = dir.join("hermetic-sandbox");
    assert!(
        helper.is_file(),
        "{} is missing: run `cargo build -p hermetic-sandbox` first",
        helper.display()
    );
    helper
}

fn root_or_skip() -> bool {
    if nix_is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test needs root, and CI=true forbids skipping it"
    );
    eprintln!("SKIP: the sandboxed build test needs root");
    false
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

const MAIN_C: &str = "#include <stdio.h>\nint add(int, int);\nint main(void) { printf(\"%d\\n\", add(2, 3)); return 0; }\n";
const ADD_C: &str = "int add(int a, int b) { return a + b; }\n";
const MAKEFILE: &str =
    "prog: main.o add.o\n\t$(CC) -o $@ main.o add.o\n%.o: %.c\n\t$(CC) -O2 -c $<\n";

/// Writes the project and gives its directory to the step's host ids.
fn project(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("main.c"), MAIN_C).unwrap();
    fs::write(dir.join("add.c"), ADD_C).unwrap();
    fs::write(dir.join("Makefile"), MAKEFILE).unwrap();
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles");
    let user = Profile::load(&profiles, "strict").unwrap().user;
    let (uid, gid) = hermetic_sandbox::run::host_ids(&user);
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
}

fn build(base: &Path, n: u32) -> (Status, PathBuf) {
    let input = base.join(format!("src-{n}"));
    let out = base.join(format!("out-{n}"));
    let status_file = base.join(format!("status-{n}.json"));
    project(&input);
    let run = Command::new(helper())
        .arg("--rootfs")
        .arg("/")
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .arg("--collect")
        .arg("prog")
        .arg("--collect")
        .arg("main.o")
        .arg("--collect")
        .arg("add.o")
        .arg("--status")
        .arg(&status_file)
        .args(["--", "make", "CC=gcc"])
        .output()
        .expect("run hermetic-sandbox");
    let status: Status =
        serde_json::from_slice(&fs::read(&status_file).expect("status file")).expect("status JSON");
    assert!(
        run.status.success(),
        "the build failed: {status:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (status, out)
}

#[test]
fn multi_file_c_build_with_make_runs_sealed_and_reproducibly() {
    if !root_or_skip() {
        return;
    }
    let base = std::env::temp_dir().join(format!("hermetic-build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let (status, out) = build(&base, 1);
    assert_eq!(status.outcome, Outcome::Completed);
    assert_eq!(status.exit_code, Some(0));
    let r = &status.restrictions;
    assert!(
        r.seccomp && r.no_new_privs && r.capabilities_dropped,
        "{r:?}"
    );
    assert_eq!(r.landlock.enforced, "full");
    assert_eq!(r.namespaces.len(), 8, "{:?}", r.namespaces);
    let prog = status
        .outputs
        .iter()
        .find(|o| o.path == "prog")
        .expect("prog collected");
    assert_eq!(prog.kind, OutputKind::File);
    assert!(prog.executable && prog.size > 0);
    // The program the sandbox built runs and adds.
    let ran = Command::new(out.join("prog")).output().expect("run prog");
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "5\n");
    // The fixed environment makes the same sources give the same bytes.
    let (_, out2) = build(&base, 2);
    for f in ["prog", "main.o", "add.o"] {
        assert_eq!(
            fs::read(out.join(f)).unwrap(),
            fs::read(out2.join(f)).unwrap(),
            "{f} differs between two sealed builds"
        );
    }
    fs::remove_dir_all(&base).unwrap();
}
