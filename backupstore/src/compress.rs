//! Block compression (`none`, `gzip`, `lz4` frame with content checksum) and the check that a
//! decompressed block hashes to its name (pure: no I/O).

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::names::h;

/// A volume's compression method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    None,
    /// Longhorn's default, also what a missing method means.
    #[default]
    Gzip,
    Lz4,
}

impl Compression {
    /// Parses a method as stored; an empty string means gzip (Longhorn's default).
    pub fn parse(method: &str) -> Result<Compression> {
        match method {
            "none" => Ok(Compression::None),
            "gzip" | "" => Ok(Compression::Gzip),
            "lz4" => Ok(Compression::Lz4),
            other => Err(Error::UnsupportedCompression(other.to_string())),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
        }
    }

    /// Compresses one block for upload.
    pub fn compress(&self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::default(),
                );
                enc.write_all(data)?;
                enc.finish()
            }
            Compression::Lz4 => compress_lz4(data),
        }
    }

    /// Decompresses one stored block. `limit` bounds the output so a hostile object cannot
    /// exhaust memory.
    pub fn decompress(&self, data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(limit.min(64 << 20) as usize);
        self.decompress_into(data, limit, &mut out)?;
        Ok(out)
    }

    /// [`Compression::decompress`] into `out` (cleared first), so callers can reuse buffers.
    fn decompress_into(&self, data: &[u8], limit: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.clear();
        match self {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .take(limit + 1)
                    .read_to_end(out)?;
            }
            Compression::Lz4 => decompress_lz4(data, limit, out)?,
        }
        if out.len() as u64 > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("decompresses to more than {limit} bytes"),
            ));
        }
        Ok(())
    }
}

thread_local! {
    /// One lz4 frame encoder per thread, reused: its 4 MiB working buffers, allocated afresh
    /// per block, cost more (page faults, zeroing) than compressing incompressible data.
    static LZ4_ENCODER: std::cell::RefCell<Option<lz4_flex::frame::FrameEncoder<Vec<u8>>>> =
        const { std::cell::RefCell::new(None) };
}

/// What Longhorn's Go encoder writes: 4 MiB independent blocks, content checksum. A reused
/// encoder starts every frame afresh (header, cleared match table), so its output is the same
/// as a new encoder's.
fn compress_lz4(data: &[u8]) -> std::io::Result<Vec<u8>> {
    LZ4_ENCODER.with_borrow_mut(|slot| {
        let enc = slot.get_or_insert_with(|| {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max4MB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .content_checksum(true);
            lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new())
        });
        // Room for incompressible data (the frame's worst case): the output never reallocates.
        *enc.get_mut() = Vec::with_capacity(data.len() + data.len() / 255 + 64);
        let written = enc
            .write_all(data)
            .and_then(|()| enc.try_finish().map_err(std::io::Error::other));
        let out = std::mem::take(enc.get_mut());
        match written {
            Ok(()) => Ok(out),
            Err(e) => {
                // Never reuse an encoder left mid-frame.
                *slot = None;
                Err(e)
            }
        }
    })
}

type Lz4Decoder = lz4_flex::frame::FrameDecoder<std::io::Cursor<Vec<u8>>>;

thread_local! {
    /// One lz4 frame decoder per thread, reused for the same reason as [`LZ4_ENCODER`]; it reads
    /// from its own copy of the stored block (a reused buffer).
    static LZ4_DECODER: std::cell::RefCell<Option<Lz4Decoder>> =
        const { std::cell::RefCell::new(None) };
    /// Decompressed block, reused by [`with_open_block`].
    static BLOCK_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn decompress_lz4(data: &[u8], limit: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    LZ4_DECODER.with_borrow_mut(|slot| {
        let dec = slot.get_or_insert_with(|| {
            lz4_flex::frame::FrameDecoder::new(std::io::Cursor::new(Vec::new()))
        });
        let mut input = std::mem::take(dec.get_mut().get_mut());
        input.clear();
        input.extend_from_slice(data);
        *dec.get_mut() = std::io::Cursor::new(input);
        let read = dec.by_ref().take(limit + 1).read_to_end(out);
        let at_end = dec.get_ref().position() == dec.get_ref().get_ref().len() as u64;
        if read.is_err() || !at_end {
            // A decoder stopped mid-frame is never reused.
            *slot = None;
        }
        read.map(|_| ())
    })
}

/// [`open_block`] handing the checked content to `use_block` from a reused per-thread buffer
/// (no allocation per block).
pub fn with_open_block<T>(
    compression: Compression,
    stored: &[u8],
    checksum: &str,
    block_size: u64,
    target: &str,
    object: &str,
    use_block: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    BLOCK_BUFFER.with_borrow_mut(|buf| {
        let corrupt = |reason: String| Error::CorruptBlock {
            target: target.to_string(),
            object: object.to_string(),
            reason,
        };
        compression
            .decompress_into(stored, block_size, buf)
            .map_err(|e| {
                corrupt(format!(
                    "cannot decompress as {}: {e}",
                    compression.as_str()
                ))
            })?;
        let actual = h(buf);
        if actual != checksum {
            return Err(corrupt(format!("content hashes to {actual}")));
        }
        Ok(use_block(buf))
    })
}

/// Whether every byte of `data` is zero (vectorisable: ORs 4 KiB chunks instead of stopping at
/// the first non-zero byte).
pub fn is_all_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Decompresses a stored block and checks that it hashes to `checksum`. Every failure is
/// corruption (reported with `object` and `target`), never a transient error.
pub fn open_block(
    compression: Compression,
    stored: &[u8],
    checksum: &str,
    block_size: u64,
    target: &str,
    object: &str,
) -> Result<Vec<u8>> {
    let corrupt = |reason: String| Error::CorruptBlock {
        target: target.to_string(),
        object: object.to_string(),
        reason,
    };
    let data = compression.decompress(stored, block_size).map_err(|e| {
        corrupt(format!(
            "cannot decompress as {}: {e}",
            compression.as_str()
        ))
    })?;
    let actual = h(&data);
    if actual != checksum {
        return Err(corrupt(format!("content hashes to {actual}")));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compression::None, Compression::Gzip, Compression::Lz4] {
            let packed = c.compress(&data).expect("compress");
            let back = open_block(c, &packed, &h(&data), 1 << 20, "t", "o").expect("open");
            assert_eq!(back, data, "{c:?}");
        }
    }

    #[test]
    fn a_reused_lz4_encoder_writes_what_a_fresh_one_does() {
        let blocks: Vec<Vec<u8>> = (0..3u32)
            .map(|seed| {
                (0..(2u32 << 20))
                    .map(|i| (i.wrapping_mul(2_654_435_761 + seed) >> (7 + seed)) as u8)
                    .collect()
            })
            .collect();
        for data in blocks.iter().chain(blocks.iter()) {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max4MB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .content_checksum(true);
            let mut fresh = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            fresh.write_all(data).expect("write");
            let expected = fresh.finish().expect("finish");
            assert_eq!(Compression::Lz4.compress(data).expect("compress"), expected);
        }
    }

    #[test]
    fn reused_buffers_open_blocks_like_fresh_ones() {
        let a: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
        let b: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(40_503) >> 9) as u8)
            .collect();
        for c in [Compression::None, Compression::Gzip, Compression::Lz4] {
            let (pa, pb) = (c.compress(&a).expect("a"), c.compress(&b).expect("b"));
            // A failure in between must not leave state behind for the next block.
            let cut = &pb[..pb.len() / 2];
            for (packed, data) in [(&pa, &a), (&pb, &b), (&pa, &a)] {
                let got = with_open_block(c, packed, &h(data), 2 << 20, "t", "o", <[u8]>::to_vec)
                    .expect("open");
                assert_eq!(&got, data, "{c:?}");
                assert!(with_open_block(c, cut, &h(&b), 2 << 20, "t", "o", |_| ()).is_err());
            }
            assert!(matches!(
                with_open_block(c, &pa, &h(&b), 2 << 20, "t", "o", |_| ()),
                Err(Error::CorruptBlock { .. })
            ));
        }
    }

    #[test]
    fn lz4_frames_carry_a_content_checksum() {
        let packed = Compression::Lz4
            .compress(b"hello hello hello")
            .expect("compress");
        assert_eq!(&packed[..4], &[0x04, 0x22, 0x4d, 0x18]);
        assert_eq!(packed[4] & 0x04, 0x04, "content checksum flag");
    }

    #[test]
    fn corruption_and_oversize_are_detected() {
        let data = vec![7u8; 4096];
        let packed = Compression::Gzip.compress(&data).expect("compress");
        let wrong = h(b"other");
        assert!(matches!(
            open_block(Compression::Gzip, &packed, &wrong, 8192, "t", "o"),
            Err(Error::CorruptBlock { .. })
        ));
        assert!(open_block(Compression::Gzip, &packed, &h(&data), 1024, "t", "o").is_err());
        assert!(open_block(Compression::Lz4, b"garbage", &h(&data), 8192, "t", "o").is_err());
    }

    #[test]
    fn missing_method_means_gzip() {
        assert_eq!(Compression::parse("").expect("parse"), Compression::Gzip);
        assert!(Compression::parse("zstd").is_err());
    }
}

#[cfg(test)]
mod zero_tests {
    use super::is_all_zero;

    #[test]
    fn zero_detection_sees_every_byte() {
        let mut data = vec![0u8; 10_000];
        assert!(is_all_zero(&data));
        assert!(is_all_zero(&[]));
        for pos in [0, 4095, 4096, 9_999] {
            data[pos] = 1;
            assert!(!is_all_zero(&data), "{pos}");
            data[pos] = 0;
        }
    }
}
