//! The snapshot handle: decode a string into a typed value, encode it back.

use std::fmt;
use std::str::FromStr;

use crate::backing_image::{BackingImageHandle, HOST, invalid_name};
use crate::error::{DecodeError, PathScheme, snippet};
use crate::escape::{Plus, UnescapeError, encode_path_part, unescape};
use crate::name::Name;
use crate::query::parse_query;

/// What a VolumeSnapshotContent's `snapshotHandle` points at.
///
/// | form | value |
/// |---|---|
/// | `snap://<volume>/<snapshot>` | [`SnapshotHandle::Snapshot`]: an in-cluster snapshot |
/// | `bak://<volume>/<backup>` | [`SnapshotHandle::Backup`]: a backup in the backup store |
/// | `bs://<volume>/<backup>` | the same [`SnapshotHandle::Backup`] (legacy spelling; encoding writes `bak://`) |
/// | `bi://backing?<query>` | [`SnapshotHandle::BackingImage`] (see [`BackingImageHandle`]) |
///
/// In `snap` and `bak` handles, `<volume>` and the id are percent-encoded: every byte except
/// `A-Z a-z 0-9 - . _ ~` is written `%XX` when encoding, and `%XX` is unescaped when decoding (a `+` is
/// a plus sign). Names Longhorn emits contain none of those bytes, so its handles and ours are the same
/// text.
///
/// ```
/// use handle_codec::{Name, SnapshotHandle};
/// let handle: SnapshotHandle = "bs://test-vol/backup-625159fb469e492e".parse().unwrap();
/// assert_eq!(
///     handle,
///     SnapshotHandle::Backup {
///         volume: Name::new("test-vol").unwrap(),
///         backup: Name::new("backup-625159fb469e492e").unwrap(),
///     }
/// );
/// assert_eq!(handle.to_string(), "bak://test-vol/backup-625159fb469e492e");
///
/// let odd = SnapshotHandle::Snapshot {
///     volume: Name::new("vol").unwrap(),
///     snapshot: Name::new("a/b c").unwrap(),
/// };
/// assert_eq!(odd.encode(), "snap://vol/a%2Fb%20c");
/// assert_eq!(SnapshotHandle::decode(&odd.encode()), Ok(odd));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotHandle {
    /// `snap://<volume>/<snapshot>`
    Snapshot {
        /// The volume the snapshot belongs to.
        volume: Name,
        /// The snapshot name.
        snapshot: Name,
    },
    /// `bak://<volume>/<backup>` (also read from the legacy `bs://<volume>/<backup>`)
    Backup {
        /// The (backup) volume the backup belongs to.
        volume: Name,
        /// The backup name.
        backup: Name,
    },
    /// `bi://backing?<query>`
    BackingImage(BackingImageHandle),
}

/// The handle's type, as in the VolumeSnapshotClass `type` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandleKind {
    /// `snap`
    Snapshot,
    /// `bak` (legacy `bs`)
    Backup,
    /// `bi`
    BackingImage,
}

impl HandleKind {
    /// The scheme written by the encoder.
    pub fn scheme(self) -> &'static str {
        match self {
            HandleKind::Snapshot => "snap",
            HandleKind::Backup => "bak",
            HandleKind::BackingImage => "bi",
        }
    }
}

impl SnapshotHandle {
    /// Decodes a handle; see the type's documentation for the forms. Never panics.
    pub fn decode(handle: &str) -> Result<Self, DecodeError> {
        if handle.is_empty() {
            return Err(DecodeError::Empty);
        }
        // Go's URL parser refuses these, so Longhorn could not read such a handle either.
        if let Some(offset) = handle.bytes().position(|b| b < 0x20 || b == 0x7f) {
            return Err(DecodeError::ControlCharacter { offset });
        }
        let Some((scheme, rest)) = handle.split_once("://").filter(|(s, _)| !s.is_empty()) else {
            return Err(DecodeError::MissingScheme {
                handle: snippet(handle),
            });
        };
        match scheme {
            "snap" => {
                let (volume, snapshot) = decode_path(PathScheme::Snap, handle, rest)?;
                Ok(SnapshotHandle::Snapshot { volume, snapshot })
            }
            "bak" | "bs" => {
                let scheme = if scheme == "bak" {
                    PathScheme::Bak
                } else {
                    PathScheme::Bs
                };
                let (volume, backup) = decode_path(scheme, handle, rest)?;
                Ok(SnapshotHandle::Backup { volume, backup })
            }
            "bi" => decode_backing_image(handle, rest).map(SnapshotHandle::BackingImage),
            other => Err(DecodeError::UnknownType {
                found: snippet(other),
            }),
        }
    }

    /// Decodes a handle given as bytes (a fuzzer's or a wire format's view); non-UTF-8 is an error.
    pub fn decode_bytes(handle: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(handle).map_err(|e| DecodeError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        Self::decode(text)
    }

    /// The handle text. `decode(h.encode()) == h` for every value.
    pub fn encode(&self) -> String {
        match self {
            SnapshotHandle::Snapshot { volume, snapshot } => {
                encode_path(HandleKind::Snapshot, volume, snapshot)
            }
            SnapshotHandle::Backup { volume, backup } => {
                encode_path(HandleKind::Backup, volume, backup)
            }
            SnapshotHandle::BackingImage(image) => image.encode(),
        }
    }

    /// The handle's type.
    pub fn kind(&self) -> HandleKind {
        match self {
            SnapshotHandle::Snapshot { .. } => HandleKind::Snapshot,
            SnapshotHandle::Backup { .. } => HandleKind::Backup,
            SnapshotHandle::BackingImage(_) => HandleKind::BackingImage,
        }
    }
}

fn encode_path(kind: HandleKind, volume: &Name, id: &Name) -> String {
    format!(
        "{}://{}/{}",
        kind.scheme(),
        encode_path_part(volume.as_str()),
        encode_path_part(id.as_str())
    )
}

/// `rest` is what follows `<scheme>://`: exactly `<volume>/<id>`.
fn decode_path(scheme: PathScheme, handle: &str, rest: &str) -> Result<(Name, Name), DecodeError> {
    let (volume, after_volume) = match rest.split_once('/') {
        Some(split) => split,
        None if rest.is_empty() => return Err(DecodeError::EmptyVolume { scheme }),
        None => {
            return Err(DecodeError::MissingId {
                scheme,
                handle: snippet(handle),
            });
        }
    };
    let (id, extra) = match after_volume.find('/') {
        Some(at) => after_volume.split_at(at),
        None => (after_volume, ""),
    };
    if volume.is_empty() {
        return Err(DecodeError::EmptyVolume { scheme });
    }
    if id.is_empty() {
        return Err(DecodeError::EmptyId { scheme });
    }
    if !extra.is_empty() {
        return Err(DecodeError::ExtraPathSegments {
            scheme,
            extra: snippet(extra),
        });
    }
    let volume = decode_name(volume, "volume name")?;
    let id = decode_name(id, &format!("{} name", scheme.id_label()))?;
    Ok((volume, id))
}

fn decode_name(raw: &str, part: &str) -> Result<Name, DecodeError> {
    let text = unescape(raw, Plus::Literal).map_err(|e| match e {
        UnescapeError::BadEscape { offset } => DecodeError::InvalidPercentEncoding {
            part: part.to_owned(),
            offset,
        },
        UnescapeError::NotUtf8 => DecodeError::InvalidUtf8 {
            part: part.to_owned(),
        },
    })?;
    Name::new(text.as_ref()).map_err(|reason| invalid_name(part, &text, reason))
}

/// `rest` is what follows `bi://`: `backing` then optionally `?<query>`.
fn decode_backing_image(handle: &str, rest: &str) -> Result<BackingImageHandle, DecodeError> {
    if let Some(offset) = handle.find('#') {
        return Err(DecodeError::FragmentNotAllowed { offset });
    }
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    if host != HOST {
        return Err(DecodeError::BackingImageHost {
            found: snippet(host),
        });
    }
    BackingImageHandle::from_query_pairs(parse_query(query)?)
}

impl FromStr for SnapshotHandle {
    type Err = DecodeError;

    fn from_str(handle: &str) -> Result<Self, Self::Err> {
        Self::decode(handle)
    }
}

impl fmt::Display for SnapshotHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl From<BackingImageHandle> for SnapshotHandle {
    fn from(image: BackingImageHandle) -> Self {
        SnapshotHandle::BackingImage(image)
    }
}

impl TryFrom<&str> for SnapshotHandle {
    type Error = DecodeError;

    fn try_from(handle: &str) -> Result<Self, Self::Error> {
        Self::decode(handle)
    }
}
