//! Target URLs (`file://`, `nfs://`, `s3://`) and backup URLs (`<target>?backup=<b>&volume=<v>`).
//!
//! Parsing is strict and total: every input gives a value or a [`UrlError`] that says what is
//! wrong and what the URL should look like; nothing here panics. The query string of a backup
//! URL is encoded exactly like Go's `url.Values.Encode` (keys sorted, `QueryEscape`d values),
//! because Longhorn compares and stores these URLs as strings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The query key that carries NFS mount options.
pub const NFS_OPTIONS_KEY: &str = "nfsOptions";
const BACKUP_KEY: &str = "backup";
const VOLUME_KEY: &str = "volume";

/// Why a target or backup URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "target URL is empty; expected file:///<path>, nfs://<host>:/<path> or s3://<bucket>@<region>/<path>/"
    )]
    Empty,
    #[error("target URL {url:?} has leading or trailing whitespace; remove it")]
    SurroundingWhitespace { url: String },
    #[error(
        "target URL {url:?} has no scheme; expected file:///<path>, nfs://<host>:/<path> or s3://<bucket>@<region>/<path>/"
    )]
    MissingScheme { url: String },
    #[error("target URL scheme {scheme:?} is not supported yet; use file://, nfs:// or s3://")]
    UnsupportedScheme { scheme: String },
    #[error("target URL scheme {scheme:?} is unknown; expected file://, nfs:// or s3://")]
    UnknownScheme { scheme: String },
    #[error("target URL {url:?} contains a fragment ('#'); remove it")]
    Fragment { url: String },
    #[error("target URL {url:?} contains a control or whitespace character; percent-encode it")]
    ForbiddenCharacter { url: String },
    #[error("file target {url:?} must look like file:///<absolute path> (three slashes, no host)")]
    FileHost { url: String },
    #[error("file target {url:?} needs a directory path after file:///")]
    FileRoot { url: String },
    #[error(
        "nfs target {url:?} must look like nfs://<host>:/<path> (a ':' after the host, then an absolute path)"
    )]
    NfsShape { url: String },
    #[error(
        "nfs target {url:?} has an invalid host {host:?}: use a DNS name, an IPv4 address or [IPv6]"
    )]
    NfsHost { url: String, host: String },
    #[error(
        "s3 target {url:?} must look like s3://<bucket>@<region>/<path>/ or s3://<bucket>/<path>/"
    )]
    S3Shape { url: String },
    #[error(
        "s3 target {url:?} has an invalid bucket name {bucket:?}: use at most 63 letters, digits, '.', '-' or '_'"
    )]
    S3Bucket { url: String, bucket: String },
    #[error(
        "s3 target {url:?} has an invalid region {region:?}: use letters, digits, '.', '-' or '_'"
    )]
    S3Region { url: String, region: String },
    #[error("target path {path:?} may not contain {character:?} (Longhorn refuses it too)")]
    PathCharacter { path: String, character: char },
    #[error("target path {path:?} has an empty, '.' or '..' segment; write the path without them")]
    PathSegment { path: String },
    #[error("target path {path:?} has an invalid percent-encoding or is not UTF-8")]
    PathEncoding { path: String },
    #[error(
        "query of {url:?} is malformed near {fragment:?} (expected key=value pairs joined by '&', percent-encoded)"
    )]
    Query { url: String, fragment: String },
    #[error("{scheme}:// targets take no query parameter, but {url:?} has {key:?}")]
    UnexpectedQueryKey {
        url: String,
        scheme: &'static str,
        key: String,
    },
    #[error("query parameter {key:?} appears more than once in {url:?}")]
    DuplicateQueryKey { url: String, key: String },
    #[error(
        "nfsOptions {options:?} is invalid: give comma-separated mount options without spaces or empty entries"
    )]
    NfsOptions { options: String },
    #[error("backup URL {url:?} lacks the {key:?} query parameter")]
    MissingBackupKey { url: String, key: &'static str },
    #[error("backup URL {url:?} has an empty {key:?} query parameter")]
    EmptyBackupKey { url: String, key: &'static str },
}

/// Which kind of store a target URL designates, with its parsed parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// A local directory (ours; used by tests and the benchmark).
    File { path: PathBuf },
    /// An NFS export, mounted under a per-target directory and then used as a directory.
    Nfs {
        /// Server name or address, without the trailing ':' (IPv6 keeps its brackets).
        host: String,
        /// Absolute path of the export on the server.
        export: String,
        /// Mount options that replace the defaults (`?nfsOptions=...`), if given.
        nfs_options: Option<String>,
    },
    /// An S3 bucket, with an optional region and a key prefix (no leading or trailing '/').
    S3 {
        bucket: String,
        region: Option<String>,
        prefix: String,
    },
}

/// A parsed backup target URL. Its string form ([`TargetUrl::as_str`]) is canonical: the
/// scheme is lower case and the query, if any, is encoded as Go encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetUrl {
    canonical: String,
    kind: TargetKind,
}

impl TargetUrl {
    /// Parse and validate a target URL.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let (base, pairs) = split_target(input)?;
        Self::from_parts(input, &base, pairs)
    }

    /// The parsed parts.
    pub fn kind(&self) -> &TargetKind {
        &self.kind
    }

    /// The canonical string form.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The scheme: `file`, `nfs` or `s3`.
    pub fn scheme(&self) -> &'static str {
        match self.kind {
            TargetKind::File { .. } => "file",
            TargetKind::Nfs { .. } => "nfs",
            TargetKind::S3 { .. } => "s3",
        }
    }

    /// The URL of backup `backup` of volume `volume` in this target.
    pub fn backup_url(&self, backup: &str, volume: &str) -> Result<BackupUrl, UrlError> {
        BackupUrl::new(self.clone(), backup, volume)
    }

    fn base(&self) -> &str {
        self.canonical
            .split_once('?')
            .map_or(self.canonical.as_str(), |(base, _)| base)
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        match &self.kind {
            TargetKind::Nfs {
                nfs_options: Some(options),
                ..
            } => vec![(NFS_OPTIONS_KEY.to_string(), options.clone())],
            _ => Vec::new(),
        }
    }

    /// Build from a split URL: `base` is the lower-cased-scheme text before '?', `pairs` the
    /// decoded query (which, for a backup URL, no longer holds `backup` and `volume`).
    fn from_parts(input: &str, base: &str, pairs: Vec<(String, String)>) -> Result<Self, UrlError> {
        let (scheme, rest) = base
            .split_once("://")
            .ok_or_else(|| UrlError::MissingScheme {
                url: input.to_string(),
            })?;
        let kind = match scheme {
            "file" => parse_file(input, rest, &pairs)?,
            "nfs" => parse_nfs(input, rest, &pairs)?,
            "s3" => parse_s3(input, rest, &pairs)?,
            "cifs" | "azblob" => {
                return Err(UrlError::UnsupportedScheme {
                    scheme: scheme.to_string(),
                });
            }
            _ => {
                return Err(UrlError::UnknownScheme {
                    scheme: scheme.to_string(),
                });
            }
        };
        let mut canonical = base.to_string();
        if !pairs.is_empty() {
            canonical.push('?');
            canonical.push_str(&encode_query(pairs));
        }
        Ok(Self { canonical, kind })
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl FromStr for TargetUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The URL of one backup: `<target>?backup=<b>&volume=<v>`, merged into the target's query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupUrl {
    pub target: TargetUrl,
    pub backup: String,
    pub volume: String,
}

impl BackupUrl {
    /// A backup URL from its parts. The names only need to be non-empty here: they are
    /// percent-encoded, so any name round-trips; the store checks them against the name rule
    /// ([`is_valid_name`]) when it uses them as paths.
    pub fn new(target: TargetUrl, backup: &str, volume: &str) -> Result<Self, UrlError> {
        let url = || format!("{target}?backup={backup}&volume={volume}");
        if backup.is_empty() {
            return Err(UrlError::EmptyBackupKey {
                url: url(),
                key: BACKUP_KEY,
            });
        }
        if volume.is_empty() {
            return Err(UrlError::EmptyBackupKey {
                url: url(),
                key: VOLUME_KEY,
            });
        }
        Ok(Self {
            target,
            backup: backup.to_string(),
            volume: volume.to_string(),
        })
    }

    /// Parse a backup URL such as `s3://bs@minio/?backup=backup-2&volume=vol-2`.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let (base, mut pairs) = split_target(input)?;
        let backup = take_key(input, &mut pairs, BACKUP_KEY)?;
        let volume = take_key(input, &mut pairs, VOLUME_KEY)?;
        let target = TargetUrl::from_parts(input, &base, pairs)?;
        Self::new(target, &backup, &volume)
    }
}

impl fmt::Display for BackupUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pairs = self.target.query_pairs();
        pairs.push((BACKUP_KEY.to_string(), self.backup.clone()));
        pairs.push((VOLUME_KEY.to_string(), self.volume.clone()));
        write!(f, "{}?{}", self.target.base(), encode_query(pairs))
    }
}

impl FromStr for BackupUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Whether `name` is a valid volume or backup name (`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn take_key(
    input: &str,
    pairs: &mut Vec<(String, String)>,
    key: &'static str,
) -> Result<String, UrlError> {
    let position =
        pairs
            .iter()
            .position(|(k, _)| k == key)
            .ok_or_else(|| UrlError::MissingBackupKey {
                url: input.to_string(),
                key,
            })?;
    Ok(pairs.remove(position).1)
}

/// Check the characters of the whole URL, lower-case the scheme, split off and decode the query.
fn split_target(input: &str) -> Result<(String, Vec<(String, String)>), UrlError> {
    if input.is_empty() {
        return Err(UrlError::Empty);
    }
    if input.trim() != input {
        return Err(UrlError::SurroundingWhitespace {
            url: input.to_string(),
        });
    }
    if input.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UrlError::ForbiddenCharacter {
            url: input.to_string(),
        });
    }
    if input.contains('#') {
        return Err(UrlError::Fragment {
            url: input.to_string(),
        });
    }
    let (scheme, rest) = input
        .split_once("://")
        .filter(|(scheme, _)| is_scheme(scheme))
        .ok_or_else(|| UrlError::MissingScheme {
            url: input.to_string(),
        })?;
    let (path_part, query) = match rest.split_once('?') {
        Some((path_part, query)) => (path_part, Some(query)),
        None => (rest, None),
    };
    let base = format!("{}://{}", scheme.to_ascii_lowercase(), path_part);
    let pairs = match query {
        Some(query) => decode_query(input, query)?,
        None => Vec::new(),
    };
    let mut keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(UrlError::DuplicateQueryKey {
            url: input.to_string(),
            key: pair[0].to_string(),
        });
    }
    Ok((base, pairs))
}

fn is_scheme(scheme: &str) -> bool {
    let mut chars = scheme.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn parse_file(input: &str, rest: &str, pairs: &[(String, String)]) -> Result<TargetKind, UrlError> {
    reject_query(input, "file", pairs)?;
    let Some(path) = rest.strip_prefix('/') else {
        return Err(UrlError::FileHost {
            url: input.to_string(),
        });
    };
    let segments = decode_path(path)?;
    if segments.is_empty() {
        return Err(UrlError::FileRoot {
            url: input.to_string(),
        });
    }
    Ok(TargetKind::File {
        path: PathBuf::from(format!("/{}", segments.join("/"))),
    })
}

fn parse_nfs(input: &str, rest: &str, pairs: &[(String, String)]) -> Result<TargetKind, UrlError> {
    let shape = || UrlError::NfsShape {
        url: input.to_string(),
    };
    let (authority, path) = rest.split_once('/').ok_or_else(shape)?;
    let host = authority.strip_suffix(':').ok_or_else(shape)?;
    if !is_host(host) {
        return Err(UrlError::NfsHost {
            url: input.to_string(),
            host: host.to_string(),
        });
    }
    let segments = decode_path(path)?;
    if segments.is_empty() {
        return Err(shape());
    }
    let mut nfs_options = None;
    for (key, value) in pairs {
        if key != NFS_OPTIONS_KEY {
            return Err(UrlError::UnexpectedQueryKey {
                url: input.to_string(),
                scheme: "nfs",
                key: key.clone(),
            });
        }
        if value.is_empty() {
            continue;
        }
        if value
            .split(',')
            .any(|option| option.is_empty() || option.chars().any(|c| c.is_whitespace()))
        {
            return Err(UrlError::NfsOptions {
                options: value.clone(),
            });
        }
        nfs_options = Some(value.clone());
    }
    Ok(TargetKind::Nfs {
        host: host.to_string(),
        export: format!("/{}", segments.join("/")),
        nfs_options,
    })
}

fn parse_s3(input: &str, rest: &str, pairs: &[(String, String)]) -> Result<TargetKind, UrlError> {
    reject_query(input, "s3", pairs)?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (bucket, region) = match authority.split_once('@') {
        Some((bucket, region)) => (bucket, Some(region)),
        None => (authority, None),
    };
    if bucket.is_empty() {
        return Err(UrlError::S3Shape {
            url: input.to_string(),
        });
    }
    // Longhorn's own example bucket is "bs": S3-compatible servers are laxer than AWS's 3-63.
    let bucket_ok = bucket.len() <= 63
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !bucket_ok {
        return Err(UrlError::S3Bucket {
            url: input.to_string(),
            bucket: bucket.to_string(),
        });
    }
    if let Some(region) = region {
        let region_ok = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !region_ok {
            return Err(UrlError::S3Region {
                url: input.to_string(),
                region: region.to_string(),
            });
        }
    }
    let segments = decode_path(path)?;
    Ok(TargetKind::S3 {
        bucket: bucket.to_string(),
        region: region.map(str::to_string),
        prefix: segments.join("/"),
    })
}

fn reject_query(
    input: &str,
    scheme: &'static str,
    pairs: &[(String, String)],
) -> Result<(), UrlError> {
    match pairs.first() {
        Some((key, _)) => Err(UrlError::UnexpectedQueryKey {
            url: input.to_string(),
            scheme,
            key: key.clone(),
        }),
        None => Ok(()),
    }
}

/// A DNS name, an IPv4 address or a bracketed IPv6 address.
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        })
}

/// Split a path (without its leading '/') into decoded segments. One trailing '/' is allowed.
fn decode_path(path: &str) -> Result<Vec<String>, UrlError> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let mut segments = Vec::new();
    for raw in trimmed.split('/') {
        let segment =
            percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| UrlError::PathEncoding {
                    path: path.to_string(),
                })?;
        if !valid_percent_escapes(raw) {
            return Err(UrlError::PathEncoding {
                path: path.to_string(),
            });
        }
        if segment.is_empty() || segment == "." || segment == ".." || segment.contains('/') {
            return Err(UrlError::PathSegment {
                path: path.to_string(),
            });
        }
        if let Some(character) = segment
            .chars()
            .find(|c| matches!(c, '$' | ',') || c.is_control())
        {
            return Err(UrlError::PathCharacter {
                path: path.to_string(),
                character,
            });
        }
        segments.push(segment.into_owned());
    }
    Ok(segments)
}

/// Go's `url.QueryUnescape` refuses a '%' not followed by two hex digits; so do we.
fn valid_percent_escapes(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !matches!(hex, Some(h) if h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// What Go's `url.QueryEscape` leaves alone: ASCII letters, digits and `-_.~`.
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Go's `url.QueryEscape`: like percent-encoding, but a space becomes '+'.
pub fn query_escape(value: &str) -> String {
    utf8_percent_encode(value, QUERY_ESCAPE)
        .to_string()
        .replace("%20", "+")
}

/// Go's `url.QueryUnescape`: '+' is a space; invalid escapes and non-UTF-8 are refused.
fn query_unescape(value: &str) -> Option<String> {
    if !valid_percent_escapes(value) {
        return None;
    }
    let spaced = value.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Go's `url.Values.Encode`: keys sorted (stable, so repeated keys keep their order), joined by '&'.
fn encode_query(mut pairs: Vec<(String, String)>) -> String {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn decode_query(input: &str, query: &str) -> Result<Vec<(String, String)>, UrlError> {
    let mut pairs = Vec::new();
    for fragment in query.split('&') {
        if fragment.is_empty() {
            continue;
        }
        let bad = || UrlError::Query {
            url: input.to_string(),
            fragment: fragment.to_string(),
        };
        // Go refuses ';' as a separator since 1.17; refuse it rather than guess.
        if fragment.contains(';') {
            return Err(bad());
        }
        let (key, value) = fragment.split_once('=').unwrap_or((fragment, ""));
        let key = query_unescape(key)
            .filter(|k| !k.is_empty())
            .ok_or_else(bad)?;
        let value = query_unescape(value).ok_or_else(bad)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn spec_backup_urls_round_trip_exactly() {
        for url in [
            "s3://bs@minio/?backup=backup-2&volume=vol-2",
            "nfs://svc:/opt/bs?backup=b&nfsOptions=soft%2Ctimeo%3D150&volume=v",
        ] {
            let parsed = BackupUrl::parse(url).expect("spec example parses");
            assert_eq!(parsed.to_string(), url);
        }
    }

    #[test]
    fn names_follow_the_store_rule() {
        assert!(is_valid_name("backup-0123abcd"));
        assert!(is_valid_name("pvc-1.a_b"));
        assert!(!is_valid_name("b"));
        assert!(!is_valid_name("-ab"));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name(""));
    }

    #[test]
    fn backup_url_is_added_to_an_existing_query_with_sorted_keys() {
        let target = TargetUrl::parse("nfs://svc.ns:/opt/bs?nfsOptions=soft,timeo=150").unwrap();
        assert_eq!(
            target.as_str(),
            "nfs://svc.ns:/opt/bs?nfsOptions=soft%2Ctimeo%3D150"
        );
        let url = target.backup_url("backup-1a2b", "pvc-1").unwrap();
        assert_eq!(
            url.to_string(),
            "nfs://svc.ns:/opt/bs?backup=backup-1a2b&nfsOptions=soft%2Ctimeo%3D150&volume=pvc-1"
        );
        let back = BackupUrl::parse(&url.to_string()).unwrap();
        assert_eq!(back, url);
    }

    #[test]
    fn targets_parse_into_their_parts() {
        let cases: &[(&str, TargetKind)] = &[
            (
                "file:///var/backups/x",
                TargetKind::File {
                    path: "/var/backups/x".into(),
                },
            ),
            (
                "FILE:///a%20b/",
                TargetKind::File {
                    path: "/a b".into(),
                },
            ),
            (
                "nfs://10.0.0.1:/exports/bs",
                TargetKind::Nfs {
                    host: "10.0.0.1".into(),
                    export: "/exports/bs".into(),
                    nfs_options: None,
                },
            ),
            (
                "nfs://[fd00::1]:/e",
                TargetKind::Nfs {
                    host: "[fd00::1]".into(),
                    export: "/e".into(),
                    nfs_options: None,
                },
            ),
            (
                "s3://my-bucket@us-east-1/some/path/",
                TargetKind::S3 {
                    bucket: "my-bucket".into(),
                    region: Some("us-east-1".into()),
                    prefix: "some/path".into(),
                },
            ),
            (
                "s3://bkt/",
                TargetKind::S3 {
                    bucket: "bkt".into(),
                    region: None,
                    prefix: "".into(),
                },
            ),
            (
                "s3://bkt",
                TargetKind::S3 {
                    bucket: "bkt".into(),
                    region: None,
                    prefix: "".into(),
                },
            ),
        ];
        for (input, kind) in cases {
            let url = TargetUrl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(url.kind(), kind, "{input}");
        }
    }

    type ErrorCheck = fn(&UrlError) -> bool;

    #[test]
    fn bad_targets_get_precise_errors() {
        let cases: &[(&str, ErrorCheck)] = &[
            ("", |e| matches!(e, UrlError::Empty)),
            (" s3://b/", |e| {
                matches!(e, UrlError::SurroundingWhitespace { .. })
            }),
            ("/var/backups", |e| {
                matches!(e, UrlError::MissingScheme { .. })
            }),
            (
                "cifs://srv/share/p",
                |e| matches!(e, UrlError::UnsupportedScheme { scheme } if scheme == "cifs"),
            ),
            (
                "azblob://c@core.windows.net/p",
                |e| matches!(e, UrlError::UnsupportedScheme { scheme } if scheme == "azblob"),
            ),
            ("ftp://x/y", |e| matches!(e, UrlError::UnknownScheme { .. })),
            ("file://host/x", |e| matches!(e, UrlError::FileHost { .. })),
            ("file:///", |e| matches!(e, UrlError::FileRoot { .. })),
            ("file:///a/../b", |e| {
                matches!(e, UrlError::PathSegment { .. })
            }),
            ("file:///a//b", |e| {
                matches!(e, UrlError::PathSegment { .. })
            }),
            ("file:///a/$b", |e| {
                matches!(e, UrlError::PathCharacter { character: '$', .. })
            }),
            ("s3://bkt/a,b/", |e| {
                matches!(e, UrlError::PathCharacter { character: ',', .. })
            }),
            ("file:///a%2Cb", |e| {
                matches!(e, UrlError::PathCharacter { character: ',', .. })
            }),
            ("file:///a%zz", |e| {
                matches!(e, UrlError::PathEncoding { .. })
            }),
            (
                "file:///x?y=1",
                |e| matches!(e, UrlError::UnexpectedQueryKey { key, .. } if key == "y"),
            ),
            ("nfs://host/path", |e| {
                matches!(e, UrlError::NfsShape { .. })
            }),
            ("nfs://host:/", |e| matches!(e, UrlError::NfsShape { .. })),
            ("nfs://ho st:/p", |e| {
                matches!(e, UrlError::ForbiddenCharacter { .. })
            }),
            ("nfs://h@st:/p", |e| matches!(e, UrlError::NfsHost { .. })),
            ("nfs://h:/p?nfsOptions=soft,,x", |e| {
                matches!(e, UrlError::NfsOptions { .. })
            }),
            (
                "nfs://h:/p?other=1",
                |e| matches!(e, UrlError::UnexpectedQueryKey { key, .. } if key == "other"),
            ),
            ("nfs://h:/p?nfsOptions=a&nfsOptions=b", |e| {
                matches!(e, UrlError::DuplicateQueryKey { .. })
            }),
            ("nfs://h:/p?nfsOptions=%", |e| {
                matches!(e, UrlError::Query { .. })
            }),
            ("s3://@region/p/", |e| matches!(e, UrlError::S3Shape { .. })),
            ("s3://b!k/p/", |e| matches!(e, UrlError::S3Bucket { .. })),
            ("s3://bucket@/p/", |e| {
                matches!(e, UrlError::S3Region { .. })
            }),
            ("s3://b/p#frag", |e| matches!(e, UrlError::Fragment { .. })),
        ];
        for (input, check) in cases {
            match TargetUrl::parse(input) {
                Ok(url) => panic!("{input:?} parsed as {url:?}"),
                Err(e) => {
                    assert!(check(&e), "{input:?}: unexpected error {e:?}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn backup_urls_need_both_names() {
        let err = BackupUrl::parse("s3://bs@minio/?volume=vol-2").unwrap_err();
        assert_eq!(
            err,
            UrlError::MissingBackupKey {
                url: "s3://bs@minio/?volume=vol-2".into(),
                key: "backup"
            }
        );
        let err = BackupUrl::parse("s3://bs@minio/?backup=bk-1").unwrap_err();
        assert!(matches!(
            err,
            UrlError::MissingBackupKey { key: "volume", .. }
        ));
        let err = BackupUrl::parse("s3://bs@minio/?backup=&volume=vv").unwrap_err();
        assert!(matches!(
            err,
            UrlError::EmptyBackupKey { key: "backup", .. }
        ));
    }

    #[test]
    fn query_escape_matches_go() {
        // Values from Go: url.QueryEscape("a b,c=d/é~_.-") == "a+b%2Cc%3Dd%2F%C3%A9~_.-".
        assert_eq!(query_escape("a b,c=d/é~_.-"), "a+b%2Cc%3Dd%2F%C3%A9~_.-");
        assert_eq!(
            query_unescape("a+b%2Cc%3Dd%2F%C3%A9~_.-").unwrap(),
            "a b,c=d/é~_.-"
        );
    }
}
