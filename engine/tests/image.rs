//! Backing images through real files and the real `qemu-img`: imports become a volume's bottom
//! layer, exports of a snapshot give back the exact bytes (raw and qcow2, holes kept), and the
//! checksum is what `sha512sum` prints.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use engine::Engine;
use engine::image::{FullScan, ImageError, ImageFormat, ImageTools, sha512_file};
use proptest::prelude::*;

const MIB: u64 = 1024 * 1024;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let output = Command::new(program).args(args).output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn utf8(path: &Path) -> io::Result<&str> {
    path.to_str()
        .ok_or_else(|| io::Error::other(format!("non-UTF-8 path {}", path.display())))
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Never zero, so every written block counts as data.
            (state as u8) | 1
        })
        .collect()
}

/// A sparse file of `size` with `writes` (offset, bytes) applied.
fn sparse_file(path: &Path, size: u64, writes: &[(u64, Vec<u8>)]) -> io::Result<()> {
    let file = File::create_new(path)?;
    file.set_len(size)?;
    for (offset, bytes) in writes {
        file.write_all_at(bytes, *offset)?;
    }
    file.sync_all()
}

/// Bytes of the file on disk (allocated blocks), to see that holes stayed holes.
fn allocated_bytes(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.blocks() * 512)
}

fn sha512sum(path: &Path) -> io::Result<String> {
    let out = run("sha512sum", &[utf8(path)?])?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

fn example_writes() -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, pattern(1, 4096)),
        (MIB + 100, pattern(2, 70_000)),
        (9 * MIB, pattern(3, 2 * MIB as usize)),
    ]
}

#[test]
fn raw_image_round_trips_through_a_volume_byte_exact_and_sparse() -> TestResult {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("disk.img");
    // Not a multiple of 4 KiB: the layer is padded, the bytes are unchanged.
    let size = 12 * MIB + 1000;
    let mut writes = example_writes();
    writes.push((size - 10, pattern(4, 10)));
    sparse_file(&source, size, &writes)?;

    let tools = ImageTools::new();
    assert_eq!(tools.detect_format(&source)?, ImageFormat::Raw);
    let imported = tools.import_to_raw(&source, &dir.path().join("layer.raw"))?;
    assert_eq!(imported.source_format, ImageFormat::Raw);
    assert_eq!(imported.virtual_size, size);
    assert_eq!(imported.layer_size, 12 * MIB + 4096);
    assert!(
        allocated_bytes(&imported.path)? < 3 * MIB,
        "import filled holes"
    );

    let engine = Engine::open(dir.path().join("data"))?;
    let volume = engine.create_volume(
        "from-raw",
        imported.layer_size,
        Some(imported.backing_layer("disk")),
    )?;
    volume.snapshot("s1", BTreeMap::new())?;
    let reader = volume.snapshot_reader("s1")?;
    let exported = tools.export(&reader, &dir.path().join("out.raw"), ImageFormat::Raw)?;
    assert_eq!(exported.virtual_size, imported.layer_size);
    assert!(
        allocated_bytes(&exported.path)? < 3 * MIB,
        "export filled holes"
    );

    let original = fs::read(&source)?;
    let round_trip = fs::read(&exported.path)?;
    assert_eq!(round_trip.len() as u64, imported.layer_size);
    assert!(round_trip[..original.len()] == original[..], "bytes differ");
    assert!(round_trip[original.len()..].iter().all(|&byte| byte == 0));

    assert_eq!(exported.sha512.len(), 128);
    assert!(
        exported
            .sha512
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(exported.sha512, sha512sum(&exported.path)?);
    assert_eq!(sha512_file(&source)?, sha512sum(&source)?);
    Ok(())
}

#[test]
fn qcow2_image_round_trips_with_later_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("base.raw");
    let size = 12 * MIB;
    sparse_file(&raw, size, &example_writes())?;
    let qcow = dir.path().join("base.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            utf8(&raw)?,
            utf8(&qcow)?,
        ],
    )?;

    let tools = ImageTools::new();
    assert_eq!(tools.detect_format(&qcow)?, ImageFormat::Qcow2);
    let imported = tools.import_to_raw(&qcow, &dir.path().join("layer.raw"))?;
    assert_eq!(imported.source_format, ImageFormat::Qcow2);
    assert_eq!(imported.virtual_size, size);
    assert!(
        fs::read(&imported.path)? == fs::read(&raw)?,
        "qcow2 import differs"
    );
    assert!(
        allocated_bytes(&imported.path)? < 4 * MIB,
        "import filled holes"
    );

    // The volume changes on top of its backing image; the export is the new view.
    let engine = Engine::open(dir.path().join("data"))?;
    let volume = engine.create_volume("from-qcow2", size, Some(imported.backing_layer("base")))?;
    let mut expected = fs::read(&raw)?;
    let later = pattern(9, 5000);
    volume.write_at(MIB + 50_000, &later)?;
    expected[(MIB + 50_000) as usize..][..later.len()].copy_from_slice(&later);
    volume.discard(9 * MIB, MIB)?;
    expected[9 * MIB as usize..10 * MIB as usize].fill(0);
    volume.snapshot("s1", BTreeMap::new())?;
    let reader = volume.snapshot_reader("s1")?;

    let exported = tools.export(&reader, &dir.path().join("out.qcow2"), ImageFormat::Qcow2)?;
    assert_eq!(tools.detect_format(&exported.path)?, ImageFormat::Qcow2);
    assert_eq!(exported.sha512, sha512sum(&exported.path)?);
    assert!(
        allocated_bytes(&exported.path)? < 4 * MIB,
        "qcow2 export is not sparse"
    );
    let back = dir.path().join("back.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            utf8(&exported.path)?,
            utf8(&back)?,
        ],
    )?;
    assert!(
        fs::read(&back)? == expected,
        "qcow2 export differs from the volume"
    );

    // Exporting the live volume (no snapshot) gives the same bytes.
    let live = tools.export(
        &FullScan(volume.as_ref()),
        &dir.path().join("live.raw"),
        ImageFormat::Raw,
    )?;
    assert!(fs::read(&live.path)? == expected);
    Ok(())
}

#[test]
fn files_that_are_not_usable_images_are_refused_with_the_reason() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tools = ImageTools::new();
    let dest = dir.path().join("layer.raw");

    let gz = dir.path().join("disk.img.gz");
    fs::write(&gz, b"\x1f\x8b\x08\x00rest-of-gzip")?;
    match tools.import_to_raw(&gz, &dest) {
        Err(err @ ImageError::NotAnImage { .. }) => {
            assert!(err.to_string().contains("gzip"), "{err}");
            assert!(err.to_string().contains("decompress"), "{err}");
        }
        other => panic!("gzip import: {other:?}"),
    }

    let vmdk = dir.path().join("disk.vmdk");
    run(
        "qemu-img",
        &["create", "-q", "-f", "vmdk", utf8(&vmdk)?, "1M"],
    )?;
    assert!(matches!(
        tools.import_to_raw(&vmdk, &dest),
        Err(ImageError::UnsupportedFormat { format: "vmdk", .. })
    ));

    let empty = dir.path().join("empty.img");
    File::create_new(&empty)?;
    assert!(matches!(
        tools.import_to_raw(&empty, &dest),
        Err(ImageError::Empty { .. })
    ));

    assert!(matches!(
        tools.import_to_raw(dir.path(), &dest),
        Err(ImageError::NotAFile { .. })
    ));
    assert!(matches!(
        tools.import_to_raw(&dir.path().join("missing.img"), &dest),
        Err(ImageError::Open { .. })
    ));

    // A qcow2 overlay would make qemu-img read a file named inside the image.
    let base = dir.path().join("base.qcow2");
    let overlay = dir.path().join("overlay.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", utf8(&base)?, "1M"],
    )?;
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            utf8(&base)?,
            utf8(&overlay)?,
        ],
    )?;
    assert!(matches!(
        tools.import_to_raw(&overlay, &dest),
        Err(ImageError::ExternalReference { .. })
    ));

    // No output file is left behind by any refusal.
    assert!(!dest.exists());
    let leftovers: Vec<_> = fs::read_dir(dir.path())?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // An existing destination is never overwritten.
    let raw = dir.path().join("ok.raw");
    sparse_file(&raw, MIB, &[(0, pattern(5, 100))])?;
    fs::write(&dest, b"precious")?;
    assert!(matches!(
        tools.import_to_raw(&raw, &dest),
        Err(ImageError::DestinationExists { .. })
    ));
    assert_eq!(fs::read(&dest)?, b"precious");

    assert!(matches!(
        "vmdk".parse::<ImageFormat>(),
        Err(ImageError::UnknownFormatName { .. })
    ));
    assert_eq!("qcow2".parse::<ImageFormat>()?, ImageFormat::Qcow2);
    Ok(())
}

#[test]
fn missing_qemu_img_is_reported_and_raw_needs_none() -> TestResult {
    let dir = tempfile::tempdir()?;
    let qcow = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", utf8(&qcow)?, "1M"],
    )?;
    let raw = dir.path().join("disk.raw");
    sparse_file(&raw, MIB, &[(4096, pattern(6, 4096))])?;

    let without = ImageTools::with_qemu_img(dir.path().join("no-such-qemu-img"));
    match without.import_to_raw(&qcow, &dir.path().join("a.raw")) {
        Err(err @ ImageError::QemuImgMissing { .. }) => {
            assert!(err.to_string().contains("qemu-utils"), "{err}")
        }
        other => panic!("qcow2 without qemu-img: {other:?}"),
    }
    let imported = without.import_to_raw(&raw, &dir.path().join("b.raw"))?;
    assert!(fs::read(&imported.path)? == fs::read(&raw)?);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any scatter of data and explicit zeros survives import and raw export unchanged.
    #[test]
    fn import_then_export_is_identity(
        blocks in 1u64..64,
        tail in 0u64..4096,
        writes in prop::collection::vec((0u64..64 * 4096, 1usize..20_000, any::<bool>()), 0..12),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let size = blocks * 4096 + tail;
        let source = dir.path().join("in.raw");
        let writes: Vec<(u64, Vec<u8>)> = writes
            .into_iter()
            .filter(|(offset, _, _)| *offset < size)
            .enumerate()
            .map(|(index, (offset, len, zero))| {
                let len = len.min((size - offset) as usize);
                let bytes = if zero { vec![0; len] } else { pattern(index as u64 + 1, len) };
                (offset, bytes)
            })
            .collect();
        let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
        sparse_file(&source, size, &writes).map_err(|e| fail(&e))?;
        let tools = ImageTools::new();
        let imported = tools
            .import_to_raw(&source, &dir.path().join("layer.raw"))
            .map_err(|e| fail(&e))?;
        let engine = Engine::open(dir.path().join("data")).map_err(|e| fail(&e))?;
        let volume = engine
            .create_volume("v", imported.layer_size, Some(imported.backing_layer("b")))
            .map_err(|e| fail(&e))?;
        volume.snapshot("s", BTreeMap::new()).map_err(|e| fail(&e))?;
        let reader = volume.snapshot_reader("s").map_err(|e| fail(&e))?;
        let out = tools
            .export(&reader, &dir.path().join("out.raw"), ImageFormat::Raw)
            .map_err(|e| fail(&e))?;
        let original = fs::read(&source).map_err(|e| fail(&e))?;
        let exported = fs::read(&out.path).map_err(|e| fail(&e))?;
        prop_assert_eq!(&exported[..original.len()], &original[..]);
        prop_assert!(exported[original.len()..].iter().all(|&b| b == 0));
        prop_assert_eq!(exported.len() as u64, imported.layer_size);
        prop_assert_eq!(out.sha512, sha512_file(&source.with_file_name("out.raw")).map_err(|e| fail(&e))?);
    }
}
