//! [`BlockSource`] and [`BlockSink`] for a plain (sparse) file or a block device. Extents come
//! from `SEEK_DATA`/`SEEK_HOLE`, so holes are never read; the sink keeps holes as holes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use rustix::fs::{FallocateFlags, SeekFrom};

use crate::direct::DirectFile;
use crate::source::{BlockSink, BlockSource, Extent};

/// Size of a regular file or a block device (seeking to the end works for both).
fn device_or_file_size(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        Ok(rustix::fs::seek(file, SeekFrom::End(0))?)
    } else {
        Ok(meta.len())
    }
}

/// The allocated byte ranges of `file` below `size`, from `SEEK_DATA`/`SEEK_HOLE`. Where the
/// file system cannot tell (no support), the whole range counts as data.
pub fn data_ranges(file: &File, size: u64) -> io::Result<Vec<Extent>> {
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) if pos == 0 => {
                return Ok(vec![Extent {
                    offset: 0,
                    len: size,
                }]);
            }
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        ranges.push(Extent {
            offset: start,
            len: end - start,
        });
        pos = end;
    }
    Ok(ranges)
}

/// Widens byte ranges to whole blocks (the last one may end at `size`) and merges neighbours.
pub fn align_to_blocks(ranges: &[Extent], block_size: u64, size: u64) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    for r in ranges {
        let start = r.offset / block_size * block_size;
        let end = r
            .end()
            .div_ceil(block_size)
            .saturating_mul(block_size)
            .min(size);
        if end <= start {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end() >= start => {
                last.len = last.len.max(end - last.offset);
            }
            _ => out.push(Extent {
                offset: start,
                len: end - start,
            }),
        }
    }
    out
}

/// A plain file or block device to back up.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> io::Result<FileSource> {
        let file = File::open(path)?;
        let size = device_or_file_size(&file)?;
        Ok(FileSource { file, size })
    }
}

impl BlockSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn extents(&self, block_size: u64) -> io::Result<Vec<Extent>> {
        if block_size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "block size 0"));
        }
        let ranges = data_ranges(&self.file, self.size)?;
        Ok(align_to_blocks(&ranges, block_size, self.size))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} passes the end ({})",
                    buf.len(),
                    self.size
                ),
            ));
        }
        self.file.read_exact_at(buf, offset)
    }

    fn covers_whole_volume(&self) -> bool {
        true
    }
}

/// A sparse file or block device to restore into.
#[derive(Debug)]
pub struct FileSink {
    /// Bulk data goes direct (see [`crate::direct`]).
    file: DirectFile,
    zeroed: bool,
    regular: bool,
}

impl FileSink {
    /// Creates (or empties) a regular file of `size` bytes, all holes; or opens a block device
    /// (which is not emptied: a full restore then zeroes what the backup does not cover).
    pub fn create(path: &Path, size: u64) -> io::Result<FileSink> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let regular = file.metadata()?.file_type().is_file();
        if regular {
            file.set_len(0)?;
            file.set_len(size)?;
        }
        Ok(FileSink {
            file: DirectFile::new(file),
            zeroed: regular,
            regular,
        })
    }

    /// Opens an existing file or device as it is (for an incremental restore on top of an
    /// earlier one). A regular file is grown to `size` if it is smaller.
    pub fn open(path: &Path, size: u64) -> io::Result<FileSink> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let regular = file.metadata()?.file_type().is_file();
        if regular && file.metadata()?.len() < size {
            file.set_len(size)?;
        }
        Ok(FileSink {
            file: DirectFile::new(file),
            zeroed: false,
            regular,
        })
    }

    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        let chunk = vec![0u8; len.min(1 << 20) as usize];
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (end - pos).min(chunk.len() as u64) as usize;
            self.file.write_all_at(&chunk[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }
}

impl BlockSink for FileSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        // An all-zero block becomes a hole in a regular file: same bytes, no space used.
        if self.regular && crate::compress::is_all_zero(data) {
            return self.zero_range(offset, data.len() as u64);
        }
        self.file.write_all_at(data, offset)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(self.file.file(), flags, offset, len) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL) => {
                self.write_zeros(offset, len)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn flush(&self) -> io::Result<()> {
        self.file.file().sync_all()
    }

    fn is_zeroed(&self) -> bool {
        self.zeroed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn alignment_widens_and_merges() {
        let r = [
            Extent { offset: 1, len: 1 },
            Extent {
                offset: 3 * MB,
                len: MB,
            },
            Extent {
                offset: 9 * MB,
                len: 10,
            },
        ];
        let got = align_to_blocks(&r, 2 * MB, 9 * MB + 100);
        assert_eq!(
            got,
            vec![
                Extent {
                    offset: 0,
                    len: 4 * MB
                },
                Extent {
                    offset: 8 * MB,
                    len: MB + 100
                },
            ]
        );
    }

    #[test]
    fn holes_are_not_listed_and_sink_keeps_holes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("img");
        let f = File::create(&path)?;
        f.set_len(16 * MB)?;
        f.write_all_at(&[1u8; 4096], 5 * MB)?;
        f.write_all_at(&[2u8; 4096], 12 * MB)?;
        drop(f);
        let src = FileSource::open(&path)?;
        assert_eq!(src.size(), 16 * MB);
        let ext = src.extents(2 * MB)?;
        assert_eq!(
            ext,
            vec![
                Extent {
                    offset: 4 * MB,
                    len: 2 * MB
                },
                Extent {
                    offset: 12 * MB,
                    len: 2 * MB
                },
            ]
        );
        let out = dir.path().join("out");
        let sink = FileSink::create(&out, 16 * MB)?;
        assert!(sink.is_zeroed());
        sink.write_at(0, &[0u8; 8192])?;
        sink.write_at(MB, &[3u8; 4096])?;
        sink.flush()?;
        let check = File::open(&out)?;
        assert_eq!(
            data_ranges(&check, 16 * MB)?
                .iter()
                .map(|e| e.offset / 4096 * 4096)
                .collect::<Vec<_>>(),
            vec![MB],
            "zero write stayed a hole"
        );
        sink.zero_range(MB, 4096)?;
        assert!(data_ranges(&check, 16 * MB)?.is_empty());
        let mut buf = [9u8; 4096];
        check.read_exact_at(&mut buf, MB)?;
        assert_eq!(buf, [0u8; 4096]);
        Ok(())
    }
}
