//! Attacks on the kernel's interfaces and the environment (issue 2, items
//! 1 to 13 and 22): each test runs one attack group as root and rootless
//! and checks its table in `tables.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use hermetic_sandbox::status::Outcome;
use serde_json::Value;

use crate::expect::{self, common, table};
use crate::harness::{Run, Stdin};
use crate::{battery, host, int, simple, tables};

/// Item 1, 2: TCP/UDP to the host's 127.0.0.1 and outside; host abstract sockets.
#[test]
fn network() {
    battery("network", |c, x| {
        let l = host::Listeners::bind(&format!("{}-{}", std::process::id(), x.mode.name()));
        let run = Run::attack("net").args([
            x.env.host_net.to_string(),
            l.tcp.local_addr().expect("addr").port().to_string(),
            l.udp.local_addr().expect("addr").port().to_string(),
            l.abstract_name.clone(),
        ]);
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        table(c, &r, tables::NET, &["net_interfaces"]);
        let i = r.one("net_interfaces");
        c.check(&r, i["names"] == "lo" && i["lo_up"] == true, || {
            format!("interfaces: {i}, expected only lo, up")
        });
        let reached = l.reached();
        c.check(&r, reached.is_empty(), || {
            format!("host listeners reached from the sandbox: {reached:?}")
        });
    });
}

/// Item 3: unshare, setns, clone3/clone with namespace flags.
#[test]
fn namespaces() {
    battery("namespaces", |c, x| {
        simple(c, x, "namespaces", tables::NAMESPACES, &[]);
    });
}

/// Item 4: mount, umount2, pivot_root, open_tree, move_mount, fsopen, fsmount, fsconfig.
#[test]
fn mount_family() {
    battery("mount_family", |c, x| {
        simple(c, x, "mount", tables::MOUNT, &[]);
    });
}

/// Item 5: ptrace and process_vm_* of pid 1 and a sibling; `debug` allows them.
#[test]
fn ptrace() {
    battery("ptrace", |c, x| {
        simple(c, x, "ptrace", tables::PTRACE_STRICT, &["pids"]);
        let r = x.run(&Run::attack("ptrace").flags(["--profile", "debug"]));
        common(c, &r, "debug", 0, Outcome::Completed);
        table(c, &r, tables::PTRACE_DEBUG, &["pids"]);
    });
}

/// Item 6: keyctl, add_key, request_key.
#[test]
fn keyrings() {
    battery("keyrings", |c, x| {
        simple(c, x, "keys", tables::KEYS, &[]);
    });
}

/// Item 7: io_uring, userfaultfd, bpf, perf_event_open.
#[test]
fn kernel_interfaces() {
    battery("kernel_interfaces", |c, x| {
        simple(c, x, "kernel_iface", tables::KERNEL_IFACE, &[]);
    });
}

/// Item 8: TIOCSTI (also with high bits) and TIOCLINUX on a host pty and a private one.
#[test]
fn terminal_injection() {
    battery("terminal_injection", |c, x| {
        let mut run = Run::attack("tty");
        run.stdin = Stdin::Pty;
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        table(c, &r, tables::TTY, &["stdin_isatty"]);
        if r.one("stdin_isatty")["ok"] != true {
            c.note(
                &r,
                "the step's stdin was not the host pty the helper was given".into(),
            );
        }
        c.check(&r, r.pty_pending == 0, || {
            format!("{} bytes were injected into the host pty", r.pty_pending)
        });
    });
}

/// Item 9: /proc/sys, /proc/sysrq-trigger, /sys, cgroupfs; masked /proc files.
#[test]
fn proc_sys_and_cgroupfs() {
    battery("proc_sys_and_cgroupfs", |c, x| {
        let extra = [
            "write_sysrq_trigger",
            "read_kcore",
            "read_keys",
            "read_timer_list",
            "cgroupfs_visible",
            "write_cgroupfs",
        ];
        let r = simple(c, x, "proc", tables::PROC, &extra);
        // Absent from kernels without CONFIG_MAGIC_SYSRQ (this one): then
        // ENOENT; otherwise the host-root-owned file is not the step's.
        let want = if Path::new("/proc/sysrq-trigger").exists() {
            libc::EACCES
        } else {
            libc::ENOENT
        };
        let v = r.one("write_sysrq_trigger");
        c.check(&r, v["ok"] == false && v["errno"] == want, || {
            format!(
                "write_sysrq_trigger: {v}, expected {}",
                expect::errname(want.into())
            )
        });
        for name in ["read_kcore", "read_keys", "read_timer_list"] {
            let v = r.one(name);
            c.check(&r, int(v, "bytes") == 0, || {
                format!("{name}: masked /proc file was read: {v}")
            });
        }
        let v = r.one("cgroupfs_visible");
        c.check(&r, int(v, "count") == 0, || {
            format!("a cgroup filesystem is visible: {v}")
        });
        for w in r.attempts("write_cgroupfs") {
            c.check(&r, w["ok"] == false, || {
                format!("wrote into a cgroupfs: {w}")
            });
        }
    });
}

/// Item 10: mknod of character and block devices.
#[test]
fn mknod_devices() {
    battery("mknod_devices", |c, x| {
        simple(c, x, "mknod", tables::MKNOD, &[]);
    });
}

/// Item 11: chmod u+s/g+s; exec of a setuid-root binary in the image.
#[test]
fn setid_bits() {
    battery("setid_bits", |c, x| {
        let extra = [
            "setid_final_mode",
            "creat_suid_mode",
            "mknod_reg_suid_mode",
            "creat_suid_work_mode",
            "suid_binary_mode",
            "suid_exec",
        ];
        let r = simple(c, x, "setid", tables::SETID, &extra);
        let v = r.one("setid_final_mode");
        c.check(&r, int(v, "mode") == 0o755, || {
            format!("setid file ended with mode {v}, expected 0755")
        });
        for name in [
            "creat_suid_mode",
            "creat_suid_work_mode",
            "mknod_reg_suid_mode",
        ] {
            let v = r.one(name);
            c.check(&r, v["ok"] == false, || {
                format!("{name}: a set-id file was made without chmod: {v}")
            });
        }
        let v = r.one("suid_binary_mode");
        c.check(&r, int(v, "mode") == 0o4755, || {
            format!("harness: print-euid in the image is not 04755: {v}")
        });
        let v = r.one("suid_exec");
        c.check(
            &r,
            int(v, "euid") == 1000 && int(v, "uid") == 1000 && int(v, "egid") == 1000,
            || format!("exec of a setuid-root binary changed ids: {v}"),
        );
    });
}

/// Item 12: setxattr security.capability (all four setxattr calls).
#[test]
fn security_xattrs() {
    battery("security_xattrs", |c, x| {
        simple(c, x, "xattr", tables::XATTR, &[]);
    });
}

/// Item 13: rlimits, sethostname, clocks, modules, kexec, reboot, swap, acct.
#[test]
fn privileged_knobs() {
    battery("privileged_knobs", |c, x| {
        let r = simple(
            c,
            x,
            "privileged",
            tables::PRIVILEGED,
            &["rlimit_nofile", "rlimit_fsize", "rlimit_core"],
        );
        for (name, want) in [
            ("rlimit_nofile", 1024),
            ("rlimit_fsize", 4 << 30),
            ("rlimit_core", 0),
        ] {
            let v = r.one(name);
            c.check(&r, int(v, "soft") == want && int(v, "hard") == want, || {
                format!("{name}: {v}, expected soft = hard = {want}")
            });
        }
    });
}

/// Item 22: Environment, hostname, ids, cwd and umask exactly as specified.
#[test]
fn identity() {
    battery("identity", |c, x| {
        let run = Run::attack("identity").flags([
            "--env",
            "HERMETIC_GIVEN=given value",
            "--env",
            "SOURCE_DATE_EPOCH=1700000000",
        ]);
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        table(c, &r, &[], &["environment", "identity"]);
        let env: BTreeMap<String, String> = r.one("environment")["env"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str))
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let want: BTreeMap<String, String> = [
            ("HERMETIC_GIVEN", "given value"),
            ("SOURCE_DATE_EPOCH", "1700000000"),
            ("TZ", "UTC"),
            ("LANG", "C.UTF-8"),
            (
                "PATH",
                "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            ),
            ("HOME", "/tmp"),
            ("USER", "builder"),
            ("LOGNAME", "builder"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        c.check(&r, env == want, || {
            format!("environment {env:?}, expected exactly {want:?}")
        });
        let v = r.one("identity");
        let zero = "0000000000000000";
        let ok = v["hostname"] == "localhost"
            && [int(v, "uid"), int(v, "euid"), int(v, "gid"), int(v, "egid")] == [1000; 4]
            && (v["groups"] == "" || v["groups"] == "1000")
            && v["cwd"] == "/work"
            && int(v, "umask") == 0o022
            && v["Seccomp"] == "2"
            && v["NoNewPrivs"] == "1"
            && ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
                .iter()
                .all(|k| v[*k] == zero)
            && int(v, "sid") == int(v, "pid");
        c.check(&r, ok, || {
            format!(
                "identity {v}, expected hostname localhost, uid/gid 1000, groups none or 1000, cwd /work, \
                 umask 022, seccomp filter, no_new_privs, no capabilities, own session"
            )
        });
    });
}
