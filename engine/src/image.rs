//! Backing images: import raw or qcow2 files as a bottom layer, export volumes and snapshots as raw or qcow2, SHA-512 checksums.
