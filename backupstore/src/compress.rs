//! Block compression (`none`, `gzip`, `lz4` frame with content checksum) and the check that a
//! decompressed block hashes to its name (pure: no I/O).

use std::io::{Read, Write};

use crate::direct::AlignedBuf;
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

    /// Decompresses into `out`, whose length is the most the block may hold; returns the
    /// length. More output than `out` holds is an error, so a hostile object cannot exhaust
    /// memory.
    fn decompress_to_slice(&self, data: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Compression::None => {
                let limit = out.len();
                let dest = out.get_mut(..data.len()).ok_or_else(|| more_than(limit))?;
                dest.copy_from_slice(data);
                Ok(data.len())
            }
            Compression::Gzip => read_to_slice(flate2::read::GzDecoder::new(data), out),
            Compression::Lz4 => match decode_lz4_independent(data, out) {
                Some(decoded) => decoded,
                None => read_to_slice(lz4_flex::frame::FrameDecoder::new(data), out),
            },
        }
    }
}

/// Reads `reader` to its end into `out`; more than `out` holds is an error.
fn read_to_slice(mut reader: impl Read, out: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < out.len() {
        match reader.read(&mut out[filled..]) {
            Ok(0) => return Ok(filled),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut probe = [0u8; 1];
    if reader.read(&mut probe)? == 0 {
        Ok(filled)
    } else {
        Err(more_than(out.len()))
    }
}

/// Decodes an lz4 frame of independent blocks — what Longhorn and we write — straight into
/// `out`: stored (incompressible) blocks are one copy, compressed ones decode in place.
/// `lz4_flex`'s frame decoder instead zero-fills and copies every block through buffers of
/// its own, which cost a seventh of a restore's CPU. `None` for frames this path leaves to
/// that decoder (linked blocks, dictionaries, anything after the frame, other versions).
///
/// The header and content xxHash32 checksums are not recomputed: every block's content is
/// checked against its SHA-512 name right after, which catches whatever they would.
fn decode_lz4_independent(data: &[u8], out: &mut [u8]) -> Option<std::io::Result<usize>> {
    const MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];
    let corrupt = |what: &str| {
        Some(Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("lz4 frame: {what}"),
        )))
    };
    if data.get(..4) != Some(&MAGIC[..]) {
        return None;
    }
    let (Some(&flags), Some(&descriptor)) = (data.get(4), data.get(5)) else {
        return corrupt("truncated header");
    };
    let version_01 = flags >> 6 == 0b01;
    let independent = flags & 0x20 != 0;
    let dictionary = flags & 0x01 != 0;
    if !version_01 || !independent || dictionary || flags & 0x02 != 0 {
        return None;
    }
    let block_checksums = flags & 0x10 != 0;
    let content_size = flags & 0x08 != 0;
    let content_checksum = flags & 0x04 != 0;
    let max_block = match (descriptor >> 4) & 0x07 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return None,
    };
    // Magic, FLG, BD, the optional content size, the header checksum.
    let mut pos = 6 + if content_size { 8 } else { 0 } + 1;
    let mut written = 0usize;
    loop {
        let Some(word) = data.get(pos..pos + 4) else {
            return corrupt("truncated before a block size");
        };
        pos += 4;
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        if word == 0 {
            break;
        }
        let stored = word & 0x8000_0000 != 0;
        let len = (word & 0x7fff_ffff) as usize;
        if len > max_block {
            return corrupt("block larger than the frame's maximum");
        }
        let Some(block) = data.get(pos..pos + len) else {
            return corrupt("truncated block");
        };
        pos += len + if block_checksums { 4 } else { 0 };
        let rest = &mut out[written..];
        if stored {
            let Some(dest) = rest.get_mut(..len) else {
                return Some(Err(more_than(out.len())));
            };
            dest.copy_from_slice(block);
            written += len;
        } else {
            match lz4_flex::block::decompress_into(block, rest) {
                Ok(n) if n <= max_block => written += n,
                Ok(_) => return corrupt("block decodes past the frame's maximum"),
                // Decoding into the rest of `out` fails when the block would not fit.
                Err(e) => return corrupt(&e.to_string()),
            }
        }
    }
    pos += if content_checksum { 4 } else { 0 };
    match pos.cmp(&data.len()) {
        std::cmp::Ordering::Equal => Some(Ok(written)),
        std::cmp::Ordering::Greater => corrupt("truncated after the last block"),
        // Another frame or skippable data follows: the general decoder handles it.
        std::cmp::Ordering::Less => None,
    }
}

fn more_than(limit: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("decompresses to more than {limit} bytes"),
    )
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

thread_local! {
    /// Decompressed block, reused by [`with_open_block`]; aligned, so a sink writing with
    /// direct I/O takes it without a copy.
    static BLOCK_BUFFER: std::cell::RefCell<AlignedBuf> =
        std::cell::RefCell::new(AlignedBuf::default());
}

/// Decompresses a stored block into a reused per-thread buffer (no allocation per block),
/// checks that it hashes to `checksum`, and hands the content to `use_block`. Every failure is
/// corruption (reported with `object` and `target`), never a transient error.
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
        let window = buf
            .window(block_size as usize)
            .map_err(|e| Error::Task(format!("allocating a block buffer: {e}")))?;
        let len = compression
            .decompress_to_slice(stored, window)
            .map_err(|e| {
                corrupt(format!(
                    "cannot decompress as {}: {e}",
                    compression.as_str()
                ))
            })?;
        let buf = &window[..len];
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

/// [`with_open_block`] returning a copy of the checked content.
pub fn open_block(
    compression: Compression,
    stored: &[u8],
    checksum: &str,
    block_size: u64,
    target: &str,
    object: &str,
) -> Result<Vec<u8>> {
    with_open_block(
        compression,
        stored,
        checksum,
        block_size,
        target,
        object,
        <[u8]>::to_vec,
    )
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

/// The direct lz4 path against `lz4_flex`'s frame decoder, on frames of every shape the
/// encoder writes and on damaged ones (stored blocks are remote input).
/// `PROPTEST_CASES=20000 cargo test -p backupstore --lib lz4_fast_path` runs a long fuzz.
#[cfg(test)]
mod lz4_fast_path {
    use super::*;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};
    use proptest::prelude::*;

    fn encode(data: &[u8], (info, with_size): (FrameInfo, bool)) -> Vec<u8> {
        let info = if with_size {
            info.content_size(Some(data.len() as u64))
        } else {
            info
        };
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).expect("write");
        enc.finish().expect("finish")
    }

    /// Data mixing runs (compressible) with noise (stored blocks).
    fn data() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((any::<u8>(), 0usize..70_000, any::<bool>()), 0..6).prop_map(
            |parts| {
                let mut out = Vec::new();
                let mut x = 0x9e37_79b9u32;
                for (byte, len, noise) in parts {
                    for _ in 0..len {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        out.push(if noise { x as u8 } else { byte });
                    }
                }
                out
            },
        )
    }

    /// Frame options; the flag asks for the content size in the header.
    fn frame_info() -> impl Strategy<Value = (FrameInfo, bool)> {
        (
            0..3usize,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(size, linked, block_sums, content_sum, content_size)| {
                let info = FrameInfo::new()
                    .block_size([BlockSize::Max64KB, BlockSize::Max256KB, BlockSize::Max4MB][size])
                    .block_mode(if linked {
                        BlockMode::Linked
                    } else {
                        BlockMode::Independent
                    })
                    .block_checksums(block_sums)
                    .content_checksum(content_sum);
                (info, content_size)
            })
    }

    fn reference(frame: &[u8], limit: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        FrameDecoder::new(frame)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .ok()
            .filter(|_| out.len() <= limit)
            .map(|_| out)
    }

    proptest! {
        #[test]
        fn decodes_what_the_encoder_writes(data in data(), info in frame_info()) {
            let independent = info.0.block_mode == BlockMode::Independent;
            let frame = encode(&data, info);
            let mut out = vec![0u8; data.len() + 10];
            let fast = decode_lz4_independent(&frame, &mut out);
            // Independent frames take the fast path; linked ones are left to lz4_flex.
            prop_assert_eq!(fast.is_some(), independent);
            let len = Compression::Lz4.decompress_to_slice(&frame, &mut out).expect("decode");
            prop_assert!(out[..len] == data[..]);
            // One byte short of room is an error, never a truncated block.
            if !data.is_empty() {
                let mut short = vec![0u8; data.len() - 1];
                prop_assert!(Compression::Lz4.decompress_to_slice(&frame, &mut short).is_err());
            }
        }

        #[test]
        fn damaged_frames_decode_as_lz4_flex_does_or_fail(
            data in data(),
            info in frame_info(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<Option<prop::sample::Index>>(),
        ) {
            let mut frame = encode(&data, info);
            for (at, byte) in flips {
                let i = at.index(frame.len());
                frame[i] = byte;
            }
            if let Some(cut) = cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            let limit = data.len() + 100;
            let mut out = vec![0u8; limit];
            // Never a panic; within the limit; and what both accept decodes the same.
            // (Damage lz4_flex catches with an xxHash32 may decode here: the SHA-512 name
            // check after decoding is what rejects it.)
            // lz4_flex takes a frame cut at a block boundary (no end mark) as complete; this
            // path calls that truncation, the only way it is stricter.
            let ours = Compression::Lz4.decompress_to_slice(&frame, &mut out);
            match (ours, reference(&frame, limit)) {
                (Ok(len), Some(expected)) => prop_assert!(out[..len] == expected[..]),
                (Err(e), Some(_)) => prop_assert!(cut.is_some(), "refused an intact frame: {e}"),
                (_, None) => {}
            }
        }
    }

    #[test]
    fn limits_and_foreign_frames() {
        let data = vec![7u8; 100_000];
        let frame = Compression::Lz4.compress(&data).expect("compress");
        // Data after the frame: left to lz4_flex, which decodes the first frame (what this
        // store always did; the SHA-512 check then judges the content).
        let twice = [frame.clone(), frame.clone()].concat();
        let mut out = vec![0u8; 200_000];
        assert!(decode_lz4_independent(&twice, &mut out).is_none());
        let len = Compression::Lz4
            .decompress_to_slice(&twice, &mut out)
            .expect("two frames");
        assert_eq!(Some(out[..len].to_vec()), reference(&twice, 200_000));
        // Not lz4 at all.
        assert!(
            Compression::Lz4
                .decompress_to_slice(b"garbage!", &mut out)
                .is_err()
        );
        // Every cut of a valid frame is an error, never a short block.
        for cut in 1..frame.len() {
            assert!(
                Compression::Lz4
                    .decompress_to_slice(&frame[..cut], &mut out)
                    .is_err(),
                "cut at {cut}"
            );
        }
    }
}
