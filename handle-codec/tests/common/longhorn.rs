//! A faithful re-implementation of Longhorn's snapshot-handle code (longhorn-manager `csi/controller_server.go`:
//! `encodeSnapshotID`, `decodeSnapshotID`, `encodeSnapshotBackingImageID`, `decodeSnapshoBackingImageID`)
//! and of the parts of Go's `net/url` it calls (`url.Parse`, `URL.Query`, `ParseQuery`, `QueryUnescape`).
//!
//! Go strings are byte strings, so values here are `Vec<u8>`. Go's host parsing is simplified: a host made
//! of `A-Z a-z 0-9 - . _ ~` is accepted and anything else is treated as an error; every handle this crate
//! accepts has the host `backing`, so the simplification never decides a test.

use std::collections::BTreeMap;

/// `normalizeCSISnapshotType`: `bs` becomes `bak`.
fn normalize(snapshot_type: &str) -> &str {
    if snapshot_type == "bs" {
        "bak"
    } else {
        snapshot_type
    }
}

/// `encodeSnapshotID(csiSnapshotType, sourceVolumeName, id)`.
pub fn encode_snapshot_id(snapshot_type: &str, volume: &str, id: &str) -> String {
    let snapshot_type = normalize(snapshot_type);
    if snapshot_type == "snap" || snapshot_type == "bak" {
        format!("{snapshot_type}://{volume}/{id}")
    } else {
        id.to_owned()
    }
}

/// The legacy encoder of Longhorn before `bak` existed: `bs://<volume>/<backup>`.
pub fn encode_legacy_backup_id(volume: &str, backup: &str) -> String {
    format!("bs://{volume}/{backup}")
}

/// `encodeSnapshotBackingImageID(id, exportType, volumeName)`: fixed key order, no escaping.
pub fn encode_snapshot_backing_image_id(name: &str, export_type: &str, volume: &str) -> String {
    format!(
        "bi://backing?backingImage={name}&backingImageDataSourceType=export-from-volume&export-type={export_type}&volume-name={volume}"
    )
}

/// `decodeSnapshotID(snapshotID) (csiSnapshotType, sourceVolumeName, id)`.
pub fn decode_snapshot_id(snapshot_id: &str) -> (String, String, String) {
    let empty = || (String::new(), String::new(), String::new());
    let split: Vec<&str> = snapshot_id.split("://").collect(); // strings.Split
    if split.len() < 2 {
        return empty();
    }
    let snapshot_type = split[0];
    if normalize(snapshot_type) == "bi" {
        return ("bi".to_owned(), String::new(), String::new());
    }
    let parts: Vec<&str> = split[1].split('/').collect();
    if parts.len() < 2 {
        return empty();
    }
    (
        normalize(snapshot_type).to_owned(),
        parts[0].to_owned(),
        parts[1].to_owned(),
    )
}

/// `decodeSnapshoBackingImageID(snapshotID)`: `url.Parse`, then `Query()` (errors ignored), first value
/// of each key. A parse error gives an empty map.
pub fn decode_snapshot_backing_image_id(snapshot_id: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let Ok(url) = go_url_parse(snapshot_id) else {
        return BTreeMap::new();
    };
    let (values, _error) = go_parse_query(&url.raw_query);
    values
        .into_iter()
        .filter_map(|(key, mut list)| {
            if list.is_empty() {
                None
            } else {
                Some((key, list.swap_remove(0)))
            }
        })
        .collect()
}

/// The fields of Go's `url.URL` that matter here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GoUrl {
    pub scheme: String,
    pub opaque: String,
    pub host: String,
    pub path: Vec<u8>,
    pub raw_query: String,
    pub fragment: Vec<u8>,
}

/// Go's `url.Parse` (not via request).
pub fn go_url_parse(raw: &str) -> Result<GoUrl, String> {
    let (main, fragment) = raw.split_once('#').unwrap_or((raw, ""));
    let mut url = go_parse(main)?;
    url.fragment = go_unescape(fragment, Mode::Fragment)?;
    Ok(url)
}

fn go_parse(raw: &str) -> Result<GoUrl, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    let mut url = GoUrl::default();
    if raw == "*" {
        url.path = b"*".to_vec();
        return Ok(url);
    }
    let (scheme, mut rest) = go_get_scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        rest = &rest[..rest.len() - 1];
    } else if let Some((before, query)) = rest.split_once('?') {
        url.raw_query = query.to_owned();
        rest = before;
    }
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            url.opaque = rest.to_owned();
            return Ok(url);
        }
        // (Relative references: not reachable from a `<type>://` handle.)
        return Err("relative reference".into());
    }
    if rest.starts_with("//") && (!url.scheme.is_empty() || !rest.starts_with("///")) {
        let after = &rest[2..];
        let (authority, path) = match after.find('/') {
            Some(i) => after.split_at(i),
            None => (after, ""),
        };
        url.host = go_parse_host_simplified(authority)?;
        rest = path;
    }
    url.path = go_unescape(rest, Mode::Path)?;
    Ok(url)
}

fn go_get_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                if i == 0 {
                    return Ok(("", raw));
                }
            }
            b':' => {
                if i == 0 {
                    return Err("missing protocol scheme".into());
                }
                return Ok((&raw[..i], &raw[i + 1..]));
            }
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn go_parse_host_simplified(authority: &str) -> Result<String, String> {
    if authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        Ok(authority.to_owned())
    } else {
        Err(format!("host {authority:?} outside the simplified model"))
    }
}

/// Go's `url.Values`: every value of every key, in order.
pub type GoValues = BTreeMap<Vec<u8>, Vec<Vec<u8>>>;

/// Go's `parseQuery`: all pairs that parse, plus the first error met (callers of `Query()` drop it).
pub fn go_parse_query(mut query: &str) -> (GoValues, Option<String>) {
    let mut values = GoValues::new();
    let mut error = None;
    while !query.is_empty() {
        let pair;
        (pair, query) = query.split_once('&').unwrap_or((query, ""));
        if pair.contains(';') {
            error = Some("invalid semicolon separator in query".to_owned());
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = match go_unescape(key, Mode::QueryComponent) {
            Ok(key) => key,
            Err(e) => {
                error.get_or_insert(e);
                continue;
            }
        };
        let value = match go_unescape(value, Mode::QueryComponent) {
            Ok(value) => value,
            Err(e) => {
                error.get_or_insert(e);
                continue;
            }
        };
        values.entry(key).or_default().push(value);
    }
    (values, error)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Path,
    QueryComponent,
    Fragment,
}

/// Go's `unescape` for the path, query-component and fragment modes.
pub fn go_unescape(s: &str, mode: Mode) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Go: if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2])
                if i + 2 >= bytes.len()
                    || !bytes[i + 1].is_ascii_hexdigit()
                    || !bytes[i + 2].is_ascii_hexdigit()
                {
                    return Err(format!(
                        "invalid URL escape {:?}",
                        &s[i..s.len().min(i + 3)]
                    ));
                }
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]));
                i += 3;
            }
            b'+' if mode == Mode::QueryComponent => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}
