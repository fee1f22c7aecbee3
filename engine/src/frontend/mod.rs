//! Frontends that serve a volume to workloads: one plain file per volume through FUSE.
