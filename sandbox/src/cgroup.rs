//! cgroup v2 / v1 (being written).
