#!/usr/bin/env python3
"""What the anomaly watches cost the no-op action.

    scripts/anomaly-watch-cost.py HELPER ROOTFS WORKDIR ROUNDS   (as root)

Runs /bin/true through one `HELPER --supervisor` (pooled sandboxes) with
the strict profile three ways, interleaved round by round: both watches on
("on"), network watch only ("net"), none ("off"); prints wall-clock
(request line to status line) and the status's setup/confine/root/run
timings, medians and p90. The first 5 rounds are warm-up. ROOTFS: e.g.
`sh scripts/busybox-rootfs.sh DIR`.
"""
import json, subprocess, sys, time, statistics, os
helper, rootfs, work, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
spec = json.loads(subprocess.check_output([helper, "--rootfs", rootfs, "--profile", "strict", "--print-spec", "--", "/bin/true"]))
spec["stdout"] = "null"; spec["stderr"] = "null"
off = json.loads(json.dumps(spec))
off["profile"]["anomalies"] = {"network": False, "foreign_exec": False, "writes_outside_outputs": False, "max_records": 100}
net = json.loads(json.dumps(spec))
net["profile"]["anomalies"] = {"network": True, "foreign_exec": False, "writes_outside_outputs": True, "max_records": 100}
# One pool key per variant: every request after the first finds its sandbox
# made (when the previous ones left it the time to be made).
p = subprocess.Popen([helper, "--supervisor", "--pool", "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
res = {"on": [], "off": [], "net": []}
pooled = {"on": 0, "off": 0, "net": 0}
setup = {"on": [], "off": [], "net": []}
run = {"on": [], "off": [], "net": []}
conf = {"on": [], "off": [], "net": []}
root = {"on": [], "off": [], "net": []}
n = 0
for r in range(rounds):
    order = [("on", spec), ("off", off), ("net", net)]
    for name, s in order[r % 3:] + order[:r % 3]:
        n += 1
        s["scratch"] = os.path.join(work, f"s-{n}")
        t = time.perf_counter()
        p.stdin.write(json.dumps({"id": n, "spec": s}) + "\n"); p.stdin.flush()
        line = p.stdout.readline()
        dt = time.perf_counter() - t
        st = json.loads(line)["status"]
        assert st["outcome"] == "completed" and st["exit_code"] == 0, st
        if r >= 5:
            res[name].append(dt * 1000)
            setup[name].append(st["timings"]["setup_us"] / 1000)
            run[name].append(st["timings"]["run_us"] / 1000)
            conf[name].append(st["timings"]["confine_us"] / 1000)
            root[name].append(st["timings"]["root_us"] / 1000)
            pooled[name] += st["timings"]["pooled"]
        if name == "on" and r == 5:
            print("watched:", st["anomalies"]["network_watched"], st["anomalies"]["exec_watched"], st["timings"]["pooled"])
p.stdin.close(); p.wait()
def q(v, x): v = sorted(v); return v[min(len(v) - 1, int(len(v) * x))]
for name in ("on", "off", "net"):
    print(f"{name}: wall median {statistics.median(res[name]):.3f} ms p90 {q(res[name], 0.9):.3f} | setup_us median {statistics.median(setup[name]):.3f} ms | run median {statistics.median(run[name]):.3f} ms  (n={len(res[name])}) confine median {statistics.median(conf[name]):.3f} p90 {q(conf[name],0.9):.3f} root median {statistics.median(root[name]):.3f} pooled {pooled[name]}/{len(res[name])}")
