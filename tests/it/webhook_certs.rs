//! Issue 18 finding 7: the self-made webhook certificate is a CA of a few years and a serving
//! certificate of one year, renewed by the running operator at the clock's time, against the
//! fake API server: the Secret and the webhook configurations' caBundle follow, and during a CA
//! rollover the bundle keeps the old CA so the certificate still served stays trusted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use pim_operator::webhook::SelfSigned;
use pim_operator::webhook::certs::{self, CA_LIFETIME, LEAF_LIFETIME, ServingCert};
use pim_testkit::fake_apiserver::FakeApiServer;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

const NAMESPACE: &str = "pim-system";
const HOST: &str = "pim-operator-webhook.pim-system.svc";

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// Whether a client trusting exactly `bundle` accepts `cert_pem` for the webhook at `now`, as
/// the API server checks it (rustls' WebPKI verifier).
fn trusted(bundle: &[u8], cert_pem: &[u8], now: Timestamp) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(bundle) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let leaf = CertificateDer::from_pem_slice(cert_pem).unwrap();
    let at = UnixTime::since_unix_epoch(Duration::from_secs(now.as_second().cast_unsigned()));
    verifier
        .verify_server_cert(&leaf, &[], &ServerName::try_from(HOST).unwrap(), &[], at)
        .is_ok()
}

/// The CA certificates of a bundle, each as its (start, end).
fn bundle_validities(bundle: &[u8]) -> Vec<(i64, i64)> {
    CertificateDer::pem_slice_iter(bundle)
        .map(|der| {
            let der = der.unwrap();
            let pem = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                base64_lines(&der)
            );
            certs::validity(pem.as_bytes()).unwrap()
        })
        .collect()
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    text.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn bundles(client: &kube::Client) -> (Vec<u8>, Vec<u8>) {
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let m = mutating
        .get("pim-operator")
        .await
        .unwrap()
        .webhooks
        .unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap_or_default()
        .0;
    let v = validating
        .get("pim-operator")
        .await
        .unwrap()
        .webhooks
        .unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap_or_default()
        .0;
    (m, v)
}

async fn setup(client: &kube::Client) {
    let pp = PostParams::default();
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = Api::<Namespace>::all(client.clone())
        .create(&pp, &namespace)
        .await;
    let client_config = WebhookClientConfig::default();
    let mutating = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("pim-operator".to_owned()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "mutate.pim.dev".to_owned(),
            client_config: client_config.clone(),
            admission_review_versions: vec!["v1".to_owned()],
            side_effects: "None".to_owned(),
            ..Default::default()
        }]),
    };
    let validating = ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("pim-operator".to_owned()),
            ..Default::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: "validate.pim.dev".to_owned(),
            client_config,
            admission_review_versions: vec!["v1".to_owned()],
            side_effects: "None".to_owned(),
            ..Default::default()
        }]),
    };
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &mutating)
        .await
        .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &validating)
        .await
        .unwrap();
}

async fn stored(client: &kube::Client) -> Secret {
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get("pim-operator-webhook-tls")
        .await
        .unwrap()
}

fn lifetime((start, end): (i64, i64)) -> i64 {
    end - start
}

#[tokio::test]
async fn the_self_signed_certificate_is_renewed_before_it_ends() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client();
    setup(&client).await;
    let settings = SelfSigned::default();
    let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    let at = |d: i64| t0 + days(d);
    let check = async |now: Timestamp| -> ServingCert {
        certs::shared_self_signed(&client, NAMESPACE, &settings, now)
            .await
            .unwrap()
    };

    // Made at start: a CA of CA_LIFETIME and a serving certificate of LEAF_LIFETIME, an hour
    // back-dated, written into the Secret and (by the webhook's start) into the caBundle.
    let first = check(t0).await;
    let ca = certs::validity(first.ca_pem.as_ref().unwrap()).unwrap();
    let leaf = certs::validity(&first.cert_pem).unwrap();
    let hour = 3_600;
    assert_eq!(
        ca,
        (
            t0.as_second() - hour,
            t0.as_second() + CA_LIFETIME.as_secs() as i64
        )
    );
    assert_eq!(
        leaf,
        (
            t0.as_second() - hour,
            t0.as_second() + LEAF_LIFETIME.as_secs() as i64
        )
    );
    assert!(
        (3 * 365 * 86_400..=10 * 365 * 86_400).contains(&lifetime(ca)),
        "a CA of a few years: {ca:?}"
    );
    assert!(lifetime(leaf) <= 366 * 86_400 + hour, "a year: {leaf:?}");
    certs::inject_ca_bundle(&client, &settings, first.ca_pem.as_ref().unwrap())
        .await
        .unwrap();
    assert!(trusted(first.ca_pem.as_ref().unwrap(), &first.cert_pem, t0));
    assert!(stored(&client).await.data.unwrap().contains_key("ca.key"));

    // Two thirds into its year the certificate stays; after that it is renewed by the same CA.
    assert_eq!(check(at(240)).await, first, "renewed too early");
    let second = check(at(250)).await;
    assert_ne!(
        second.cert_pem, first.cert_pem,
        "not renewed in its last third"
    );
    assert_eq!(second.ca_pem, first.ca_pem, "a leaf renewal keeps the CA");
    assert_eq!(
        certs::validity(&second.cert_pem).unwrap().1,
        at(250).as_second() + LEAF_LIFETIME.as_secs() as i64
    );
    assert_eq!(
        stored(&client).await.data.unwrap()["tls.crt"].0,
        second.cert_pem,
        "the Secret holds the renewal, for the other replicas"
    );
    assert!(trusted(
        first.ca_pem.as_ref().unwrap(),
        &second.cert_pem,
        at(250)
    ));
    // A replica reading the Secret later gets the same certificate.
    assert_eq!(check(at(251)).await, second);

    // Just before the CA's last third: a new leaf from the old CA.
    let third = check(at(1200)).await;
    assert_eq!(third.ca_pem, first.ca_pem);
    // In its last third the CA rolls over: the bundle has the new CA first and the old one,
    // in the Secret and in both webhook configurations, before any replica serves the new
    // certificate; the certificate other replicas still serve stays trusted.
    let rolled = check(at(1220)).await;
    let bundle = rolled.ca_pem.clone().unwrap();
    let cas = bundle_validities(&bundle);
    assert_eq!(cas.len(), 2, "new and old CA in the bundle");
    assert_eq!(
        cas[0].1,
        at(1220).as_second() + CA_LIFETIME.as_secs() as i64
    );
    assert_eq!(cas[1], ca, "the old CA stays during the rollover");
    assert_eq!(bundles(&client).await, (bundle.clone(), bundle.clone()));
    assert!(trusted(&bundle, &rolled.cert_pem, at(1220)));
    assert!(
        trusted(&bundle, &third.cert_pem, at(1220)),
        "the certificate signed by the old CA is still trusted"
    );
    assert!(
        !trusted(first.ca_pem.as_ref().unwrap(), &rolled.cert_pem, at(1220)),
        "the new certificate is signed by the new CA"
    );

    // Once the old CA has ended, the next renewal drops it from the bundle.
    let later = check(at(1220 + 250)).await;
    assert_eq!(bundle_validities(later.ca_pem.as_ref().unwrap()).len(), 2);
    let after_old_ca = check(at(1220 + 500)).await;
    assert_ne!(after_old_ca.cert_pem, later.cert_pem);
    assert_eq!(
        bundle_validities(after_old_ca.ca_pem.as_ref().unwrap()).len(),
        2,
        "the old CA (ends day 1825) is still valid on day 1720"
    );
    let after = check(at(1220 + 750)).await;
    assert_eq!(
        bundle_validities(after.ca_pem.as_ref().unwrap()),
        vec![cas[0]],
        "an ended CA leaves the bundle"
    );
    assert!(trusted(
        after.ca_pem.as_ref().unwrap(),
        &after.cert_pem,
        at(1970)
    ));
}

#[tokio::test]
async fn a_secret_without_the_ca_key_from_an_older_version_gets_a_new_ca() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client();
    setup(&client).await;
    let settings = SelfSigned::default();
    let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    let old = ServingCert::generate(&certs::service_names("pim-operator-webhook", NAMESPACE), t0)
        .unwrap();
    let mut data = std::collections::BTreeMap::new();
    for (key, value) in [
        ("tls.crt", &old.cert_pem),
        ("tls.key", &old.key_pem),
        ("ca.crt", old.ca_pem.as_ref().unwrap()),
    ] {
        data.insert(key.to_owned(), k8s_openapi::ByteString(value.clone()));
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(settings.secret.clone()),
            namespace: Some(NAMESPACE.to_owned()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let now = t0 + days(1);
    let renewed = certs::shared_self_signed(&client, NAMESPACE, &settings, now)
        .await
        .unwrap();
    let bundle = renewed.ca_pem.clone().unwrap();
    assert_eq!(bundle_validities(&bundle).len(), 2);
    assert!(trusted(&bundle, &old.cert_pem, now));
    assert!(trusted(&bundle, &renewed.cert_pem, now));
    assert!(stored(&client).await.data.unwrap().contains_key("ca.key"));
}
