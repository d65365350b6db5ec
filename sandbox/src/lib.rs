//! `hermetic-sandbox`: run one build step sealed.
//!
//! The helper is deliberately single-threaded and free of any async runtime:
//! it forks, and after a fork only async-signal-safe work is sound in a
//! multi-threaded process. The daemon starts it as a separate process and
//! talks to it through a versioned JSON [`spec::Spec`] and
//! [`status::Status`], either one exec per action (`--spec`) or through a
//! long-lived [`supervisor`] that forks per action.
//!
//! # Layout
//! - [`spec`], [`status`], [`profile`]: the data that crosses the boundary.
//! - [`run`]: one execution from the helper's side (prepare, start, wait
//!   with a deadline, collect, clean up, report).
//! - [`child`]: what runs inside: the namespace creator, init, the step.
//! - [`handoff`]: the action sent to a waiting init (cold or pooled).
//! - [`mounts`]: the root filesystem as an ordered plan of mount operations.
//! - [`confine`]: rlimits, capabilities, no_new_privs, Landlock.
//! - [`seccomp`]: the profile's syscall policy compiled to BPF.
//! - [`cgroup`]: cgroup v2 / v1 detection, limits, usage and kill.
//! - [`net`]: the loopback-only network namespace.
//! - [`outputs`]: output collection that never follows a symlink.
//! - [`features`]: what the host supports.
//! - [`supervisor`]: the daemon's long-lived mode.
//! - [`anomaly`]: anomaly indicators (network attempts, foreign
//!   executables, writes outside the outputs).

pub mod anomaly;
pub mod cgroup;
pub mod child;
pub mod confine;
pub mod features;
pub mod handoff;
pub mod mounts;
pub mod net;
pub mod outputs;
pub mod profile;
pub mod rootmode;
pub mod run;
pub mod seccomp;
pub mod spec;
pub mod status;
pub mod supervisor;
