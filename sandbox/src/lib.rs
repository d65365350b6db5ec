//! `hermetic-sandbox`: run one build step sealed.
//!
//! The helper is deliberately single-threaded and free of any async runtime:
//! it forks, and after a fork only async-signal-safe work is sound in a
//! multi-threaded process. The daemon starts it as a separate process and
//! talks to it through a versioned JSON [`spec::Spec`] and
//! [`status::Status`].
//!
//! # Layout
//! - [`spec`], [`status`], [`profile`]: the data that crosses the boundary.
//! - [`seccomp`]: the profile's syscall policy compiled to BPF.
//! - [`cgroup`]: cgroup v2 / v1 detection, limits, usage and kill.
//! - [`run`]: the ordered set-up, execution and teardown of one step.

pub mod cgroup;
pub mod profile;
pub mod seccomp;
pub mod spec;
pub mod status;
