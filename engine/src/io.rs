//! The byte-level interface a volume offers its frontends (FUSE file, later ublk/CSI).

use std::io;

/// Random-access I/O on a volume's current (head) view. Implementations serialise against
/// snapshots themselves, so a frontend never sees a half-switched chain.
pub trait VolumeIo: Send + Sync {
    /// Size of the volume in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` with the bytes at `offset` (zeros where nothing was ever written).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write `data` at `offset`; any alignment is allowed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make `[offset, offset + len)` read as zeros from now on (TRIM / punch hole).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Make every completed write durable (head data and metadata).
    fn flush(&self) -> io::Result<()>;
}
