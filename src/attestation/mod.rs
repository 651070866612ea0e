//! Where the attestation keys come from: files, or a Secret the operator makes (`secret`). The
//! keyring itself, and what it signs, is `pim_core::attestation`.

use std::path::{Path, PathBuf};

pub use pim_core::attestation::*;

pub mod secret;

/// Where the attestation keys are: files (a Secret you manage, mounted), or a Secret in the
/// operator's namespace that the operator makes on first start and every replica then reads
/// (`secret`). Without either the webhook refuses requests and the controller grants nothing,
/// saying why.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationConfig {
    /// The signing key, e.g. a mounted Secret's file. At least 32 bytes.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Keys that still verify during a rotation, but no longer sign.
    #[serde(default)]
    pub previous_key_files: Vec<PathBuf>,
    /// A Secret in the operator's namespace holding the key under `key` (and keys that still
    /// verify under `previous*`), made with a random key when absent. Not with `keyFile`.
    #[serde(default)]
    pub secret: Option<String>,
}

impl AttestationConfig {
    /// What is wrong with the settings, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.key_file.is_some() && self.secret.is_some() {
            return Err("keyFile and secret: set one, not both".to_owned());
        }
        if self.secret.is_none() && self.key_file.is_none() && !self.previous_key_files.is_empty() {
            return Err("previousKeyFiles: needs keyFile".to_owned());
        }
        if let Some(name) = &self.secret {
            let valid = !name.is_empty()
                && name.len() <= crate::api::common::OBJECT_NAME_MAX
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !valid {
                return Err(format!(
                    "secret: {name:?} is not a Secret name (lowercase letters, digits, '-' and '.')"
                ));
            }
        }
        Ok(())
    }

    /// The keyring from files, or `None` when no key file is configured (see
    /// [`secret::load`] for the `secret` form).
    pub fn load(&self) -> Result<Option<Keyring>, KeyError> {
        match &self.key_file {
            Some(path) => keyring_from_files(path, &self.previous_key_files).map(Some),
            None => Ok(None),
        }
    }
}

/// Reads the signing key and any previous keys from files (a mounted Secret).
pub fn keyring_from_files(signing: &Path, previous: &[PathBuf]) -> Result<Keyring, KeyError> {
    let read = |path: &Path| -> Result<Vec<u8>, KeyError> {
        std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let signing_bytes = read(signing)?;
    let previous_bytes: Vec<(Vec<u8>, &Path)> = previous
        .iter()
        .map(|p| Ok((read(p)?, p.as_path())))
        .collect::<Result<_, KeyError>>()?;
    let previous_refs: Vec<(&[u8], &Path)> = previous_bytes
        .iter()
        .map(|(bytes, path)| (bytes.as_slice(), *path))
        .collect();
    Keyring::from_sources((&signing_bytes, signing), &previous_refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_missing_key_files_say_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let err = keyring_from_files(&short, &[]).unwrap_err().to_string();
        assert!(
            err.contains("short") && err.contains("at least 32"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = keyring_from_files(&missing, &[]).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", "k".repeat(40))).unwrap();
        let ring = keyring_from_files(&good, &[]).unwrap();
        // The trailing newline is not part of the key.
        let same = Keyring::from_bytes("k".repeat(40).as_bytes(), &[]).unwrap();
        assert_eq!(ring.signing_key_id(), same.signing_key_id());
        assert!(
            !format!("{ring:?}").contains("kkkk"),
            "Debug redacts the key"
        );
    }
}
