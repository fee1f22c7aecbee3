//! Recognising an image file by its first bytes, so a raw import never needs `qemu-img` and a
//! compressed or foreign-format file is refused with a fix instead of becoming a garbage disk.

use super::ImageFormat;

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    /// A format we import.
    Supported(ImageFormat),
    /// A disk-image format qemu-img knows that we do not import.
    OtherDiskFormat(&'static str),
    /// Not a disk image at all (an archive or compressed stream).
    NotAnImage {
        what: &'static str,
        fix: &'static str,
    },
}

/// Bytes needed by [`detect`]: the VDI signature sits at offset 0x40.
pub(crate) const HEADER_LEN: usize = 0x48;

const QCOW_MAGIC: &[u8] = b"QFI\xfb";

/// Classifies `header` (the first up to [`HEADER_LEN`] bytes of a file). Anything without a
/// known signature is raw: a raw disk image has no header of its own.
pub(crate) fn detect(header: &[u8]) -> Detected {
    let starts = |magic: &[u8]| header.starts_with(magic);
    if starts(QCOW_MAGIC) {
        return match header.get(4..8) {
            Some([0, 0, 0, 2 | 3]) => Detected::Supported(ImageFormat::Qcow2),
            _ => Detected::OtherDiskFormat("qcow (version 1)"),
        };
    }
    let disk_formats: [(&[u8], &'static str); 6] = [
        (b"KDMV", "vmdk"),
        (b"# Disk DescriptorFile", "vmdk (descriptor)"),
        (b"vhdxfile", "vhdx"),
        (b"conectix", "vpc (vhd)"),
        (b"QED\0", "qed"),
        (b"LUKS\xba\xbe", "luks"),
    ];
    if let Some((_, name)) = disk_formats.iter().find(|(magic, _)| starts(magic)) {
        return Detected::OtherDiskFormat(name);
    }
    if header.get(0x40..0x44) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return Detected::OtherDiskFormat("vdi");
    }
    let decompress = "decompress it first and import the result";
    let archives: [(&[u8], &'static str, &'static str); 6] = [
        (b"\x1f\x8b", "gzip-compressed file", decompress),
        (b"\xfd7zXZ\0", "xz-compressed file", decompress),
        (b"\x28\xb5\x2f\xfd", "zstd-compressed file", decompress),
        (b"BZh", "bzip2-compressed file", decompress),
        (
            b"PK\x03\x04",
            "zip archive",
            "extract the disk image from it",
        ),
        (
            b"7z\xbc\xaf\x27\x1c",
            "7-zip archive",
            "extract the disk image from it",
        ),
    ];
    if let Some((_, what, fix)) = archives.iter().find(|(magic, _, _)| starts(magic)) {
        return Detected::NotAnImage { what, fix };
    }
    Detected::Supported(ImageFormat::Raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(prefix: &[u8]) -> Vec<u8> {
        let mut header = prefix.to_vec();
        header.resize(HEADER_LEN, 0);
        header
    }

    #[test]
    fn recognises_each_signature() {
        assert_eq!(
            detect(&padded(b"QFI\xfb\0\0\0\x03")),
            Detected::Supported(ImageFormat::Qcow2)
        );
        assert_eq!(
            detect(&padded(b"QFI\xfb\0\0\0\x02")),
            Detected::Supported(ImageFormat::Qcow2)
        );
        assert_eq!(
            detect(&padded(b"QFI\xfb\0\0\0\x01")),
            Detected::OtherDiskFormat("qcow (version 1)")
        );
        assert_eq!(detect(&padded(b"KDMV")), Detected::OtherDiskFormat("vmdk"));
        assert_eq!(
            detect(&padded(b"vhdxfile")),
            Detected::OtherDiskFormat("vhdx")
        );
        let mut vdi = padded(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(detect(&vdi), Detected::OtherDiskFormat("vdi"));
        assert!(matches!(
            detect(&padded(b"\x1f\x8b\x08")),
            Detected::NotAnImage {
                what: "gzip-compressed file",
                ..
            }
        ));
        assert!(matches!(
            detect(&padded(b"PK\x03\x04")),
            Detected::NotAnImage {
                what: "zip archive",
                ..
            }
        ));
    }

    #[test]
    fn anything_else_is_raw() {
        assert_eq!(detect(&[]), Detected::Supported(ImageFormat::Raw));
        assert_eq!(
            detect(&padded(b"\xeb\x63\x90")),
            Detected::Supported(ImageFormat::Raw)
        );
        assert_eq!(detect(b"QFI"), Detected::Supported(ImageFormat::Raw));
    }
}
