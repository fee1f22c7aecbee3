//! The two seams between the backup store and whatever holds volume data: a [`BlockSource`]
//! that a backup reads from and a [`BlockSink`] that a restore writes into. A plain file or
//! block device implements both here; the engine implements them over snapshots and layers.

use std::io;

/// A byte range `[offset, offset + len)` of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// What a backup reads: the volume's size, the extents worth reading, and the bytes.
pub trait BlockSource: Send + Sync {
    /// Size of the volume in bytes.
    fn size(&self) -> u64;

    /// The extents to back up, each aligned to `block_size` (offset and length are multiples
    /// of it, except that the last one may end at `size()`), sorted and non-overlapping.
    /// A full source returns every block that may hold data (never the holes); a diff source
    /// returns only the blocks that changed since its base, and the store carries the other
    /// blocks over from the previous backup's block map.
    fn extents(&self, block_size: u64) -> io::Result<Vec<Extent>>;

    /// Fill `buf` with the bytes at `offset`. Reads past `size()` are an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// True when [`BlockSource::extents`] lists every block of the volume that may hold data
    /// (a plain file or a full snapshot), false for a diff against a base. With an incremental
    /// backup, blocks of the previous map outside the extents are dropped for a covering source
    /// (they are holes now) and carried over for a diff source.
    fn covers_whole_volume(&self) -> bool {
        false
    }

    /// For a diff source: the snapshot it is a diff against. A backup refuses to lay the diff
    /// over a last backup taken from another snapshot (use [`crate::Store::incremental_base`]
    /// to pick the base). `None`: not checked.
    fn diff_base(&self) -> Option<String> {
        None
    }
}

/// What a restore writes into.
pub trait BlockSink: Send + Sync {
    /// Write `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Make `[offset, offset + len)` read back as zeros (punch a hole or write zeros).
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Make everything written so far durable.
    fn flush(&self) -> io::Result<()>;

    /// True when every byte not yet written reads as zero (for example a freshly created sparse
    /// file), so a full restore need not zero the ranges its backup does not cover.
    fn is_zeroed(&self) -> bool {
        false
    }
}
