#!/usr/bin/env python3
"""Test stand-in for hermetic-sandbox: honours the spec/status contract
(spec in, collected outputs and STATUS.json out, SIGTERM = cancel) but runs
the command on the host with NO isolation at all. Only the daemon's engine
tests use it; the real sandbox is tested with the real helper."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

args = sys.argv[1:]


def supervise():
    """--supervisor: the helper's JSON-lines protocol. Each spec runs as
    this script in --spec/--status mode (in this process group, so the
    daemon can stop the runners a dead supervisor leaves); a cancel line
    sends that runner SIGTERM. Commands see FAKE_SUPERVISOR_PID."""
    import tempfile
    import threading

    lock = threading.Lock()
    runners = {}
    tmp = tempfile.mkdtemp(prefix="fake-supervisor-")

    def respond(rid, status):
        line = json.dumps({"id": rid, "status": status}) + "\n"
        with lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def run(rid, spec):
        spec_file = os.path.join(tmp, "%d.spec" % rid)
        status_file = os.path.join(tmp, "%d.status" % rid)
        spec["env"] = spec.get("env", []) + [["FAKE_SUPERVISOR_PID", str(os.getpid())]]
        with open(spec_file, "w") as f:
            json.dump(spec, f)
        proc = subprocess.Popen([sys.executable, __file__, "--spec", spec_file, "--status", status_file])
        with lock:
            runners[rid] = proc
        proc.wait()
        with lock:
            del runners[rid]
        with open(status_file) as f:
            respond(rid, json.load(f))

    threads = []
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("cancel"):
            with lock:
                proc = runners.get(req["id"])
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
            continue
        t = threading.Thread(target=run, args=(req["id"], req["spec"]))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0)


if "--supervisor" in args:
    supervise()

spec_path = args[args.index("--spec") + 1]
status_path = args[args.index("--status") + 1]
spec = json.load(open(spec_path))
start = time.monotonic()

cancelled = False
child = None


def on_term(_sig, _frame):
    global cancelled
    cancelled = True
    if child is not None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


signal.signal(signal.SIGTERM, on_term)

os.makedirs(spec["scratch"])
work = os.path.join(spec["scratch"], "work")
if spec.get("input"):
    shutil.copytree(spec["input"], work, symlinks=True)
    for root, dirs, files in os.walk(work):
        for f in files:
            p = os.path.join(root, f)
            os.chmod(p, os.stat(p).st_mode | 0o200)
else:
    os.makedirs(work)


def stream(s):
    if s == "null":
        return subprocess.DEVNULL
    if isinstance(s, dict) and "file" in s:
        return open(s["file"], "wb")
    return None


env = {k: v for k, v in spec.get("env", [])}
env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
timeout_ms = spec.get("limits", {}).get("timeout_ms") or spec["profile"]["limits"]["timeout_ms"]
outcome, exit_code, sig, timed_out, error = "completed", None, None, False, None
try:
    child = subprocess.Popen(
        spec["argv"],
        cwd=os.path.join(work, spec.get("cwd") or ""),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stream(spec.get("stdout")),
        stderr=stream(spec.get("stderr")),
        start_new_session=True,
    )
    try:
        rc = child.wait(timeout=timeout_ms / 1000.0)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        rc = child.wait()
        timed_out, outcome = True, "timed_out"
    if rc < 0:
        sig = -rc
    else:
        exit_code = rc
    if cancelled:
        outcome = "cancelled"
except (FileNotFoundError, PermissionError) as e:
    outcome, error = "exec_failed", str(e)

outputs = []
if spec.get("output_dir") and outcome != "exec_failed":
    for rel in spec.get("outputs", []):
        src = os.path.join(work, rel)
        dst = os.path.join(spec["output_dir"], rel)
        if not os.path.lexists(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        entry = {"path": rel, "size": 0, "executable": False, "target": None}
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
            entry.update(kind="symlink", target=os.readlink(src))
        elif os.path.isdir(src):
            shutil.copytree(src, dst, symlinks=True)
            entry.update(kind="directory")
        else:
            shutil.copy2(src, dst)
            st = os.stat(dst)
            entry.update(kind="file", size=st.st_size, executable=bool(st.st_mode & 0o100))
        outputs.append(entry)

profile = spec["profile"]
status = {
    "version": spec["version"],
    "outcome": outcome,
    "exit_code": exit_code,
    "signal": sig,
    "oom_killed": False,
    "timed_out": timed_out,
    "timings": {"setup_us": 0, "run_us": int((time.monotonic() - start) * 1e6), "teardown_us": 0},
    "usage": {"user_cpu_us": 0, "sys_cpu_us": 0, "peak_memory_bytes": 0, "peak_memory_source": "rusage"},
    "restrictions": {
        "profile": profile["name"],
        "profile_digest": "fake",
        "namespaces": [],
        "host_uid_base": 0,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "landlock": {"enforced": "none", "abi_requested": 0, "abi_kernel": 0},
        "seccomp": False,
        "seccomp_rules": 0,
        "no_new_privs": False,
        "capabilities_dropped": False,
        "network": [],
        "limits": {
            "enforcement": "none",
            "timeout_ms": timeout_ms,
            "memory_bytes": None,
            "pids": None,
            "cpu_millis": None,
            "tmp_bytes": 0,
            "scratch_bytes": 0,
            "fsize_bytes": None,
            "nofile": 0,
        },
        "weaker": ["everything: this is the fake test helper"],
    },
    "outputs": outputs,
    "output_errors": [],
    "error": error,
}
with open(status_path + ".tmp", "w") as f:
    json.dump(status, f)
os.rename(status_path + ".tmp", status_path)
shutil.rmtree(spec["scratch"], ignore_errors=True)
