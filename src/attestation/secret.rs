//! The attestation key kept in a Secret of the operator's namespace: made with a random key by
//! whichever replica starts first, then read by every replica, so all sign and verify with the
//! same key and a GitOps tool never renders (and so never rotates) it.
//!
//! Rotation: copy `key` to a `previous…` entry, then put a new `key` and restart the pods;
//! entries whose name starts with `previous` keep verifying.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use ring::rand::{SecureRandom, SystemRandom};

use super::{AttestationConfig, KeyError, Keyring};

/// Random bytes in a new key (sent as base64 text, so trimming never shortens it).
const NEW_KEY_BYTES: usize = 48;

/// The keyring for `config`: from files, from the Secret (made when absent), or `None` when
/// neither is configured.
pub async fn load(
    config: &AttestationConfig,
    client: &kube::Client,
    namespace: &str,
) -> Result<Option<Keyring>, KeyError> {
    let Some(name) = &config.secret else {
        return config.load();
    };
    let error = |message: String| KeyError::Secret {
        namespace: namespace.to_owned(),
        name: name.clone(),
        message,
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let stored = match api.get_opt(name).await.map_err(|e| error(e.to_string()))? {
        Some(stored) => stored,
        None => match api
            .create(&PostParams::default(), &new_secret(name, namespace)?)
            .await
        {
            Ok(created) => {
                tracing::info!(%namespace, secret = %name, "made a new attestation key");
                created
            }
            // Another replica made it first: use theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                api.get(name).await.map_err(|e| error(e.to_string()))?
            }
            Err(e) => return Err(error(e.to_string())),
        },
    };
    keyring_of(&stored).map(Some).map_err(|e| match e {
        KeyError::TooShort { len, .. } => error(format!(
            "`key` is {len} bytes; at least {} are required",
            super::MIN_KEY_BYTES
        )),
        other => other,
    })
}

fn new_secret(name: &str, namespace: &str) -> Result<Secret, KeyError> {
    let mut bytes = [0u8; NEW_KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Secret {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message: "no random numbers for a new key".to_owned(),
        })?;
    let key = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "pim-operator".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            "key".to_owned(),
            ByteString(key.into_bytes()),
        )])),
        ..Default::default()
    })
}

/// `key` signs; every `previous…` entry still verifies.
fn keyring_of(secret: &Secret) -> Result<Keyring, KeyError> {
    let data = secret.data.clone().unwrap_or_default();
    let key = data.get("key").map(|k| k.0.as_slice()).unwrap_or_default();
    let previous: Vec<&[u8]> = data
        .iter()
        .filter(|(name, _)| name.starts_with("previous"))
        .map(|(_, value)| value.0.as_slice())
        .collect();
    Keyring::from_bytes(key, &previous)
}
