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
            Compression::Lz4 => {
                // What Longhorn's Go encoder writes: 4 MiB independent blocks, content checksum.
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max4MB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent)
                    .content_checksum(true);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
                    info,
                    Vec::with_capacity(data.len() / 2),
                );
                enc.write_all(data)?;
                enc.finish().map_err(std::io::Error::other)
            }
        }
    }

    /// Decompresses one stored block. `limit` bounds the output so a hostile object cannot
    /// exhaust memory.
    pub fn decompress(&self, data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(limit.min(64 << 20) as usize);
        match self {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .take(limit + 1)
                    .read_to_end(&mut out)?;
            }
            Compression::Lz4 => {
                lz4_flex::frame::FrameDecoder::new(data)
                    .take(limit + 1)
                    .read_to_end(&mut out)?;
            }
        }
        if out.len() as u64 > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("decompresses to more than {limit} bytes"),
            ));
        }
        Ok(out)
    }
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
