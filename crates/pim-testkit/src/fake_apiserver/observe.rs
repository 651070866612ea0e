//! What tests can observe: request counts by verb and resource, and a log of every write
//! attempt (who wrote what, through which subresource, and whether it changed anything).

use std::collections::BTreeMap;
use std::fmt;

/// The Kubernetes verb of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    /// Whether the verb writes (create, update, patch, delete, deletecollection).
    pub fn is_write(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One write request, as the server saw and answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub verb: Verb,
    /// Resource plural, e.g. `activationrequests`.
    pub resource: String,
    pub namespace: Option<String>,
    /// The object's name (for a create, the name it got); `None` for deletecollection.
    pub name: Option<String>,
    /// `fieldManager` of the request, if it gave one.
    pub field_manager: Option<String>,
    /// `Some("status")` for writes through the status subresource.
    pub subresource: Option<String>,
    /// The PATCH content type (e.g. `application/apply-patch+yaml`).
    pub patch_type: Option<String>,
    /// The HTTP status code answered.
    pub code: u16,
    /// Whether the store changed (a no-op patch or a rejected write did not).
    pub changed: bool,
}

impl WriteRecord {
    /// `MANAGER VERB RESOURCE[/SUBRESOURCE]`, e.g. `pim-operator Patch activationrequests/status`
    /// (`-` for no field manager): how the load harness counts writes.
    pub fn label(&self) -> String {
        format!(
            "{} {:?} {}{}",
            self.field_manager.as_deref().unwrap_or("-"),
            self.verb,
            self.resource,
            self.subresource
                .as_deref()
                .map_or(String::new(), |s| format!("/{s}"))
        )
    }

    /// Whether the write went through `/status`.
    pub fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }
}

/// Request counts, by verb and resource plural (discovery requests are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    counts: BTreeMap<(Verb, String), u64>,
}

impl RequestCounts {
    pub(crate) fn add(&mut self, verb: Verb, resource: &str) {
        *self.counts.entry((verb, resource.to_string())).or_default() += 1;
    }

    /// Requests with this verb, any resource.
    pub fn verb(&self, verb: Verb) -> u64 {
        self.counts
            .iter()
            .filter(|((v, _), _)| *v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests with this verb on this resource (plural).
    pub fn get(&self, verb: Verb, resource: &str) -> u64 {
        self.counts
            .get(&(verb, resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All requests on this resource.
    pub fn resource(&self, resource: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((_, r), _)| r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    /// All write requests (create, update, patch, delete, deletecollection).
    pub fn writes(&self) -> u64 {
        self.counts
            .iter()
            .filter(|((v, _), _)| v.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Counters and the write log, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    pub counts: RequestCounts,
    pub writes: Vec<WriteRecord>,
    pub discovery: u64,
}
