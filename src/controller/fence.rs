//! Fencing a leader that can no longer renew its lease (DESIGN §8): once a lease duration has
//! passed, by this process's own monotonic clock, since its last successful renewal, another
//! replica may hold the lease and be revoking, so this one starts no more directory writes until
//! it renews again (issue 14, finding 6).
//!
//! Three parts:
//! - [`LeaseFence`] remembers when the lease was last renewed and says whether writes may start;
//! - [`observed_client`] is the kube client given to the lease manager, and tells the fence of
//!   each renewal;
//! - [`Fenced`] wraps a [`Directory`] and refuses writes while the fence is closed.
//!
//! # How renewals are learned
//! kube-lease-manager 0.13 reports only changes of leadership: `LeaseManager::watch` (and
//! `changed`, below it) renews the lease inside its own loop and says nothing when a renewal
//! succeeds; when one fails it logs, backs off and tries again, while the channel keeps saying
//! "leading". Nothing in its public API tells a renewal apart from silence. Every renewal is,
//! however, a PATCH of our Lease through the client we hand it, so that client is the one place
//! to watch: [`observed_client`] passes every request through unchanged, and when a PATCH of our
//! Lease is accepted and the Lease it returns names us as holder (a renewal, or the acquisition
//! itself; never a release, nor a patch that raced another holder), it dates the renewal at the
//! instant the PATCH was sent. The library stamps `renewTime` just before sending, and other
//! replicas count the lease from `renewTime`, so the fence never outlives the lease as they see
//! it by more than the clock skew the lease's grace period is there to absorb.
//!
//! A replica that takes over a lease it already holds (a restarted container under the same
//! `POD_NAME`) leads without a PATCH: it stays fenced until its first renewal, less than a lease
//! duration later. Directory writes refused meanwhile are transient errors, retried.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use tokio::time::Instant;

use crate::api::PimGroup;
use crate::api::common::Role;
use crate::core::membership::Member;
use crate::directory::{Directories, Directory, DirectoryError, DirectoryReceipt, GroupId};

/// Whether this replica may start directory writes: only within a lease duration of its last
/// successful lease renewal, measured on the monotonic clock (tokio's, so tests can pause it).
#[derive(Debug)]
pub struct LeaseFence {
    lease_duration: Duration,
    /// When the fence was made; stands for the last renewal until there is one.
    created: Instant,
    last_renewal: Mutex<Option<Instant>>,
}

impl LeaseFence {
    /// A fence for a lease of `lease_duration`; closed until the first renewal.
    pub fn new(lease_duration: Duration) -> Self {
        LeaseFence {
            lease_duration,
            created: Instant::now(),
            last_renewal: Mutex::new(None),
        }
    }

    /// The lease was renewed just now.
    pub fn renewed(&self) {
        self.renewed_at(Instant::now());
    }

    /// The lease was renewed by a write sent at `sent`. An older renewal than the last one
    /// known changes nothing.
    pub fn renewed_at(&self, sent: Instant) {
        let mut last = self
            .last_renewal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_none_or(|l| l < sent) {
            *last = Some(sent);
        }
    }

    /// Whether directory writes may start now.
    pub fn is_open(&self) -> bool {
        self.last_renewal().is_some_and(|last| {
            Instant::now().saturating_duration_since(last) < self.lease_duration
        })
    }

    /// `Err` (transient) while the fence is closed, naming how long the lease went unrenewed.
    pub fn check(&self, operation: &'static str) -> Result<(), DirectoryError> {
        if self.is_open() {
            return Ok(());
        }
        let since = self.last_renewal().unwrap_or(self.created);
        let unrenewed = Instant::now().saturating_duration_since(since);
        Err(DirectoryError::transient(
            operation,
            format!("fenced: lease not renewed for {}s", unrenewed.as_secs()),
        ))
    }

    fn last_renewal(&self) -> Option<Instant> {
        *self
            .last_renewal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A client for the lease manager: `client`, telling `fence` of every renewal of the Lease
/// `namespace/name` held by `identity` (see the module documentation).
pub fn observed_client(
    client: kube::Client,
    fence: Arc<LeaseFence>,
    namespace: &str,
    name: &str,
    identity: &str,
) -> kube::Client {
    let default_namespace = client.default_namespace().to_owned();
    let observer = RenewalObserver {
        inner: client,
        path: format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}").into(),
        identity: identity.into(),
        fence,
    };
    kube::Client::new(observer, default_namespace)
}

#[derive(Clone)]
struct RenewalObserver {
    inner: kube::Client,
    path: Arc<str>,
    identity: Arc<str>,
    fence: Arc<LeaseFence>,
}

impl tower_service::Service<http::Request<Body>> for RenewalObserver {
    type Response = http::Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        // The inner client buffers and waits for readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let patch_of_lease =
                request.method() == http::Method::PATCH && request.uri().path() == &*this.path;
            let sent = Instant::now();
            let response = this.inner.send(request).await?;
            if !patch_of_lease || !response.status().is_success() {
                return Ok(response);
            }
            // A Lease is small: read it whole, look at its holder, and pass it on.
            let (parts, body) = response.into_parts();
            let bytes = body.collect_bytes().await?;
            let holder = serde_json::from_slice::<Lease>(&bytes)
                .ok()
                .and_then(|lease| lease.spec)
                .and_then(|spec| spec.holder_identity);
            if holder.as_deref() == Some(&*this.identity) {
                this.fence.renewed_at(sent);
            }
            Ok(http::Response::from_parts(parts, Body::from(bytes)))
        })
    }
}

/// A directory that starts writes only while `fence` is open. Reads, and everything answered
/// from what the directory already said, pass through.
pub struct Fenced {
    inner: Arc<dyn Directory>,
    fence: Arc<LeaseFence>,
}

impl Fenced {
    pub fn wrap(inner: Arc<dyn Directory>, fence: Arc<LeaseFence>) -> Arc<dyn Directory> {
        Arc::new(Fenced { inner, fence })
    }

    /// Every directory of `directories`, fenced by `fence`.
    pub fn wrap_all(directories: &Directories, fence: &Arc<LeaseFence>) -> Directories {
        let mut fenced = Directories::default();
        for name in directories.names() {
            if let Some(directory) = directories.get(name) {
                fenced.insert(name, Fenced::wrap(directory, fence.clone()));
            }
        }
        fenced
    }
}

#[async_trait]
impl Directory for Fenced {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    /// Fenced like a write: it creates the group when the spec asks (`create: true`), and the
    /// kubernetes backend prunes the bindings the group no longer confers. A fenced replica has
    /// no directory work left that could use its answer.
    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError> {
        self.fence.check("resolve group")?;
        self.inner.ensure_group(group).await
    }

    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        self.inner.list_members(group, role).await
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        self.fence.check("add member")?;
        self.inner.add_member(group, role, member).await
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        self.fence.check("remove member")?;
        self.inner.remove_member(group, role, member).await
    }

    async fn add_member_until(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<jiff::Timestamp>,
    ) -> Result<Option<DirectoryReceipt>, DirectoryError> {
        self.fence.check("add member")?;
        self.inner
            .add_member_until(group, role, member, until)
            .await
    }

    fn enforces_ends(&self) -> bool {
        self.inner.enforces_ends()
    }

    fn needs_new_end(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<jiff::Timestamp>,
    ) -> bool {
        self.inner.needs_new_end(group, role, member, until)
    }

    fn listed_as(&self, member: &Member) -> Option<Member> {
        self.inner.listed_as(member)
    }

    async fn principal_id(&self, member: &Member) -> Result<Option<String>, DirectoryError> {
        self.inner.principal_id(member).await
    }

    async fn is_member_of(
        &self,
        principal: &str,
        group: &str,
    ) -> Result<Option<bool>, DirectoryError> {
        self.inner.is_member_of(principal, group).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pim_group::{DirectoryGroupRef, PimGroupSpec};
    use crate::directory::memory::MemoryDirectory;

    const LEASE: Duration = Duration::from_secs(15);

    // issue 14 finding 6: a leader stops starting directory writes a lease duration after its
    // last renewal, by its own monotonic clock, and resumes once it renews.
    #[tokio::test(start_paused = true)]
    async fn issue_14_finding_6_fence_closes_a_lease_duration_after_the_last_renewal() {
        let fence = LeaseFence::new(LEASE);
        assert!(!fence.is_open(), "closed until the first renewal");
        fence.renewed();
        assert!(fence.is_open());
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(fence.is_open());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!fence.is_open(), "a full lease duration without renewal");
        let refused = fence.check("add member").unwrap_err();
        assert!(refused.is_transient());
        assert_eq!(
            refused.to_string(),
            "add member: fenced: lease not renewed for 15s (will retry)"
        );
        fence.renewed();
        assert!(fence.is_open(), "open again once renewed");
        assert!(fence.check("add member").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn issue_14_finding_6_fence_dates_a_renewal_when_it_was_sent() {
        let fence = LeaseFence::new(LEASE);
        let sent = Instant::now();
        tokio::time::advance(Duration::from_secs(10)).await;
        // The answer came 10s after the PATCH was sent: the lease counts from the sending.
        fence.renewed_at(sent);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!fence.is_open());
        // A late report of an older renewal does not move the last one back.
        fence.renewed();
        fence.renewed_at(sent);
        assert!(fence.is_open());
        assert_eq!(
            fence.check("x").map_err(|e| e.to_string()),
            Ok(()),
            "still open"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn issue_14_finding_6_never_renewed_reports_time_since_start() {
        let fence = LeaseFence::new(LEASE);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            fence.check("remove member").unwrap_err().to_string(),
            "remove member: fenced: lease not renewed for 3s (will retry)"
        );
    }

    fn pim_group(name: &str) -> PimGroup {
        PimGroup::new(
            name,
            PimGroupSpec {
                directory: "memory".into(),
                group: DirectoryGroupRef {
                    id: Some(format!("{name}-id")),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    // issue 14 finding 6: the wrapper refuses writes while the fence is closed, and lets reads
    // through.
    #[tokio::test(start_paused = true)]
    async fn issue_14_finding_6_fenced_directory_refuses_writes_and_allows_reads() {
        let memory = Arc::new(MemoryDirectory::new());
        let fence = Arc::new(LeaseFence::new(LEASE));
        fence.renewed();
        let mut directories = Directories::default();
        directories.insert("memory", memory.clone() as Arc<dyn Directory>);
        let fenced = Fenced::wrap_all(&directories, &fence);
        let directory = fenced.get("memory").unwrap();
        assert_eq!(directory.backend(), "memory");

        let group = directory.ensure_group(&pim_group("g")).await.unwrap();
        let alice = Member::User("alice".into());
        let bob = Member::User("bob".into());
        directory
            .add_member(&group, Role::Member, &alice)
            .await
            .unwrap();

        tokio::time::advance(LEASE).await;
        let refused = [
            directory.add_member(&group, Role::Member, &bob).await.err(),
            directory
                .add_member_until(&group, Role::Member, &bob, None)
                .await
                .err(),
            directory
                .remove_member(&group, Role::Member, &alice)
                .await
                .err(),
            directory.ensure_group(&pim_group("g2")).await.err(),
        ];
        for error in refused {
            let error = error.expect("refused while fenced");
            assert!(error.is_transient(), "{error}");
            assert!(
                error
                    .to_string()
                    .contains("fenced: lease not renewed for 15s"),
                "{error}"
            );
        }
        // Reads still answer, and nothing reached the directory.
        let members = directory.list_members(&group, Role::Member).await.unwrap();
        assert_eq!(members, BTreeSet::from([alice.clone()]));
        assert_eq!(directory.principal_id(&alice).await, Ok(None));
        assert_eq!(
            memory.writes().len(),
            1,
            "only the add before the fence closed"
        );

        fence.renewed();
        directory
            .add_member(&group, Role::Member, &bob)
            .await
            .unwrap();
        assert_eq!(
            directory.list_members(&group, Role::Member).await.unwrap(),
            BTreeSet::from([alice, bob])
        );
    }
}
