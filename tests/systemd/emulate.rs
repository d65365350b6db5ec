//! The unit's hardening, emulated without systemd, around a real run of
//! `hermetic-sandbox`: proof that the helper still sets up its sandbox
//! inside what `hermeticd.service` imposes, and that the directives the
//! unit leaves off would indeed break it (each comment there says so).
//!
//! What is emulated, read from the unit file itself:
//! - seccomp (installed before exec, inherited like systemd's): the
//!   SystemCallFilter= deny list expanded by `systemd-analyze
//!   syscall-filter`, the groups ProtectClock=, ProtectKernelModules= and
//!   PrivateDevices= add, SystemCallArchitectures=native,
//!   RestrictAddressFamilies=, RestrictSUIDSGID=, RestrictRealtime=;
//! - NoNewPrivileges=, CapabilityBoundingSet= (`setpriv`);
//! - in a private mount namespace (`unshare`): StateDirectory= (a
//!   read-write bind), PrivateTmp=, ProtectHome=, ProtectKernelModules=,
//!   PrivateDevices= (a private /dev; DevicePolicy=closed through a v1
//!   devices cgroup where one is mounted), ProtectProc=invisible (a new
//!   procfs with hidepid=invisible), ProtectSystem=strict (every other
//!   mount read-only).
//!
//! Not emulated: the cgroup v2 device and IP filters (BPF), MemoryDeny-
//! WriteExecute= (nothing in a busybox image JITs), the user the unit runs
//! as (root, as here) and Delegate= (the helper creates its cgroups under
//! its own, as it would in the delegated subtree).

use std::path::{Path, PathBuf};
use std::process::Command;

use hermetic_sandbox::profile::Profile;
use hermetic_sandbox::spec::{LimitOverrides, SPEC_VERSION, Spec, Stdio as StepStdio, Variation};

use crate::bpf::{self, Rule};
use crate::unit::Unit;

/// The mount namespace of the unit, then `setpriv`, then the helper.
/// `$1` is the state directory; the rest is the helper's command line.
const MOUNTS: &str = r#"
set -eu
state=$1; shift
on() { case " $FLAGS " in *" $1 "*) return 0;; esac; return 1; }
# StateDirectory=: its own read-write mount, before the rest goes read-only.
mount --bind "$state" "$state"
if on PrivateTmp; then
    mkdir -p "$state/.tmp"; chmod 1777 "$state/.tmp"
    mount --bind "$state/.tmp" /tmp
fi
if on ProtectHome; then
    for d in /home /root /run/user; do
        if [ -d "$d" ]; then mount -t tmpfs -o mode=000 tmpfs "$d"; fi
    done
fi
if on ProtectKernelModules; then
    for d in /usr/lib/modules /lib/modules; do
        if [ -d "$d" ] && [ ! -L "$d" ]; then mount -t tmpfs -o mode=000 tmpfs "$d"; fi
    done
fi
if on PrivateDevices; then
    if [ -n "$DEVCG" ]; then echo $$ > "$DEVCG/cgroup.procs"; fi
    mount -t tmpfs -o nosuid,noexec,mode=755 tmpfs /dev
    mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5
    mknod -m 666 /dev/full c 1 7; mknod -m 666 /dev/random c 1 8
    mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
    mkdir /dev/pts /dev/shm
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620,nosuid,noexec devpts /dev/pts
    ln -s pts/ptmx /dev/ptmx
    mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
fi
if on ProtectProc; then
    mount -t proc -o nosuid,nodev,noexec,hidepid=invisible proc /proc
fi
# What the negative checks add (each alone): ProtectKernelTunables=,
# ProtectKernelLogs=, ProtectControlGroups=.
if on ProtectKernelTunables; then
    mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys
fi
if on ProtectKernelLogs; then mount --bind /dev/null /proc/kmsg; fi
if on ProtectControlGroups; then
    for mp in $(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") {
            if ($(i + 1) ~ /^cgroup2?$/) print $5; break } }' /proc/self/mountinfo); do
        mount -o remount,bind,ro "$mp"
    done
fi
if on ProtectSystem; then
    for mp in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
        case "$mp" in
        /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/tmp|"$state") ;;
        *) mount -o remount,bind,ro "$mp" 2>/dev/null || echo "note: $mp stays writable" >&2 ;;
        esac
    done
fi
# The emulation itself is checked before the helper runs in it.
if on ProtectSystem && touch /etc/.hermetic-systemd-test 2>/dev/null; then
    rm -f /etc/.hermetic-systemd-test; echo "emulation: /etc is writable" >&2; exit 99
fi
if on ProtectProc && ! grep -q " /proc .*hidepid=invisible" /proc/self/mountinfo; then
    echo "emulation: /proc is not hidepid=invisible" >&2; exit 99
fi
exec setpriv --bounding-set "$CAPS" -- "$@"
"#;

/// One run of the helper under an emulated environment.
#[derive(Debug, Default)]
pub struct Env {
    /// Switches of the mount script (`PrivateTmp`, `ProtectSystem`, ...).
    pub flags: Vec<&'static str>,
    /// `setpriv --bounding-set` argument; `None`: no mount namespace and
    /// no setpriv at all (the seccomp-only negative checks).
    pub caps: Option<String>,
    /// The seccomp rules, installed before exec with no_new_privs.
    pub rules: Vec<Rule>,
    /// A v1 devices cgroup to run in (DevicePolicy=closed).
    pub devices_cgroup: Option<PathBuf>,
}

/// The seccomp rules the unit's directives install.
pub fn unit_rules(unit: &Unit) -> Vec<Rule> {
    let errno = match unit.get("Service", "SystemCallErrorNumber") {
        Some("EPERM") => libc::EPERM,
        other => panic!("emulation knows SystemCallErrorNumber=EPERM only, not {other:?}"),
    };
    assert_eq!(
        unit.get("Service", "SystemCallArchitectures"),
        Some("native"),
        "the emulated filter always kills foreign architectures"
    );
    let mut names: Vec<String> = Vec::new();
    for line in unit.all("Service", "SystemCallFilter") {
        let list = line
            .strip_prefix('~')
            .unwrap_or_else(|| panic!("emulation knows deny lists only: {line}"));
        names.extend(list.split_whitespace().map(str::to_owned));
    }
    for (directive, group) in [
        ("ProtectClock", "@clock"),
        ("ProtectKernelModules", "@module"),
        ("PrivateDevices", "@raw-io"),
    ] {
        if unit.yes(directive) {
            names.push(group.to_owned());
        }
    }
    let mut rules = Vec::new();
    let mut absent = Vec::new();
    for name in expand(&names) {
        match bpf::nr(&name) {
            Some(nr) => rules.push(Rule::Deny { nr, errno }),
            None => absent.push(name),
        }
    }
    eprintln!(
        "seccomp: {} calls denied; not on this architecture: {absent:?}",
        rules.len()
    );
    let families = unit.words("RestrictAddressFamilies");
    if !families.is_empty() {
        let values = families
            .iter()
            .map(|f| match f.as_str() {
                "AF_UNIX" => libc::AF_UNIX as u32,
                "AF_INET" => libc::AF_INET as u32,
                "AF_INET6" => libc::AF_INET6 as u32,
                "AF_NETLINK" => libc::AF_NETLINK as u32,
                other => panic!("emulation does not know {other}"),
            })
            .collect();
        let nr = bpf::nr("socket").expect("socket");
        rules.push(Rule::AllowValues {
            nr,
            arg: 0,
            values,
            errno: libc::EAFNOSUPPORT,
        });
    }
    if unit.yes("RestrictSUIDSGID") {
        // The mode argument's position; for open/openat it counts only with
        // O_CREAT, so checking it always is, if anything, stricter.
        let calls = [
            ("chmod", 1),
            ("fchmod", 1),
            ("fchmodat", 2),
            ("mkdir", 1),
            ("mkdirat", 2),
            ("mknod", 1),
            ("mknodat", 2),
            ("creat", 1),
            ("open", 2),
            ("openat", 3),
        ];
        for (name, arg) in calls {
            if let Some(nr) = bpf::nr(name) {
                let bits = libc::S_ISUID | libc::S_ISGID;
                rules.push(Rule::DenyBits {
                    nr,
                    arg,
                    bits,
                    errno: libc::EPERM,
                });
            }
        }
    }
    if unit.yes("RestrictRealtime") {
        let nr = bpf::nr("sched_setscheduler").expect("sched_setscheduler");
        let values = vec![libc::SCHED_FIFO as u32, libc::SCHED_RR as u32, 6];
        rules.push(Rule::DenyValues {
            nr,
            arg: 1,
            values,
            errno: libc::EPERM,
        });
    }
    rules
}

/// Syscall names, with `@groups` expanded by systemd itself.
fn expand(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !name.starts_with('@') {
            out.push(name.clone());
            continue;
        }
        let listed = Command::new("systemd-analyze")
            .args(["syscall-filter", "--no-pager", name])
            .output()
            .expect("systemd-analyze syscall-filter");
        assert!(listed.status.success(), "unknown syscall group {name}");
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        let members: Vec<String> = text
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        out.extend(expand(&members));
    }
    out.sort();
    out.dedup();
    out
}

/// `CAP_SETUID CAP_KILL` → `-all,+setuid,+kill` for setpriv.
pub fn bounding_set(unit: &Unit) -> String {
    let mut s = String::from("-all");
    for cap in unit.words("CapabilityBoundingSet") {
        let name = cap
            .strip_prefix("CAP_")
            .unwrap_or_else(|| panic!("{cap}: a ~ list or bare name is not emulated"));
        s.push_str(",+");
        s.push_str(&name.to_lowercase());
    }
    s
}

/// The mount-script switches for the unit's positive run.
pub fn unit_flags(unit: &Unit) -> Vec<&'static str> {
    let mut flags = Vec::new();
    for key in [
        "PrivateTmp",
        "ProtectHome",
        "ProtectKernelModules",
        "PrivateDevices",
        "ProtectProc",
        "ProtectSystem",
    ] {
        if unit.yes(key) {
            flags.push(key);
        }
    }
    assert_eq!(unit.get("Service", "ProtectSystem"), Some("strict"));
    assert_eq!(unit.get("Service", "ProtectProc"), Some("invisible"));
    flags
}

/// Paths of one emulated run, all below `base` (the state directory).
#[derive(Debug)]
pub struct Paths {
    /// The state directory (StateDirectory=), mode 0711.
    pub base: PathBuf,
    /// A busybox root filesystem.
    pub rootfs: PathBuf,
    /// `target/<profile>/hermetic-sandbox`.
    pub helper: PathBuf,
}

/// A spec running `script` with the strict profile, collecting outputs.
pub fn spec(p: &Paths, name: &str, script: &str, variation: Variation) -> Spec {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles");
    let out = p.base.join(format!("{name}.out"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    Spec {
        version: SPEC_VERSION,
        rootfs: p.rootfs.clone(),
        input: None,
        scratch: p.base.join(format!("{name}.scratch")),
        output_dir: Some(out),
        outputs: vec![],
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![],
        cwd: String::new(),
        profile: Profile::load(&profiles, "strict").unwrap(),
        limits: LimitOverrides {
            memory_bytes: Some(256 << 20),
            ..Default::default()
        },
        stdout: StepStdio::File(p.base.join(format!("{name}.stdout"))),
        stderr: StepStdio::File(p.base.join(format!("{name}.stderr"))),
        cgroup_parent: None,
        variation,
    }
}

/// Runs the helper on `spec` inside `env`; returns the status as JSON.
pub fn run(p: &Paths, name: &str, spec: &Spec, env: &Env) -> serde_json::Value {
    let spec_file = p.base.join(format!("{name}.spec.json"));
    let status_file = p.base.join(format!("{name}.status.json"));
    let _ = std::fs::remove_file(&status_file);
    std::fs::write(&spec_file, serde_json::to_vec(spec).unwrap()).unwrap();
    let helper_args = [
        p.helper.as_os_str(),
        "--spec".as_ref(),
        spec_file.as_os_str(),
        "--status".as_ref(),
        status_file.as_os_str(),
    ];
    let mut cmd = match &env.caps {
        Some(caps) => {
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                MOUNTS,
                "sh",
            ])
            .arg(&p.base)
            .args(helper_args)
            .env("CAPS", caps)
            .env("FLAGS", env.flags.join(" "))
            .env(
                "DEVCG",
                env.devices_cgroup.as_deref().unwrap_or(Path::new("")),
            );
            c
        }
        None => {
            let mut c = Command::new(helper_args[0]);
            c.args(&helper_args[1..]);
            c
        }
    };
    let prog = bpf::program(&env.rules);
    if !env.rules.is_empty() {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: the closure makes only system calls (prctl) on data
        // built before the fork.
        unsafe { cmd.pre_exec(move || bpf::install(&prog, true)) };
    }
    let out = cmd.output().expect("run the emulation");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "[{name}] exit {:?}; stderr: {}",
        out.status.code(),
        stderr.trim()
    );
    let text = std::fs::read_to_string(&status_file)
        .unwrap_or_else(|e| panic!("[{name}] no status ({e}); stderr: {stderr}"));
    serde_json::from_str(&text).unwrap()
}

/// A v1 devices cgroup allowing what DevicePolicy=closed with
/// PrivateDevices=yes allows; `None` without a writable v1 devices
/// hierarchy (then the device filter is not emulated).
pub fn devices_cgroup(name: &str) -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup/devices");
    if !root.join("devices.allow").exists() {
        eprintln!("note: no v1 devices hierarchy; DevicePolicy=closed is not emulated");
        return None;
    }
    let dir = root.join(name);
    let _ = std::fs::create_dir(&dir);
    std::fs::write(dir.join("devices.deny"), "a").unwrap();
    for rule in [
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm", // null zero full random urandom
        "c 5:0 rwm",
        "c 5:2 rwm",  // tty ptmx
        "c 136:* rw", // pts
    ] {
        std::fs::write(dir.join("devices.allow"), rule).unwrap();
    }
    Some(dir)
}
