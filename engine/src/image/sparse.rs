//! Sparse copying: only data regions are read, and only blocks holding a non-zero byte are
//! written, so holes stay holes (a 64 GiB image with 1 MiB of data costs 1 MiB of disk).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use rustix::fs::{SeekFrom, seek};

/// Granularity of zero detection: the engine's sector size.
const BLOCK: usize = 4096;
/// Bytes read per step.
const CHUNK: usize = 1024 * 1024;

/// Which side of a copy failed.
#[derive(Debug)]
pub(crate) enum CopyFailure {
    Read { offset: u64, source: io::Error },
    Write { source: io::Error },
}

/// The data regions of the first `len` bytes of `file`, from SEEK_DATA/SEEK_HOLE. A filesystem
/// without hole support reports everything as data, which is slower but still exact.
pub(crate) fn data_extents(file: &File, len: u64) -> io::Result<Vec<Range<u64>>> {
    let mut extents = Vec::new();
    let mut offset = 0;
    while offset < len {
        let start = match seek(file, SeekFrom::Data(offset)) {
            Ok(start) => start,
            // ENXIO: no data at or after `offset`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(err) => return Err(err.into()),
        };
        if start >= len {
            break;
        }
        let end = seek(file, SeekFrom::Hole(start))?.min(len);
        extents.push(start..end);
        offset = end;
    }
    Ok(extents)
}

/// Copies the bytes of `ranges` (read through `read`) into `out` at the same offsets, skipping
/// blocks that are all zeros. `out` must already have its final length (a hole reads as zeros).
pub(crate) fn copy_nonzero_blocks(
    mut read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ranges: &[Range<u64>],
    out: &File,
) -> Result<(), CopyFailure> {
    let mut buf = vec![0u8; CHUNK];
    for range in ranges {
        let mut offset = range.start;
        while offset < range.end {
            let len = usize::try_from(range.end - offset).map_or(CHUNK, |left| left.min(CHUNK));
            let chunk = &mut buf[..len];
            read(offset, chunk).map_err(|source| CopyFailure::Read { offset, source })?;
            write_nonzero(out, offset, chunk)?;
            offset += len as u64;
        }
    }
    Ok(())
}

/// Writes the non-zero blocks of `chunk` (which belongs at `offset`), merging neighbours into
/// one write.
fn write_nonzero(out: &File, offset: u64, chunk: &[u8]) -> Result<(), CopyFailure> {
    let write = |range: Range<usize>| {
        let at = offset + range.start as u64;
        out.write_all_at(&chunk[range], at)
            .map_err(|source| CopyFailure::Write { source })
    };
    let mut run_start = None;
    for (index, block) in chunk.chunks(BLOCK).enumerate() {
        let pos = index * BLOCK;
        let is_data = block.iter().any(|&byte| byte != 0);
        match (is_data, run_start) {
            (true, None) => run_start = Some(pos),
            (false, Some(start)) => {
                write(start..pos)?;
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        write(start..chunk.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_and_zero_blocks_are_not_written() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let src = File::create_new(dir.path().join("src"))?;
        let size = 8 * 1024 * 1024u64;
        src.set_len(size)?;
        src.write_all_at(&[7u8; 5000], 4096 * 10 + 3)?;
        // Data that is explicitly zero: allocated but must not be copied as data.
        src.write_all_at(&vec![0u8; 1 << 20], 4 << 20)?;
        src.write_all_at(b"end", size - 3)?;
        src.sync_all()?;
        let extents = data_extents(&src, size)?;
        assert!(!extents.is_empty());

        let dst = File::create_new(dir.path().join("dst"))?;
        dst.set_len(size)?;
        copy_nonzero_blocks(|off, buf| src.read_exact_at(buf, off), &extents, &dst)
            .map_err(|failure| io::Error::other(format!("{failure:?}")))?;
        dst.sync_all()?;

        let mut want = vec![0u8; size as usize];
        let mut got = vec![0u8; size as usize];
        src.read_exact_at(&mut want, 0)?;
        dst.read_exact_at(&mut got, 0)?;
        assert!(want == got, "copy differs from source");
        // Only the two blocks around the 5000 bytes and the last block hold data.
        let copied: u64 = data_extents(&dst, size)?
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        assert!(copied <= 4 * 4096, "copied {copied} bytes of data");
        Ok(())
    }
}
