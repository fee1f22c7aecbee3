//! From unescaped query pairs to a typed backing-image handle.

use super::keys;
use super::{
    BackingImageHandle, BackingImageSource, CloneEncryption, ExportType, ExtraParameters,
    SourceType,
};
use crate::error::{DecodeError, snippet};
use crate::name::{Name, NameError, ObjectName};
use crate::values::{BackupUrl, HttpUrl, Sha512Checksum, UrlError};

impl BackingImageHandle {
    /// Builds the handle from already unescaped, duplicate-free query pairs.
    pub(crate) fn from_query_pairs(pairs: Vec<(String, String)>) -> Result<Self, DecodeError> {
        let mut name = None;
        let mut source_type = None;
        let mut checksum = None;
        let mut source_parameters: Vec<(&'static str, String)> = Vec::new();
        let mut extra = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                keys::BACKING_IMAGE => name = Some(value),
                keys::DATA_SOURCE_TYPE => source_type = Some(value),
                keys::CHECKSUM => checksum = Some(value),
                other => match keys::RESERVED.iter().find(|reserved| **reserved == other) {
                    Some(reserved) => source_parameters.push((reserved, value)),
                    None => extra.push((key, value)),
                },
            }
        }

        let name = required(name, keys::BACKING_IMAGE, "backing image name")?;
        let name = ObjectName::new(name.as_str())
            .map_err(|reason| invalid_name("backingImage name", &name, reason))?;
        let source_type = required(
            source_type,
            keys::DATA_SOURCE_TYPE,
            "download, export-from-volume, upload, restore or clone",
        )?;
        let source_type =
            SourceType::parse(&source_type).ok_or_else(|| DecodeError::UnknownSourceType {
                found: snippet(&source_type),
            })?;
        let source = SourceParameters {
            source_type,
            parameters: source_parameters,
        }
        .into_source()?;
        let checksum = optional_checksum(checksum, keys::CHECKSUM)?;
        Ok(Self {
            name,
            source,
            checksum,
            extra: ExtraParameters(extra),
        })
    }
}

/// The source-specific parameters found in a query, consumed key by key.
struct SourceParameters {
    source_type: SourceType,
    parameters: Vec<(&'static str, String)>,
}

impl SourceParameters {
    fn into_source(mut self) -> Result<BackingImageSource, DecodeError> {
        let source_type = self.source_type;
        if let Some((key, _)) = self
            .parameters
            .iter()
            .find(|(key, _)| !source_type.parameter_keys().contains(key))
        {
            return Err(DecodeError::ParameterNotForSourceType { key, source_type });
        }
        Ok(match source_type {
            SourceType::Download => {
                let url = required(self.take(keys::URL), keys::URL, "http(s) URL")?;
                let url = HttpUrl::new(url.as_str())
                    .map_err(|reason| url_error(keys::URL, &url, reason))?;
                let checksum =
                    optional_checksum(self.take(keys::DOWNLOAD_CHECKSUM), keys::DOWNLOAD_CHECKSUM)?;
                BackingImageSource::Download { url, checksum }
            }
            SourceType::ExportFromVolume => {
                let volume_name = required(
                    self.take(keys::VOLUME_NAME),
                    keys::VOLUME_NAME,
                    "volume name",
                )?;
                let volume_name = Name::new(volume_name.as_str())
                    .map_err(|reason| invalid_name("volume-name", &volume_name, reason))?;
                let export_type = match optional(self.take(keys::EXPORT_TYPE)) {
                    None => ExportType::default(),
                    Some(text) => {
                        ExportType::parse(&text).ok_or_else(|| DecodeError::BadExportType {
                            found: snippet(&text),
                        })?
                    }
                };
                BackingImageSource::ExportFromVolume {
                    volume_name,
                    export_type,
                }
            }
            SourceType::Upload => BackingImageSource::Upload,
            SourceType::Restore => {
                let backup_url =
                    required(self.take(keys::BACKUP_URL), keys::BACKUP_URL, "backup URL")?;
                let backup_url = BackupUrl::new(backup_url.as_str())
                    .map_err(|reason| url_error(keys::BACKUP_URL, &backup_url, reason))?;
                let concurrent_limit = optional(self.take(keys::CONCURRENT_LIMIT))
                    .map(|text| {
                        text.parse::<u32>()
                            .map_err(|_| DecodeError::BadConcurrentLimit {
                                found: snippet(&text),
                            })
                    })
                    .transpose()?;
                BackingImageSource::Restore {
                    backup_url,
                    concurrent_limit,
                }
            }
            SourceType::Clone => {
                let backing_image = required(
                    self.take(keys::CLONE_BACKING_IMAGE),
                    keys::CLONE_BACKING_IMAGE,
                    "source backing image name",
                )?;
                let backing_image = ObjectName::new(backing_image.as_str())
                    .map_err(|reason| invalid_name("backing-image name", &backing_image, reason))?;
                let encryption = optional(self.take(keys::ENCRYPTION))
                    .map(|text| {
                        CloneEncryption::parse(&text).ok_or_else(|| DecodeError::BadEncryption {
                            found: snippet(&text),
                        })
                    })
                    .transpose()?;
                let secret = self.optional_object_name(keys::SECRET, "secret name")?;
                let secret_namespace =
                    self.optional_object_name(keys::SECRET_NAMESPACE, "secret-namespace")?;
                BackingImageSource::Clone {
                    backing_image,
                    encryption,
                    secret,
                    secret_namespace,
                }
            }
        })
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let index = self.parameters.iter().position(|(k, _)| *k == key)?;
        Some(self.parameters.remove(index).1)
    }

    fn optional_object_name(
        &mut self,
        key: &str,
        part: &str,
    ) -> Result<Option<ObjectName>, DecodeError> {
        optional(self.take(key))
            .map(|text| {
                ObjectName::new(text.as_str()).map_err(|reason| invalid_name(part, &text, reason))
            })
            .transpose()
    }
}

/// A required parameter: absent and empty are distinct errors.
fn required(
    value: Option<String>,
    key: &'static str,
    hint: &'static str,
) -> Result<String, DecodeError> {
    match value {
        None => Err(DecodeError::MissingParameter { key, hint }),
        Some(value) if value.is_empty() => Err(DecodeError::EmptyParameter { key, hint }),
        Some(value) => Ok(value),
    }
}

/// An optional checksum parameter.
fn optional_checksum(
    value: Option<String>,
    key: &'static str,
) -> Result<Option<Sha512Checksum>, DecodeError> {
    optional(value)
        .map(|hex| {
            Sha512Checksum::new(hex).map_err(|reason| DecodeError::BadChecksum { key, reason })
        })
        .transpose()
}

/// An optional parameter: empty counts as absent (Longhorn tests `== ""`).
fn optional(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

pub(crate) fn invalid_name(part: &str, value: &str, reason: NameError) -> DecodeError {
    DecodeError::InvalidName {
        part: part.to_owned(),
        value: snippet(value),
        reason,
    }
}

fn url_error(key: &'static str, value: &str, reason: UrlError) -> DecodeError {
    match reason {
        UrlError::NotHttp { .. } => DecodeError::NonHttpUrl {
            key,
            value: snippet(value),
            reason,
        },
        _ => DecodeError::InvalidUrl {
            key,
            value: snippet(value),
            reason,
        },
    }
}
