//! I/O through a chain of layers (newest first). A read takes each byte from the newest layer
//! that holds its sector, zeros where none does; runs of sectors that resolve to the same layer
//! are read with one `pread`. Writes and zeroing land in the top layer in whole sectors.

use std::io;
use std::sync::{Arc, Mutex};

use crate::layer::LayerFile;
use crate::sector::{SECTOR, Span, align_down, align_up, subtract, union};

pub type Chain = Vec<Arc<LayerFile>>;

/// Fills `buf` with the chain's bytes at `offset`.
pub fn read_chain(chain: &[Arc<LayerFile>], offset: u64, buf: &mut [u8]) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let end = offset + buf.len() as u64;
    let mut unresolved: Vec<Span> = vec![(offset, end)];
    for layer in chain {
        if unresolved.is_empty() {
            break;
        }
        let mut found = Vec::new();
        for &(s, e) in &unresolved {
            for (ds, de) in layer.cached_spans(s, e)? {
                layer
                    .read_exact_at(&mut buf[(ds - offset) as usize..(de - offset) as usize], ds)?;
                found.push((ds, de));
            }
        }
        if !found.is_empty() {
            unresolved = subtract(&unresolved, &found);
        }
    }
    for (s, e) in unresolved {
        buf[(s - offset) as usize..(e - offset) as usize].fill(0);
    }
    Ok(())
}

/// Sectors within `[start, end)` held by any of `layers`, as the filesystem reports them.
pub fn chain_data_spans(layers: &[Arc<LayerFile>], start: u64, end: u64) -> io::Result<Vec<Span>> {
    collect_spans(layers, start, end, LayerFile::data_spans)
}

/// The same from the layers' in-memory extent maps (for the I/O path).
pub fn chain_cached_spans(
    layers: &[Arc<LayerFile>],
    start: u64,
    end: u64,
) -> io::Result<Vec<Span>> {
    collect_spans(layers, start, end, LayerFile::cached_spans)
}

fn collect_spans(
    layers: &[Arc<LayerFile>],
    start: u64,
    end: u64,
    spans_of: impl Fn(&LayerFile, u64, u64) -> io::Result<Vec<Span>>,
) -> io::Result<Vec<Span>> {
    let mut out = Vec::new();
    for layer in layers {
        let spans = spans_of(layer, start, end)?;
        if !spans.is_empty() {
            out = union(&out, &spans);
        }
    }
    Ok(out)
}

/// Writes `data` at `offset` into `chain[0]`: whole sectors directly, partial edge sectors by
/// reading the sector through the chain, merging, and writing the whole sector back.
pub(crate) fn write_sectors(
    chain: &[Arc<LayerFile>],
    rmw: &Mutex<()>,
    offset: u64,
    data: &[u8],
) -> io::Result<()> {
    write_sectors_as(chain, rmw, offset, data, Bulk::No)
}

/// [`write_sectors`] for bulk data (restored blocks): the whole sectors go with direct I/O
/// ([`LayerFile::write_bulk_at`]).
pub(crate) fn write_bulk_sectors(
    chain: &[Arc<LayerFile>],
    rmw: &Mutex<()>,
    offset: u64,
    data: &[u8],
) -> io::Result<()> {
    write_sectors_as(chain, rmw, offset, data, Bulk::Yes)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Yes,
    No,
}

fn write_sectors_as(
    chain: &[Arc<LayerFile>],
    rmw: &Mutex<()>,
    offset: u64,
    data: &[u8],
    bulk: Bulk,
) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let end = offset + data.len() as u64;
    let first_full = align_up(offset, SECTOR);
    let last_full = align_down(end, SECTOR);
    if !offset.is_multiple_of(SECTOR) {
        let sector = align_down(offset, SECTOR);
        let upto = end.min(sector + SECTOR);
        merge_sector(
            chain,
            rmw,
            sector,
            offset,
            &data[..(upto - offset) as usize],
        )?;
    }
    if first_full < last_full {
        let from = (first_full - offset) as usize;
        let to = (last_full - offset) as usize;
        match bulk {
            Bulk::Yes => chain[0].write_bulk_at(&data[from..to], first_full)?,
            Bulk::No => chain[0].write_all_at(&data[from..to], first_full)?,
        }
    }
    if !end.is_multiple_of(SECTOR) && last_full >= first_full {
        merge_sector(
            chain,
            rmw,
            last_full,
            last_full,
            &data[(last_full - offset) as usize..],
        )?;
    }
    Ok(())
}

fn merge_sector(
    chain: &[Arc<LayerFile>],
    rmw: &Mutex<()>,
    sector: u64,
    at: u64,
    bytes: &[u8],
) -> io::Result<()> {
    let _serialised = rmw.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = [0u8; SECTOR as usize];
    read_chain(chain, sector, &mut buf)?;
    let start = (at - sector) as usize;
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    chain[0].write_all_at(&buf, sector)
}

/// Makes `[offset, offset+len)` of `chain[0]` read as zeros through the chain: real zeros where
/// any of `lower` holds data, holes elsewhere; partial edge sectors are merged.
pub(crate) fn zero_sectors(
    chain: &[Arc<LayerFile>],
    lower: &[Arc<LayerFile>],
    rmw: &Mutex<()>,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let end = offset + len;
    let first_full = align_up(offset, SECTOR);
    let last_full = align_down(end, SECTOR);
    if first_full >= last_full {
        // No whole sector inside: zero the bytes by merging.
        let zeros = vec![0u8; len as usize];
        return write_sectors(chain, rmw, offset, &zeros);
    }
    if offset < first_full {
        write_sectors(
            chain,
            rmw,
            offset,
            &vec![0u8; (first_full - offset) as usize],
        )?;
    }
    if last_full < end {
        write_sectors(
            chain,
            rmw,
            last_full,
            &vec![0u8; (end - last_full) as usize],
        )?;
    }
    let below = chain_cached_spans(lower, first_full, last_full)?;
    for &(s, e) in &below {
        chain[0].write_zeros(s, e)?;
    }
    for (s, e) in subtract(&[(first_full, last_full)], &below) {
        chain[0].punch_hole(s, e)?;
    }
    Ok(())
}
