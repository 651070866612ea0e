//! A directory that records each call's outcome and latency in the metrics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{Directory, DirectoryError, GroupId};
use crate::api::PimGroup;
use crate::api::common::Role;
use crate::core::membership::Member;
use crate::metrics::{DirectoryCallLabels, DirectoryOperationLabels, Metrics};

/// A directory that records each call's outcome and latency.
pub struct Instrumented {
    inner: Arc<dyn Directory>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn wrap(inner: Arc<dyn Directory>, metrics: Arc<Metrics>) -> Arc<dyn Directory> {
        Arc::new(Instrumented { inner, metrics })
    }

    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T, DirectoryError>) {
        let backend = self.inner.backend().to_owned();
        let outcome = match result {
            Ok(_) => "success",
            Err(e) if e.is_transient() => "transient_error",
            Err(_) => "permanent_error",
        };
        self.metrics
            .directory_calls
            .get_or_create(&DirectoryCallLabels {
                backend: backend.clone(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.metrics
            .directory_call_duration
            .get_or_create(&DirectoryOperationLabels {
                backend,
                operation: operation.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Directory for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ensure_group(&self, group: &PimGroup) -> Result<GroupId, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.ensure_group(group).await;
        self.record("ensure_group", started, &result);
        result
    }

    async fn list_members(
        &self,
        group: &GroupId,
        role: Role,
    ) -> Result<BTreeSet<Member>, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.list_members(group, role).await;
        self.record("list_members", started, &result);
        result
    }

    async fn add_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        let started = Instant::now();
        let result = self.inner.add_member(group, role, member).await;
        self.record("add_member", started, &result);
        result
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
    ) -> Result<(), DirectoryError> {
        let started = Instant::now();
        let result = self.inner.remove_member(group, role, member).await;
        self.record("remove_member", started, &result);
        result
    }

    async fn add_member_until(
        &self,
        group: &GroupId,
        role: Role,
        member: &Member,
        until: Option<jiff::Timestamp>,
    ) -> Result<Option<crate::directory::DirectoryReceipt>, DirectoryError> {
        let started = Instant::now();
        let result = self
            .inner
            .add_member_until(group, role, member, until)
            .await;
        self.record("add_member", started, &result);
        result
    }

    fn enforces_ends(&self) -> bool {
        self.inner.enforces_ends()
    }

    fn keeps_last_owner(&self) -> bool {
        self.inner.keeps_last_owner()
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
        let started = Instant::now();
        let result = self.inner.principal_id(member).await;
        self.record("principal_id", started, &result);
        result
    }

    async fn is_member_of(
        &self,
        principal: &str,
        group: &str,
    ) -> Result<Option<bool>, DirectoryError> {
        let started = Instant::now();
        let result = self.inner.is_member_of(principal, group).await;
        self.record("is_member_of", started, &result);
        result
    }
}
