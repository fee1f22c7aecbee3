//! Source types of backing images and their typed parameters.

use std::fmt;

use super::keys;
use crate::name::{Name, ObjectName};
use crate::values::{BackupUrl, HttpUrl, Sha512Checksum};

/// The kind of source a backing image is filled from (`backingImageDataSourceType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceType {
    /// `download`
    Download,
    /// `export-from-volume`
    ExportFromVolume,
    /// `upload`
    Upload,
    /// `restore`
    Restore,
    /// `clone`
    Clone,
}

impl SourceType {
    /// Every source type.
    pub const ALL: [SourceType; 5] = [
        SourceType::Download,
        SourceType::ExportFromVolume,
        SourceType::Upload,
        SourceType::Restore,
        SourceType::Clone,
    ];

    /// The spelling in handles.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Download => "download",
            SourceType::ExportFromVolume => "export-from-volume",
            SourceType::Upload => "upload",
            SourceType::Restore => "restore",
            SourceType::Clone => "clone",
        }
    }

    /// Parses the spelling in handles (exact, lowercase).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// The source-specific parameter keys of this type, in encoding order.
    pub fn parameter_keys(self) -> &'static [&'static str] {
        match self {
            SourceType::Download => &[keys::URL, keys::DOWNLOAD_CHECKSUM],
            // Longhorn's encoder writes export-type before volume-name; we keep its order.
            SourceType::ExportFromVolume => &[keys::EXPORT_TYPE, keys::VOLUME_NAME],
            SourceType::Upload => &[],
            SourceType::Restore => &[keys::BACKUP_URL, keys::CONCURRENT_LIMIT],
            SourceType::Clone => &[
                keys::CLONE_BACKING_IMAGE,
                keys::ENCRYPTION,
                keys::SECRET,
                keys::SECRET_NAMESPACE,
            ],
        }
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Image format of an `export-from-volume` backing image (`export-type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExportType {
    /// `raw` (the default when `export-type` is absent or empty).
    #[default]
    Raw,
    /// `qcow2`
    Qcow2,
}

impl ExportType {
    /// The spelling in handles and class parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportType::Raw => "raw",
            ExportType::Qcow2 => "qcow2",
        }
    }

    /// Parses `raw` or `qcow2` (exact, lowercase; an empty string is *not* accepted here).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "raw" => Some(ExportType::Raw),
            "qcow2" => Some(ExportType::Qcow2),
            _ => None,
        }
    }
}

impl fmt::Display for ExportType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `clone` does with encryption (`encryption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloneEncryption {
    /// `encrypt`
    Encrypt,
    /// `decrypt`
    Decrypt,
    /// `ignore`
    Ignore,
}

impl CloneEncryption {
    /// The spelling in handles.
    pub fn as_str(self) -> &'static str {
        match self {
            CloneEncryption::Encrypt => "encrypt",
            CloneEncryption::Decrypt => "decrypt",
            CloneEncryption::Ignore => "ignore",
        }
    }

    /// Parses the spelling in handles.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "encrypt" => Some(CloneEncryption::Encrypt),
            "decrypt" => Some(CloneEncryption::Decrypt),
            "ignore" => Some(CloneEncryption::Ignore),
            _ => None,
        }
    }
}

/// Where a backing image's data comes from, with that source's parameters.
///
/// Optional parameters given with an empty value count as absent, as in Longhorn (which tests `== ""`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackingImageSource {
    /// `backingImageDataSourceType=download&url=<http(s) URL>[&checksum=<sha512>]`
    Download {
        /// `url`
        url: HttpUrl,
        /// `checksum`
        checksum: Option<Sha512Checksum>,
    },
    /// `backingImageDataSourceType=export-from-volume&export-type=<raw|qcow2>&volume-name=<volume>`
    ExportFromVolume {
        /// `volume-name`
        volume_name: Name,
        /// `export-type` (absent or empty means raw)
        export_type: ExportType,
    },
    /// `backingImageDataSourceType=upload`
    Upload,
    /// `backingImageDataSourceType=restore&backup-url=<url>[&concurrent-limit=<n>]`
    Restore {
        /// `backup-url`
        backup_url: BackupUrl,
        /// `concurrent-limit`
        concurrent_limit: Option<u32>,
    },
    /// `backingImageDataSourceType=clone&backing-image=<name>[&encryption=..][&secret=..][&secret-namespace=..]`
    Clone {
        /// `backing-image`: the image cloned from.
        backing_image: ObjectName,
        /// `encryption`
        encryption: Option<CloneEncryption>,
        /// `secret`
        secret: Option<ObjectName>,
        /// `secret-namespace`
        secret_namespace: Option<ObjectName>,
    },
}

impl BackingImageSource {
    /// The source type.
    pub fn source_type(&self) -> SourceType {
        match self {
            BackingImageSource::Download { .. } => SourceType::Download,
            BackingImageSource::ExportFromVolume { .. } => SourceType::ExportFromVolume,
            BackingImageSource::Upload => SourceType::Upload,
            BackingImageSource::Restore { .. } => SourceType::Restore,
            BackingImageSource::Clone { .. } => SourceType::Clone,
        }
    }

    /// The source parameters as `(key, value)` in encoding order, absent optionals left out.
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self {
            BackingImageSource::Download { url, checksum } => {
                out.push((keys::URL, url.as_str().to_owned()));
                if let Some(checksum) = checksum {
                    out.push((keys::DOWNLOAD_CHECKSUM, checksum.as_str().to_owned()));
                }
            }
            BackingImageSource::ExportFromVolume {
                volume_name,
                export_type,
            } => {
                out.push((keys::EXPORT_TYPE, export_type.as_str().to_owned()));
                out.push((keys::VOLUME_NAME, volume_name.as_str().to_owned()));
            }
            BackingImageSource::Upload => {}
            BackingImageSource::Restore {
                backup_url,
                concurrent_limit,
            } => {
                out.push((keys::BACKUP_URL, backup_url.as_str().to_owned()));
                if let Some(limit) = concurrent_limit {
                    out.push((keys::CONCURRENT_LIMIT, limit.to_string()));
                }
            }
            BackingImageSource::Clone {
                backing_image,
                encryption,
                secret,
                secret_namespace,
            } => {
                out.push((keys::CLONE_BACKING_IMAGE, backing_image.as_str().to_owned()));
                if let Some(encryption) = encryption {
                    out.push((keys::ENCRYPTION, encryption.as_str().to_owned()));
                }
                if let Some(secret) = secret {
                    out.push((keys::SECRET, secret.as_str().to_owned()));
                }
                if let Some(namespace) = secret_namespace {
                    out.push((keys::SECRET_NAMESPACE, namespace.as_str().to_owned()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_key_is_reserved_and_belongs_to_one_type() {
        for key in SourceType::ALL.iter().flat_map(|t| t.parameter_keys()) {
            assert!(keys::RESERVED.contains(key), "{key}");
            let owners = SourceType::ALL
                .iter()
                .filter(|t| t.parameter_keys().contains(key))
                .count();
            assert_eq!(owners, 1, "{key}");
        }
        for source_type in SourceType::ALL {
            assert_eq!(SourceType::parse(source_type.as_str()), Some(source_type));
        }
    }
}
