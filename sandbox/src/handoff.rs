//! The action, from the helper to a waiting init: the one message that turns
//! a prepared sandbox into this action's sandbox.
//!
//! A `SOCK_STREAM` Unix socket pair, one message per sandbox: an 8-byte
//! little-endian length, then a JSON object (input tree, argv, environment,
//! working directory, rlimits, which streams follow); the first byte
//! carries the step's stdout and stderr as `SCM_RIGHTS`. (A length, not end
//! of file: init inherits the helper's end through the fork.) The cold path and the pooled path send it
//! alike; only the moment differs.

use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use crate::child::ActionPlan;
use crate::confine::Rlimits;

/// The largest message accepted (argv and environment included).
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    lower: PathBuf,
    argv: Vec<String>,
    envp: Vec<String>,
    path: String,
    cwd: String,
    fsize: Option<u64>,
    nofile: u64,
    nproc: Option<u64>,
    address_space: Option<u64>,
    stdout: bool,
    stderr: bool,
}

/// A connected pair: (the helper's end, init's end), close-on-exec.
pub fn pair() -> Result<(OwnedFd, OwnedFd), String> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair failed: {e}"))
}

/// Sends `action` and closes the helper's end.
/// Strings with NUL bytes are refused by the caller before this (they came
/// in as [`CString`]s).
pub fn send(sock: OwnedFd, action: &ActionPlan) -> Result<(), String> {
    let text = |c: &CString| c.to_string_lossy().into_owned();
    let wire = Wire {
        lower: action.lower.clone(),
        argv: action.argv.iter().map(text).collect(),
        envp: action.envp.iter().map(text).collect(),
        path: action.path.clone(),
        cwd: text(&action.cwd),
        fsize: action.rlimits.fsize,
        nofile: action.rlimits.nofile,
        nproc: action.rlimits.nproc,
        address_space: action.rlimits.address_space,
        stdout: action.stdout.is_some(),
        stderr: action.stderr.is_some(),
    };
    let json = serde_json::to_vec(&wire).map_err(|e| format!("cannot encode the action: {e}"))?;
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    let fds: Vec<RawFd> = [&action.stdout, &action.stderr]
        .into_iter()
        .flatten()
        .map(|f| f.as_raw_fd())
        .collect();
    let cmsgs = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    let mut sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("cannot send the action to init: {e}")),
        }
    };
    while sent < bytes.len() {
        match nix::sys::socket::send(sock.as_raw_fd(), &bytes[sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(format!("cannot send the action to init: {e}")),
        }
    }
    Ok(())
}

/// Receives the action (in init): reads the whole message, takes the
/// streams' fds from its first part, checks every string.
pub fn receive(sock: BorrowedFd<'_>) -> Result<ActionPlan, String> {
    let mut bytes = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("recvmsg failed: {e}")),
        };
        let n = msg.bytes;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just installed these fds in this
                    // process for us; nothing else owns them.
                    fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err("the action carried more fds than expected".into());
        }
        if n == 0 {
            return Err(if bytes.is_empty() {
                "the helper closed the sandbox without an action".into()
            } else {
                "the action was cut short".into()
            });
        }
        bytes.extend_from_slice(&buf[..n]);
        if bytes.len() >= 8 {
            let mut len = [0u8; 8];
            len.copy_from_slice(&bytes[..8]);
            let len = u64::from_le_bytes(len);
            if len > MAX_MESSAGE as u64 {
                return Err(format!("the action is larger than {MAX_MESSAGE} bytes"));
            }
            if bytes.len() as u64 >= 8 + len {
                bytes.truncate(8 + len as usize);
                break;
            }
        }
    }
    let wire: Wire =
        serde_json::from_slice(&bytes[8..]).map_err(|e| format!("bad action message: {e}"))?;
    let want = usize::from(wire.stdout) + usize::from(wire.stderr);
    if fds.len() != want {
        return Err(format!(
            "the action announced {want} stream fds and carried {}",
            fds.len()
        ));
    }
    let mut fds = fds.into_iter();
    let cstring =
        |s: String| CString::new(s).map_err(|_| "a string contains a NUL byte".to_owned());
    let strings = |v: Vec<String>| v.into_iter().map(cstring).collect::<Result<Vec<_>, _>>();
    Ok(ActionPlan {
        lower: wire.lower,
        argv: strings(wire.argv)?,
        envp: strings(wire.envp)?,
        path: wire.path,
        cwd: cstring(wire.cwd)?,
        rlimits: Rlimits {
            fsize: wire.fsize,
            nofile: wire.nofile,
            nproc: wire.nproc,
            address_space: wire.address_space,
        },
        stdout: if wire.stdout { fds.next() } else { None },
        stderr: if wire.stderr { fds.next() } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn an_action_crosses_with_its_streams() {
        let (ours, theirs) = pair().unwrap();
        let mut out = tempfile_in_tmp("handoff-out");
        let big = "x".repeat(300_000); // larger than one socket buffer
        let action = ActionPlan {
            lower: "/in".into(),
            argv: vec![
                CString::new("/bin/sh").unwrap(),
                CString::new(big.clone()).unwrap(),
            ],
            envp: vec![CString::new("A=1").unwrap()],
            path: "/bin".into(),
            cwd: CString::new("/work/sub").unwrap(),
            rlimits: Rlimits {
                fsize: Some(7),
                nofile: 64,
                nproc: None,
                address_space: Some(1 << 30),
            },
            stdout: Some(out.try_clone().unwrap().into()),
            stderr: None,
        };
        let sender = std::thread::spawn(move || send(ours, &action));
        let got = receive(theirs.as_fd()).unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(got.lower, PathBuf::from("/in"));
        assert_eq!(got.argv[1].to_bytes(), big.as_bytes());
        assert_eq!(got.envp, vec![CString::new("A=1").unwrap()]);
        assert_eq!(got.cwd.to_bytes(), b"/work/sub");
        assert_eq!(got.rlimits.fsize, Some(7));
        assert_eq!(got.rlimits.address_space, Some(1 << 30));
        assert!(got.stderr.is_none());
        // The received fd is the same open file.
        let mut f = std::fs::File::from(got.stdout.unwrap());
        f.write_all(b"through the socket").unwrap();
        let mut s = String::new();
        out.rewind().unwrap();
        out.read_to_string(&mut s).unwrap();
        assert_eq!(s, "through the socket");
    }

    #[test]
    fn a_closed_socket_is_no_action() {
        let (ours, theirs) = pair().unwrap();
        drop(ours);
        let e = receive(theirs.as_fd()).unwrap_err();
        assert!(e.contains("without an action"), "{e}");
    }

    fn tempfile_in_tmp(name: &str) -> std::fs::File {
        let p = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    use std::os::fd::AsFd;
}
