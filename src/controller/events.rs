//! Kubernetes Events about our objects.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};

/// Kubernetes Events, through several recorders. A `Recorder` keeps the Events it published in
/// the last few minutes (to count repeats) and sweeps all of them on every publish; one shared
/// recorder made 10,000 transitions cost 10,000 sweeps of up to 10,000 Events. Each object
/// always goes to the same recorder, so repeats are still counted.
#[derive(Clone)]
pub struct Events {
    shards: Vec<Recorder>,
}

/// How many recorders [`Events`] spreads objects over.
const EVENT_SHARDS: usize = 64;

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Events {
            shards: (0..EVENT_SHARDS)
                .map(|_| Recorder::new(client.clone(), reporter.clone()))
                .collect(),
        }
    }

    /// Publishes `event` about the object `reference`, as [`Recorder::publish`].
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((
            &reference.namespace,
            &reference.name,
            &reference.uid,
        ));
        let shard = usize::try_from(hash % EVENT_SHARDS as u64).unwrap_or_default();
        match self.shards.get(shard) {
            Some(recorder) => recorder.publish(event, reference).await,
            None => Ok(()),
        }
    }
}
