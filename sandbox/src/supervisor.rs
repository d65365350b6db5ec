//! Supervisor mode: one long-lived helper process, started once by the
//! daemon, that forks a runner per action instead of paying an `execve` of
//! the helper each time.
//!
//! Protocol, one JSON object per line in each direction:
//! - in: `{"id": N, "spec": {...}}` runs a spec; `{"id": N, "cancel": true}`
//!   cancels it (SIGTERM to its runner, which tears the sandbox down);
//! - out: `{"id": N, "status": {...}}` once per spec, in completion order.
//!
//! The supervisor stays single-threaded: it polls standard input and one
//! pipe per running action. End of input stops it after the running actions
//! finish.
//!
//! # The pool
//! A sandbox's start is mostly work that does not depend on the action:
//! the namespaces, the id maps, the cgroup, the root filesystem but `/work`
//! ([`crate::run::warm_up`]). When an action ends, the supervisor forks a
//! runner that makes that part for the same [`PoolKey`] (profile, rootfs,
//! cgroup limits, sizes, variation) and then waits for a spec. A request
//! whose key matches an entry is handed to it (the spec's JSON through a
//! pipe); the runner then does only the action's part
//! ([`crate::run::run_warm`]: `/work` over the input, `pivot_root`, every
//! verification, the step), the same code a cold sandbox runs after its own
//! warm-up. An entry serves one action and is gone; at most
//! [`POOL_CAPACITY`] keys (`--pool N`) have an entry, the least recently used is
//! discarded first; end of input discards them all (each runner tears its
//! sandbox down and removes its mount point), and a killed supervisor's
//! runners get SIGTERM from the kernel and do the same.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::run::{PoolKey, Prepared};
use crate::spec::Spec;
use crate::status::Status;

/// Distinct keys that keep a pre-made sandbox, by default.
pub const POOL_CAPACITY: usize = 2;

/// A request line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    id: u64,
    #[serde(default)]
    spec: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    cancel: bool,
}

/// A response line.
#[derive(Debug, Serialize)]
struct Response<'a> {
    id: u64,
    status: &'a Status,
}

struct Running {
    pid: Pid,
    pipe: OwnedFd,
    buf: Vec<u8>,
    /// The spec and its `prepared` index, to refill the pool when it ends.
    spec: Box<Spec>,
    prepared: usize,
}

/// A runner that made a sandbox ahead of the request and waits for a spec.
struct PoolEntry {
    key: PoolKey,
    pid: Pid,
    /// Supervisor → runner: one spec's JSON, then EOF. Closing it without
    /// a spec discards the entry.
    spec_w: OwnedFd,
    /// Runner → supervisor: the status.
    status_r: OwnedFd,
}

/// The supervisor's state besides the running actions.
struct State {
    prepared: Vec<(crate::profile::Profile, Prepared)>,
    pool: Vec<PoolEntry>,
    /// Runners whose report is in (or that were discarded), reaped without
    /// waiting.
    finishing: Vec<Pid>,
    made: u64,
    capacity: usize,
    /// The cgroup parents already swept for leftovers ([`sweep`]).
    swept: Vec<Option<PathBuf>>,
}

impl State {
    /// Discards a pool entry: its runner sees EOF and tears down.
    fn discard(&mut self, entry: PoolEntry) {
        self.finishing.push(entry.pid);
    }

    /// After an action for `spec` ended: make the next sandbox for its key
    /// unless one waits already.
    fn refill(&mut self, spec: &Spec, prepared: usize) {
        if self.capacity == 0 {
            return;
        }
        let key = PoolKey::of(spec);
        if let Some(i) = self.pool.iter().position(|e| e.key == key) {
            // Most recently used last.
            let e = self.pool.remove(i);
            self.pool.push(e);
            return;
        }
        self.made += 1;
        let mount_point = std::env::temp_dir().join(format!(
            "hermetic-pool-{}-{}",
            std::process::id(),
            self.made
        ));
        match start_warm(spec, &self.prepared[prepared].1, mount_point) {
            Ok(e) => self.pool.push(e),
            Err(e) => eprintln!("hermetic-sandbox supervisor: warning: cannot fill the pool: {e}"),
        }
        while self.pool.len() > self.capacity {
            let e = self.pool.remove(0);
            self.discard(e);
        }
    }
}

/// Serves requests from `input` until it closes and every action is done,
/// with a pool of [`POOL_CAPACITY`] keys.
pub fn serve(input: std::fs::File, output: impl Write) -> std::io::Result<()> {
    serve_with_pool(input, output, POOL_CAPACITY)
}

/// [`serve`] with a pool of `capacity` keys (0: no pool, every sandbox is
/// made at its request).
pub fn serve_with_pool(
    input: std::fs::File,
    mut output: impl Write,
    capacity: usize,
) -> std::io::Result<()> {
    crate::run::install_cancel_handler();
    if nix::unistd::geteuid().is_root() {
        // Moving each action's process into its cgroup otherwise waits for
        // an RCU grace period (~10 ms) on every action.
        match crate::features::favor_dynamic_cgroups() {
            Ok(m) => eprintln!("hermetic-sandbox supervisor: {m}"),
            Err(e) => eprintln!(
                "hermetic-sandbox supervisor: warning: {e}; each action pays a slow cgroup move"
            ),
        }
    }
    let in_fd = input.as_raw_fd();
    let mut lines = std::io::BufReader::new(input);
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut open = true;
    let mut state = State {
        prepared: Vec::new(),
        pool: Vec::new(),
        finishing: Vec::new(),
        made: 0,
        capacity,
        swept: Vec::new(),
    };
    remove_stale_pool_dirs();
    while open || !running.is_empty() {
        state.finishing.retain(|&pid| {
            let flags = Some(nix::sys::wait::WaitPidFlag::WNOHANG);
            matches!(
                nix::sys::wait::waitpid(pid, flags),
                Ok(nix::sys::wait::WaitStatus::StillAlive)
            )
        });
        let ids: Vec<u64> = running.keys().copied().collect();
        let mut fds: Vec<PollFd> = Vec::with_capacity(ids.len() + 1);
        // SAFETY: in_fd stays open for this whole function (owned by `lines`).
        let stdin_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(in_fd) };
        if open {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
        }
        for id in &ids {
            fds.push(PollFd::new(running[id].pipe.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        let (stdin_ready, rest) = if open {
            (ready[0], &ready[1..])
        } else {
            (false, &ready[..])
        };
        for (i, id) in ids.iter().enumerate() {
            if !rest[i] {
                continue;
            }
            let r = running.get_mut(id).expect("listed");
            let mut chunk = [0u8; 65536];
            // The status is one line: answered as soon as it is complete,
            // while the runner still tears its sandbox down.
            let complete = match nix::unistd::read(&r.pipe, &mut chunk) {
                Ok(0) | Err(_) => true,
                Ok(n) => {
                    r.buf.extend_from_slice(&chunk[..n]);
                    r.buf.contains(&b'\n')
                }
            };
            if complete {
                let r = running.remove(id).expect("listed");
                // The runner still removes the action's cgroup and scratch:
                // it is reaped later, without waiting here.
                state.finishing.push(r.pid);
                respond_raw(&mut output, *id, &r.buf)?;
                if open {
                    state.refill(&r.spec, r.prepared);
                }
            }
        }
        if stdin_ready {
            // Read every complete line already buffered: poll only sees
            // what is still in the pipe, not what BufRead took from it.
            loop {
                let mut line = String::new();
                if lines.read_line(&mut line)? == 0 {
                    open = false;
                    break;
                }
                handle_line(&line, &mut running, &mut state, &mut output)?;
                if !lines.buffer().contains(&b'\n') {
                    break;
                }
            }
        }
    }
    // Nothing more will come: every pooled sandbox is torn down.
    for e in std::mem::take(&mut state.pool) {
        state.discard(e);
    }
    for pid in state.finishing {
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    Ok(())
}

fn handle_line(
    line: &str,
    running: &mut HashMap<u64, Running>,
    state: &mut State,
    output: &mut impl Write,
) -> std::io::Result<()> {
    if line.trim().is_empty() {
        return Ok(());
    }
    let req = match serde_json::from_str::<Request>(line) {
        Ok(req) => req,
        Err(e) => {
            return respond(
                output,
                0,
                &Status::setup_failed(format!("bad request line: {e}")),
            );
        }
    };
    if req.cancel {
        if let Some(r) = running.get(&req.id) {
            let _ = nix::sys::signal::kill(r.pid, nix::sys::signal::Signal::SIGTERM);
        }
        return Ok(());
    }
    if running.contains_key(&req.id) {
        let msg = format!("id {} is already running", req.id);
        return respond(output, req.id, &Status::setup_failed(msg));
    }
    let Some(raw) = req.spec else {
        let msg = "request has neither spec nor cancel".to_owned();
        return respond(output, req.id, &Status::setup_failed(msg));
    };
    let prepared = &mut state.prepared;
    let spec = Spec::from_json(raw.get().as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|spec| {
            // Each profile's policy is compiled once, here; runners inherit
            // it. Profiles are few and compared whole (cheaper than
            // digesting).
            let i = match prepared.iter().position(|(p, _)| *p == spec.profile) {
                Some(i) => i,
                None => {
                    prepared.push((spec.profile.clone(), Prepared::new(&spec.profile)?));
                    prepared.len() - 1
                }
            };
            Ok((spec, i))
        });
    let (spec, i) = match spec {
        Ok(s) => s,
        Err(e) => return respond(output, req.id, &Status::setup_failed(e)),
    };
    if !state.swept.contains(&spec.cgroup_parent) {
        state.swept.push(spec.cgroup_parent.clone());
        sweep(spec.cgroup_parent.as_deref());
    }
    let key = PoolKey::of(&spec);
    let pooled = match state.pool.iter().position(|e| e.key == key) {
        Some(pos) => {
            let entry = state.pool.remove(pos);
            match hand_over(&entry, raw.get().as_bytes()) {
                Ok(()) => Some((entry.pid, entry.status_r)),
                Err(e) => {
                    eprintln!(
                        "hermetic-sandbox supervisor: warning: a pooled sandbox refused its action ({e}); running it cold"
                    );
                    state.discard(entry);
                    None
                }
            }
        }
        None => None,
    };
    let started = match pooled {
        Some((pid, pipe)) => Ok((pid, pipe)),
        None => start(&spec, &state.prepared[i].1),
    };
    match started {
        Ok((pid, pipe)) => {
            running.insert(
                req.id,
                Running {
                    pid,
                    pipe,
                    buf: Vec::new(),
                    spec: Box::new(spec),
                    prepared: i,
                },
            );
            Ok(())
        }
        Err(e) => respond(output, req.id, &Status::setup_failed(e)),
    }
}

/// Removes the action cgroups under `parent` that helpers killed before
/// their clean-up left behind (once per parent and supervisor).
fn sweep(parent: Option<&std::path::Path>) {
    if let Ok(removed) = crate::cgroup::remove_stale(parent)
        && !removed.is_empty()
    {
        eprintln!(
            "hermetic-sandbox supervisor: removed {} cgroups left behind by killed helpers",
            removed.len()
        );
    }
}

/// Removes the (empty) pool mount points of supervisors that are gone.
fn remove_stale_pool_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("hermetic-pool-")) else {
            continue;
        };
        let owner = rest
            .split_once('-')
            .and_then(|(p, _)| p.parse::<u32>().ok());
        if let Some(pid) = owner
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            // Only an empty directory goes: a mount point, left behind.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Writes a spec to a pooled runner without blocking (its pipe is large
/// enough for any spec it accepts) and closes the pipe.
fn hand_over(entry: &PoolEntry, spec: &[u8]) -> Result<(), String> {
    let mut sent = 0;
    while sent < spec.len() {
        match nix::unistd::write(&entry.spec_w, &spec[sent..]) {
            Ok(n) => sent += n,
            Err(nix::Error::EINTR) => {}
            Err(nix::Error::EAGAIN) => return Err("the spec is larger than its pipe".into()),
            Err(e) => return Err(format!("write failed: {e}")),
        }
    }
    Ok(())
}

fn respond(out: &mut impl Write, id: u64, status: &Status) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Response { id, status }).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Answers request `id` with the status line a runner wrote (its JSON is
/// passed through as it came, once known to be one whole JSON value); a
/// runner that died before writing a whole one is reported as such.
fn respond_raw(out: &mut impl Write, id: u64, buf: &[u8]) -> std::io::Result<()> {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<&serde_json::value::RawValue>(line) {
        Ok(raw) => {
            let mut line = format!("{{\"id\":{id},\"status\":").into_bytes();
            line.extend_from_slice(raw.get().as_bytes());
            line.extend_from_slice(b"}\n");
            out.write_all(&line)?;
            out.flush()
        }
        Err(e) => respond(
            out,
            id,
            &Status::setup_failed(format!("the action's runner died: {e}")),
        ),
    }
}

/// In a runner: writes the status as one line and closes the pipe.
fn send_status(w: OwnedFd, status: &Status) {
    let mut bytes = serde_json::to_vec(status).unwrap_or_default();
    bytes.push(b'\n');
    let _ = std::fs::File::from(w).write_all(&bytes);
}

/// In a new runner: SIGTERM (which cancels, tearing the sandbox down) when
/// the supervisor dies, also if it died before this call; and the
/// supervisor's protocol stream replaced by /dev/null, so that nothing the
/// runner or a spec asking for inherited stdio writes can corrupt it, and
/// the daemon sees end-of-file as soon as the supervisor itself is gone.
fn detach_runner(supervisor: nix::unistd::Pid) {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    if nix::unistd::getppid() != supervisor {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd as _;
        for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
            // SAFETY: dup2 onto the standard descriptors of this
            // single-threaded process; `null` stays open until after.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// In a new runner: closes every fd above 2 but `keep`, so that a runner
/// holds no other runner's pipes (a pooled runner waits for the end of its
/// spec pipe, which a copy of the write end elsewhere would hold off).
fn close_inherited(keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > from {
            // SAFETY: closes fds of this single-threaded process that
            // nothing in it uses any more (the supervisor's, inherited).
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32) };
        }
        from = from.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
}

/// Forks a runner for one spec, cold; its status comes back through a pipe.
fn start(spec: &Spec, prepared: &Prepared) -> Result<(Pid, OwnedFd), String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe failed: {e}"))?;
    let supervisor = nix::unistd::getpid();
    // SAFETY: the supervisor is single-threaded; the child runs the spec and
    // ends in _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork failed: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            close_inherited(&[w.as_raw_fd()]);
            detach_runner(supervisor);
            // Report first (the status line ends the message), clean up after.
            let mut w = Some(w);
            crate::run::run_prepared(spec, Some(prepared), |status| {
                if let Some(w) = w.take() {
                    send_status(w, status);
                }
            });
            // SAFETY: _exit skips the parent's buffered stdout on purpose.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            Ok((child, r))
        }
    }
}

/// Forks a runner that makes a sandbox for `spec`'s key on `mount_point`
/// and waits for the spec it will run.
fn start_warm(spec: &Spec, prepared: &Prepared, mount_point: PathBuf) -> Result<PoolEntry, String> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe failed: {e}"))
    };
    let (status_r, status_w) = pipe()?;
    let (spec_r, spec_w) = pipe()?;
    // Room for a large spec, so that handing it over never blocks the
    // supervisor (best effort: a spec that does not fit runs cold).
    let _ = nix::fcntl::fcntl(&spec_w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    let _ = nix::fcntl::fcntl(
        &spec_w,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let supervisor = nix::unistd::getpid();
    // SAFETY: the supervisor is single-threaded; the child ends in _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork failed: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(status_r);
            drop(spec_w);
            close_inherited(&[status_w.as_raw_fd(), spec_r.as_raw_fd()]);
            detach_runner(supervisor);
            let warm = crate::run::warm_up(spec, prepared, &mount_point);
            // Report first (the status line ends the message), clean up after.
            let report = move |status: &Status| send_status(status_w, status);
            match wait_for_spec(&spec_r, supervisor) {
                Some((bytes, start)) => match Spec::from_json(&bytes) {
                    Ok(spec) => crate::run::run_warm(&spec, prepared, warm, start, report),
                    Err(e) => {
                        drop(warm);
                        report(&Status::setup_failed(e.to_string()));
                    }
                },
                // Cancelled before the spec was read (SIGTERM from the
                // supervisor right behind it): say so, then tear down.
                None if crate::run::cancelled() => {
                    let mut status = Status::setup_failed("cancelled before it started".into());
                    status.outcome = crate::status::Outcome::Cancelled;
                    report(&status);
                    drop(warm);
                }
                // Discarded (or the supervisor is gone): tear down.
                None => drop(warm),
            }
            // SAFETY: _exit skips the parent's buffered stdout on purpose.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok(PoolEntry {
            key: PoolKey::of(spec),
            pid: child,
            spec_w,
            status_r,
        }),
    }
}

/// In a pooled runner: the spec's bytes, up to EOF, and when the first of
/// them came; `None` when the pipe closes empty (discarded), on SIGTERM or
/// when the supervisor is gone.
fn wait_for_spec(r: &OwnedFd, supervisor: Pid) -> Option<(Vec<u8>, std::time::Instant)> {
    let mut bytes = Vec::new();
    let mut start = None;
    let mut chunk = [0u8; 65536];
    loop {
        if crate::run::cancelled() || nix::unistd::getppid() != supervisor {
            return None;
        }
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        // A bounded wait, so that a SIGTERM landing between the check above
        // and the poll is seen within a second.
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return None,
        }
        match nix::unistd::read(r, &mut chunk) {
            Ok(0) if bytes.is_empty() => return None,
            Ok(0) => return Some((bytes, start.unwrap_or_else(std::time::Instant::now))),
            Ok(n) => {
                start.get_or_insert_with(std::time::Instant::now);
                bytes.extend_from_slice(&chunk[..n]);
            }
            Err(nix::Error::EINTR) => {}
            Err(_) => return None,
        }
    }
}
