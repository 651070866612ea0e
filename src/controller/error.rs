//! Controller errors, with a small category used as the metric label, and whether waiting for
//! a change (permanent) or backing off (transient) is the cure.

use crate::directory::DirectoryError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("{0}")]
    Serialization(#[from] serde_json::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::Directory(e) if e.is_transient() => "directory_transient",
            Error::Directory(_) => "directory_permanent",
            Error::Serialization(_) => "serialization",
        }
    }

    /// How long to wait before trying again.
    pub fn backoff(&self) -> std::time::Duration {
        use std::time::Duration;
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => Duration::from_millis(200),
            Error::Directory(DirectoryError::Transient {
                retry_after: Some(after),
                ..
            }) => *after,
            Error::Directory(DirectoryError::Permanent { .. }) => Duration::from_secs(60),
            _ => Duration::from_secs(2),
        }
    }
}
