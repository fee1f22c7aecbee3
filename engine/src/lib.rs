//! Node-local volumes: a chain of sparse 4 KiB-sector layer files (head, snapshots, optional
//! backing image), instant snapshots, exact change tracking from allocated extents, restores and
//! a FUSE file frontend. No Kubernetes types; every metadata change is crash-safe.

pub mod frontend;
pub mod image;
pub mod io;
