//! Shared by the integration tests: proptest generators of valid handles (with awkward characters) and a
//! re-implementation of Longhorn's decoder and encoder, including the parts of Go's `net/url` it relies on.
#![allow(dead_code)] // each test file uses a different subset

pub mod longhorn;

use handle_codec::{
    BackingImageHandle, BackingImageSource, BackupUrl, CloneEncryption, ExportType,
    ExtraParameters, HttpUrl, Name, ObjectName, Sha512Checksum, SnapshotHandle, keys,
};
use proptest::prelude::*;

/// Characters that stress escaping: separators of every layer, `%`, `+`, spaces, non-ASCII. Valid in names.
const AWKWARD: &str = "[a-zA-Z0-9/?&=%+#:;@!$'()*,\\[\\] ~._é日😀\u{200b}-]";
/// The same plus a control character (U+0085), for values that may hold anything.
const AWKWARD_WITH_CONTROL: &str = "[a-zA-Z0-9/?&=%+#:;@!$'()*,\\[\\] ~._é日😀\u{85}\u{200b}-]";

/// Opaque names, mostly awkward, sometimes plain, sometimes any printable text.
pub fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        3 => proptest::string::string_regex(&format!("{AWKWARD}{{1,40}}")).expect("regex"),
        1 => "[a-z0-9][a-z0-9_.-]{0,30}",
        1 => "\\PC{1,20}",
    ]
    // Trimmed rather than filtered, so that long runs do not hit proptest's reject limit.
    .prop_filter_map("not a valid Name", |text| Name::new(text.trim()).ok())
}

/// Kubernetes object names.
pub fn object_name() -> impl Strategy<Value = ObjectName> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,2}"
        .prop_filter_map("not an ObjectName", |text| ObjectName::new(text).ok())
}

pub fn checksum() -> impl Strategy<Value = Sha512Checksum> {
    "[0-9a-f]{128}".prop_filter_map("checksum", |hex| Sha512Checksum::new(hex).ok())
}

/// http(s) URLs whose paths and queries hold characters that need escaping inside a handle query.
pub fn http_url() -> impl Strategy<Value = HttpUrl> {
    (
        prop_oneof!["http", "https", "HTTPS"],
        "[a-z0-9]{1,10}(\\.[a-z]{2,6}){0,2}",
        proptest::option::of(1u16..),
        "(/[a-zA-Z0-9%?&=+#;:@!$'()*,~._é日-]{0,12}){0,4}",
    )
        .prop_map(|(scheme, host, port, path)| match port {
            Some(port) => format!("{scheme}://{host}:{port}{path}"),
            None => format!("{scheme}://{host}{path}"),
        })
        .prop_filter_map("not an HttpUrl", |text| HttpUrl::new(text).ok())
}

pub fn backup_url() -> impl Strategy<Value = BackupUrl> {
    prop_oneof![
        "(s3|nfs|cifs|azblob)://[a-z0-9@.-]{1,20}/\\?backup=backup-[0-9a-f]{16}&volume=[a-z0-9-]{1,10}",
        "[^\\s\\p{Cc}]{1,40}",
    ]
    .prop_filter_map("not a BackupUrl", |text| BackupUrl::new(text).ok())
}

pub fn export_type() -> impl Strategy<Value = ExportType> {
    prop_oneof![Just(ExportType::Raw), Just(ExportType::Qcow2)]
}

pub fn source() -> impl Strategy<Value = BackingImageSource> {
    prop_oneof![
        (http_url(), proptest::option::of(checksum()))
            .prop_map(|(url, checksum)| BackingImageSource::Download { url, checksum }),
        (name(), export_type()).prop_map(|(volume_name, export_type)| {
            BackingImageSource::ExportFromVolume {
                volume_name,
                export_type,
            }
        }),
        Just(BackingImageSource::Upload),
        (backup_url(), proptest::option::of(any::<u32>())).prop_map(
            |(backup_url, concurrent_limit)| BackingImageSource::Restore {
                backup_url,
                concurrent_limit,
            }
        ),
        (
            object_name(),
            proptest::option::of(prop_oneof![
                Just(CloneEncryption::Encrypt),
                Just(CloneEncryption::Decrypt),
                Just(CloneEncryption::Ignore)
            ]),
            proptest::option::of(object_name()),
            proptest::option::of(object_name()),
        )
            .prop_map(|(backing_image, encryption, secret, secret_namespace)| {
                BackingImageSource::Clone {
                    backing_image,
                    encryption,
                    secret,
                    secret_namespace,
                }
            }),
    ]
}

/// Extra parameters with arbitrary keys and values (anything at all in values, controls included).
pub fn extra_parameters() -> impl Strategy<Value = ExtraParameters> {
    proptest::collection::vec(
        (
            prop_oneof![
                proptest::string::string_regex(&format!("{AWKWARD_WITH_CONTROL}{{1,12}}"))
                    .expect("regex"),
                "[a-z-]{1,12}",
                any::<String>(),
            ],
            prop_oneof![
                proptest::string::string_regex(&format!("{AWKWARD_WITH_CONTROL}{{0,20}}"))
                    .expect("regex"),
                any::<String>(),
            ],
        ),
        0..4,
    )
    .prop_map(|pairs| {
        let mut extra = ExtraParameters::new();
        for (key, value) in pairs {
            // Reserved, empty or repeated keys are refused by design; skip them.
            let _ = extra.push(key, value);
        }
        extra
    })
}

pub fn backing_image() -> impl Strategy<Value = BackingImageHandle> {
    (
        object_name(),
        source(),
        proptest::option::of(checksum()),
        extra_parameters(),
    )
        .prop_map(|(name, source, checksum, extra)| BackingImageHandle {
            name,
            source,
            checksum,
            extra,
        })
}

pub fn handle() -> impl Strategy<Value = SnapshotHandle> {
    prop_oneof![
        (name(), name())
            .prop_map(|(volume, snapshot)| SnapshotHandle::Snapshot { volume, snapshot }),
        (name(), name()).prop_map(|(volume, backup)| SnapshotHandle::Backup { volume, backup }),
        backing_image().prop_map(SnapshotHandle::BackingImage),
    ]
}

/// The parameters a backing-image handle stands for, as `(key, value)` in encoding order.
pub fn flat_parameters(image: &BackingImageHandle) -> Vec<(String, String)> {
    let mut out = vec![
        (keys::BACKING_IMAGE.to_owned(), image.name.to_string()),
        (
            keys::DATA_SOURCE_TYPE.to_owned(),
            image.source.source_type().to_string(),
        ),
    ];
    out.extend(
        image
            .source
            .parameters()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    if let Some(checksum) = &image.checksum {
        out.push((keys::CHECKSUM.to_owned(), checksum.to_string()));
    }
    out.extend(
        image
            .extra
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    out
}

/// Text that looks like handles: fragments of every layer glued together, to reach deep decode paths.
pub fn handle_like_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("snap://".to_owned()),
        Just("bak://".to_owned()),
        Just("bs://".to_owned()),
        Just("bi://".to_owned()),
        Just("bi://backing?".to_owned()),
        Just("backing".to_owned()),
        Just("://".to_owned()),
        Just("/".to_owned()),
        Just("?".to_owned()),
        Just("&".to_owned()),
        Just("=".to_owned()),
        Just(";".to_owned()),
        Just("#".to_owned()),
        Just("%".to_owned()),
        Just("%2".to_owned()),
        Just("%2F".to_owned()),
        Just("%C3%A9".to_owned()),
        Just("%FF".to_owned()),
        Just("+".to_owned()),
        Just(" ".to_owned()),
        Just("backingImage=".to_owned()),
        Just("backingImageDataSourceType=".to_owned()),
        Just("backingImageChecksum=".to_owned()),
        Just("download".to_owned()),
        Just("export-from-volume".to_owned()),
        Just("upload".to_owned()),
        Just("restore".to_owned()),
        Just("clone".to_owned()),
        Just("url=".to_owned()),
        Just("checksum=".to_owned()),
        Just("volume-name=".to_owned()),
        Just("export-type=".to_owned()),
        Just("qcow2".to_owned()),
        Just("raw".to_owned()),
        Just("backup-url=".to_owned()),
        Just("concurrent-limit=".to_owned()),
        Just("backing-image=".to_owned()),
        Just("encryption=".to_owned()),
        Just("secret=".to_owned()),
        Just("secret-namespace=".to_owned()),
        Just("https%3A%2F%2Fh%2Fp".to_owned()),
        Just("http://h/".to_owned()),
        Just("0".to_owned()),
        Just("a".repeat(128)),
        "[a-z0-9-]{1,8}",
        "\\PC{1,3}",
    ];
    proptest::collection::vec(token, 0..14).prop_map(|tokens| tokens.concat())
}

/// A tiny deterministic generator, so one `u64` from proptest drives every choice of a rewrite.
struct Choices(u64);

impl Choices {
    fn next(&mut self, n: u64) -> u64 {
        // SplitMix64 step.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn percent_bytes(ch: char, lowercase: bool) -> String {
    let mut buf = [0u8; 4];
    ch.encode_utf8(&mut buf)
        .bytes()
        .map(|b| {
            if lowercase {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Writes `text` as a person might: each character literally where that is unambiguous, else (or at
/// random) as `%XX` in either case; in queries a space may also be `+`.
fn hand_escape(text: &str, in_query: bool, is_key: bool, choices: &mut Choices) -> String {
    let mut out = String::new();
    for ch in text.chars() {
        let must_escape = match ch {
            '%' | '#' => true,
            '/' => !in_query,
            '&' | '+' | ';' => in_query,
            '=' => is_key,
            c if c.is_whitespace() || c.is_control() => !(in_query && c == ' '),
            _ => false,
        };
        let choice = choices.next(4);
        if in_query && ch == ' ' {
            if choice < 2 {
                out.push('+');
            } else {
                out.push_str(&percent_bytes(ch, choice == 2));
            }
        } else if must_escape || choice == 0 {
            out.push_str(&percent_bytes(ch, choices.next(2) == 0));
        } else {
            out.push(ch);
        }
    }
    out
}

/// Another spelling of `handle` that must decode to the same value: `bs://` for backups, names escaped
/// differently, query pairs shuffled, empty pairs and empty optional parameters added.
pub fn hand_written(handle: &SnapshotHandle, seed: u64) -> String {
    let mut choices = Choices(seed);
    match handle {
        SnapshotHandle::Snapshot { volume, snapshot } => format!(
            "snap://{}/{}",
            hand_escape(volume.as_str(), false, false, &mut choices),
            hand_escape(snapshot.as_str(), false, false, &mut choices)
        ),
        SnapshotHandle::Backup { volume, backup } => format!(
            "{}://{}/{}",
            if choices.next(2) == 0 { "bak" } else { "bs" },
            hand_escape(volume.as_str(), false, false, &mut choices),
            hand_escape(backup.as_str(), false, false, &mut choices)
        ),
        SnapshotHandle::BackingImage(image) => {
            let mut pairs = flat_parameters(image);
            if image.checksum.is_none() && choices.next(3) == 0 {
                pairs.push((keys::CHECKSUM.to_owned(), String::new()));
            }
            if let BackingImageSource::ExportFromVolume {
                export_type: ExportType::Raw,
                ..
            } = image.source
            {
                match choices.next(3) {
                    0 => pairs.retain(|(k, _)| k != keys::EXPORT_TYPE),
                    1 => {
                        for (k, v) in &mut pairs {
                            if k == keys::EXPORT_TYPE {
                                v.clear();
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Fisher-Yates, but extras keep their relative order (their order is part of the value).
            let (mut known, extras): (Vec<_>, Vec<_>) = pairs
                .into_iter()
                .partition(|(k, _)| keys::RESERVED.contains(&k.as_str()));
            for i in (1..known.len()).rev() {
                let j = choices.next(i as u64 + 1) as usize;
                known.swap(i, j);
            }
            let mut merged = Vec::new();
            let mut extras = extras.into_iter().peekable();
            for pair in known {
                while extras.peek().is_some() && choices.next(2) == 0 {
                    merged.extend(extras.next());
                }
                merged.push(pair);
            }
            merged.extend(extras);
            let mut out = String::from("bi://backing?");
            for (key, value) in merged {
                if choices.next(5) == 0 {
                    out.push('&');
                }
                out.push_str(&hand_escape(&key, true, true, &mut choices));
                if !(value.is_empty() && choices.next(2) == 0) {
                    out.push('=');
                    out.push_str(&hand_escape(&value, true, false, &mut choices));
                }
                out.push('&');
            }
            out
        }
    }
}
