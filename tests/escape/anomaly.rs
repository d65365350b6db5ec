//! Anomaly indicators (issue 8): the status's `anomalies` after a step that
//! tries the network, talks to its own loopback, runs a binary it copied,
//! and writes outside its declared output. Root and rootless.

use hermetic_sandbox::status::Outcome;

use crate::expect::common;
use crate::harness::Run;
use crate::{battery, int};

#[test]
fn anomalies_are_recorded() {
    battery("anomalies", |c, x| {
        let run = Run::attack("anomalies")
            .args([x.env.host_net.to_string()])
            .flags(["--collect", "out"])
            .with_output();
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        // The calls failed, with the errno the empty namespace gives.
        for attack in [
            "anomaly_tcp_outside",
            "anomaly_udp_sendto",
            "anomaly_udp_sendmsg",
            "anomaly_udp_sendmmsg",
            "anomaly_tcp6_outside",
        ] {
            let a = r.one(attack);
            c.check(
                &r,
                a["ok"] == false && a["errname"] == "ENETUNREACH",
                || format!("{attack}: {a}, expected ENETUNREACH"),
            );
        }
        let lo = r.one("anomaly_loopback");
        c.check(&r, lo["ok"] == true, || {
            format!("loopback to the step's own listener: {lo}, expected both datagrams")
        });
        for attack in [
            "anomaly_exec_image",
            "anomaly_exec_tmp",
            "anomaly_exec_work",
            "anomaly_exec_memfd",
        ] {
            let e = r.one(attack);
            c.check(&r, int(e, "status") == 0, || {
                format!("{attack}: {e}, expected the program to run (exit 0)")
            });
        }
        let Ok(s) = &r.status else { return };
        let a = &s.anomalies;
        c.check(
            &r,
            a.network_watched && a.exec_watched && a.writes_checked,
            || format!("watches not all on: {a:?}"),
        );
        let net: Vec<(&str, &str, &str, u16, i32)> = a
            .network
            .iter()
            .map(|n| {
                (
                    n.syscall.as_str(),
                    n.family.as_str(),
                    n.address.as_str(),
                    n.port,
                    n.errno,
                )
            })
            .collect();
        let unreachable = libc::ENETUNREACH;
        let want = [
            ("connect", "inet", "10.0.0.1", 80, unreachable),
            ("sendto", "inet", "1.1.1.1", 53, unreachable),
            ("sendmsg", "inet", "1.0.0.1", 53, unreachable),
            // Both messages of the sendmmsg name the destination.
            ("sendmmsg", "inet", "9.9.9.9", 53, unreachable),
            ("sendmmsg", "inet", "9.9.9.9", 53, unreachable),
            ("connect", "inet6", "2001:db8::1", 443, unreachable),
        ];
        c.check(&r, net == want, || {
            format!("network anomalies {net:?}, expected exactly {want:?} (loopback is not one)")
        });
        c.check(&r, a.network.iter().all(|n| n.pid > 1), || {
            format!("network records' pids: {:?}", a.network)
        });
        let execs: Vec<(&str, &str, &str)> = a
            .foreign_exec
            .iter()
            .map(|e| (e.syscall.as_str(), e.path.as_str(), e.origin.as_str()))
            .collect();
        let want_execs = [
            ("execve", "/tmp/x", "tmp"),
            ("execve", "/work/made", "work"),
            ("execveat", "/memfd:tool", "memfd"),
        ];
        c.check(&r, execs == want_execs, || {
            format!(
                "foreign executions {execs:?}, expected {want_execs:?} only (not the image's /bin/true nor the probe, an input)"
            )
        });
        c.check(&r, a.writes_outside_outputs == ["made"], || {
            format!(
                "writes outside the outputs {:?}, expected [\"made\"] (out/result is the declared output)",
                a.writes_outside_outputs
            )
        });
    });
}

#[test]
fn profile_without_watches_says_so() {
    battery("anomalies_off", |c, x| {
        let mut run = Run::attack("anomalies").args([x.env.host_net.to_string()]);
        run.spec_limits = Some(Default::default());
        run.anomalies = Some(hermetic_sandbox::profile::AnomalyWatch {
            network: false,
            foreign_exec: false,
            ..Default::default()
        });
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        // Unwatched, the namespace still fails the outside calls.
        let t = r.one("anomaly_tcp_outside");
        c.check(&r, t["ok"] == false, || format!("anomaly_tcp_outside: {t}"));
        let Ok(s) = &r.status else { return };
        let a = &s.anomalies;
        c.check(
            &r,
            !a.network_watched
                && !a.exec_watched
                && a.network.is_empty()
                && a.foreign_exec.is_empty(),
            || format!("watches off in the profile, yet: {a:?}"),
        );
        c.check(&r, a.off.len() == 2, || format!("off reasons: {:?}", a.off));
    });
}
