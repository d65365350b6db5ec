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

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::spec::Spec;
use crate::status::Status;

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
}

/// Serves requests from `input` until it closes and every action is done.
pub fn serve(input: std::fs::File, mut output: impl Write) -> std::io::Result<()> {
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
    let mut finishing: Vec<Pid> = Vec::new();
    let mut prepared = Vec::new();
    while open || !running.is_empty() {
        finishing.retain(|&pid| {
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
            match nix::unistd::read(&r.pipe, &mut chunk) {
                Ok(0) | Err(_) => {
                    let r = running.remove(id).expect("listed");
                    // The runner still removes the action's cgroup and
                    // scratch: it is reaped later, without waiting here.
                    finishing.push(r.pid);
                    let status = serde_json::from_slice::<Status>(&r.buf).unwrap_or_else(|e| {
                        Status::setup_failed(format!("the action's runner died: {e}"))
                    });
                    respond(&mut output, *id, &status)?;
                }
                Ok(n) => r.buf.extend_from_slice(&chunk[..n]),
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
                handle_line(&line, &mut running, &mut prepared, &mut output)?;
                if !lines.buffer().contains(&b'\n') {
                    break;
                }
            }
        }
    }
    for pid in finishing {
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    Ok(())
}

fn handle_line(
    line: &str,
    running: &mut HashMap<u64, Running>,
    prepared: &mut Vec<(crate::profile::Profile, crate::run::Prepared)>,
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
    let spec = req
        .spec
        .ok_or_else(|| "request has neither spec nor cancel".to_owned())
        .and_then(|raw| Spec::from_json(raw.get().as_bytes()).map_err(|e| e.to_string()));
    let spec = spec.and_then(|spec| {
        // Each profile's policy is compiled once, here; runners inherit it.
        // Profiles are few and compared whole (cheaper than digesting).
        let i = match prepared.iter().position(|(p, _)| *p == spec.profile) {
            Some(i) => i,
            None => {
                prepared.push((
                    spec.profile.clone(),
                    crate::run::Prepared::new(&spec.profile)?,
                ));
                prepared.len() - 1
            }
        };
        Ok((spec, i))
    });
    match spec.and_then(|(spec, i)| start(&spec, &prepared[i].1)) {
        Ok(r) => {
            running.insert(req.id, r);
            Ok(())
        }
        Err(e) => respond(output, req.id, &Status::setup_failed(e)),
    }
}

fn respond(out: &mut impl Write, id: u64, status: &Status) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Response { id, status }).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
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

/// Forks a runner for one spec; its status comes back through a pipe.
fn start(spec: &Spec, prepared: &crate::run::Prepared) -> Result<Running, String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe failed: {e}"))?;
    let supervisor = nix::unistd::getpid();
    // SAFETY: the supervisor is single-threaded; the child runs the spec and
    // ends in _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork failed: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            detach_runner(supervisor);
            // Report first (closing the pipe ends the message), clean up after.
            let mut w = Some(w);
            crate::run::run_prepared(spec, Some(prepared), |status| {
                let bytes = serde_json::to_vec(status).unwrap_or_default();
                if let Some(w) = w.take() {
                    let _ = std::fs::File::from(w).write_all(&bytes);
                }
            });
            // SAFETY: _exit skips the parent's buffered stdout on purpose.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            Ok(Running {
                pid: child,
                pipe: r,
                buf: Vec::new(),
            })
        }
    }
}
