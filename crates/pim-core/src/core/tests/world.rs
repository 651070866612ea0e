//! A small test harness: one request, the facts around it, and a virtual clock.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::activation_request::{
    ActivationRequestSpec, ActivationRequestStatus, Decision as Vote, Phase, Requester,
};
use crate::api::common::PrincipalRef;
use crate::core::eligibility::Eligibility;
use crate::core::lifecycle::{
    Attestation, Decision, Facts, RequestView, Target, VerifiedApproval, decide,
};
use crate::core::policy::{ApprovalRules, Policy};
use crate::core::status::request_status;

pub const T0: &str = "2026-03-02T09:00:00Z";

pub fn t0() -> Timestamp {
    T0.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

pub fn mins(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

pub fn at(offset_mins: i64) -> Timestamp {
    t0() + mins(offset_mins)
}

pub enum TargetState {
    Found,
    GroupNotFound,
    PolicyNotFound,
    PolicyInvalid,
}

pub struct World {
    pub spec: ActivationRequestSpec,
    pub created: Timestamp,
    pub status: ActivationRequestStatus,
    pub policy: Policy,
    pub target: TargetState,
    pub attestation: Attestation,
    pub mfa_verified: bool,
    pub eligibilities: Vec<Eligibility>,
    pub approvals: Vec<VerifiedApproval>,
    pub unverified_approvals: Vec<String>,
    pub member_present: bool,
    pub access_held: bool,
    pub removal_confirmed_at: Option<Timestamp>,
    /// Why the directory refused the removal, as the group controller last saw it.
    pub removal_refused: Option<String>,
    /// For an extension: what the request it names (`original`) grants.
    pub extended: Option<crate::core::extension::Extended>,
    pub extended_by: Option<String>,
    pub deleting: bool,
    pub last: Option<Decision>,
}

impl World {
    /// alice, eligible from T0-1d for 30 days, asking for 1h under an 8h policy, no approval.
    pub fn new() -> Self {
        World {
            spec: ActivationRequestSpec {
                group: "finreport".into(),
                duration: Some("1h".into()),
                justification: Some("quarter close".into()),
                requester: Some(Requester {
                    username: "alice".into(),
                    ..Default::default()
                }),
                principal: Some("alice".into()),
                ..Default::default()
            },
            created: t0(),
            status: ActivationRequestStatus::default(),
            policy: Policy::default(),
            target: TargetState::Found,
            attestation: Attestation::Verified,
            mfa_verified: true,
            eligibilities: vec![eligibility("alice-finreport", -24 * 60, Some(30 * 24 * 60))],
            approvals: Vec::new(),
            unverified_approvals: Vec::new(),
            member_present: false,
            access_held: false,
            removal_confirmed_at: None,
            removal_refused: None,
            extended: None,
            extended_by: None,
            deleting: false,
            last: None,
        }
    }

    pub fn with_approval(mut self, approvers: &[&str], min: usize) -> Self {
        self.policy.approval = Some(ApprovalRules {
            approvers: approvers.iter().map(|a| PrincipalRef::user(*a)).collect(),
            min_approvals: min,
            timeout: SignedDuration::from_hours(24),
            allow_self_approval: false,
            require_mfa: false,
            authentication: Default::default(),
        });
        self
    }

    pub fn approve(&mut self, who: &str, offset_mins: i64) {
        self.vote(who, Vote::Approve, offset_mins);
    }

    pub fn vote(&mut self, who: &str, decision: Vote, offset_mins: i64) {
        self.approvals.push(VerifiedApproval {
            approver: who.into(),
            groups: Vec::new(),
            decision,
            time: at(offset_mins),
            reason: Some("ok".into()),
            mfa: true,
            authentication: Default::default(),
        });
    }

    /// An approval whose approver had no MFA evidence.
    pub fn approve_without_mfa(&mut self, who: &str, offset_mins: i64) {
        self.approve(who, offset_mins);
        if let Some(last) = self.approvals.last_mut() {
            last.mfa = false;
        }
    }

    pub fn decide_at(&self, now: Timestamp) -> Decision {
        let invalid = "spec.activation.maxDuration: too long";
        let target = match self.target {
            TargetState::Found => Target::Found(&self.policy),
            TargetState::GroupNotFound => Target::GroupNotFound,
            TargetState::PolicyNotFound => Target::PolicyNotFound,
            TargetState::PolicyInvalid => Target::PolicyInvalid(invalid),
        };
        let facts = Facts {
            target,
            requester: self.attestation,
            mfa_verified: self.mfa_verified,
            eligibilities: &self.eligibilities,
            approvals: &self.approvals,
            unverified_approvals: &self.unverified_approvals,
            member_present: self.member_present,
            access_held: self.access_held,
            removal_confirmed_at: self.removal_confirmed_at,
            revocation_grace: SignedDuration::from_secs(30),
            removal_refused: self.removal_refused.as_deref(),
            extension: self
                .extended
                .as_ref()
                .map(|extended| crate::core::extension::Extension {
                    of: "original",
                    extended,
                }),
            extended_by: self.extended_by.as_deref(),
        };
        let view = RequestView {
            spec: &self.spec,
            created: self.created,
            status: &self.status,
            deleting: self.deleting,
        };
        decide(view, &facts, now)
    }

    /// Decides at T0 + `offset_mins`, stores the status, and returns the phase.
    pub fn step(&mut self, offset_mins: i64) -> Phase {
        self.step_at(at(offset_mins))
    }

    pub fn step_at(&mut self, now: Timestamp) -> Phase {
        let decision = self.decide_at(now);
        self.status = request_status(&self.status, &decision, Some(1), now);
        let phase = decision.phase;
        self.last = Some(decision);
        phase
    }

    pub fn last(&self) -> &Decision {
        self.last
            .as_ref()
            .unwrap_or_else(|| unreachable!("step first"))
    }

    /// (status, reason) of a stored condition.
    pub fn condition(&self, type_: &str) -> (String, String) {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
            .unwrap_or_default()
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.status.expires_at.as_ref().map(|t| t.0)
    }

    pub fn set_start_time(&mut self, offset_mins: i64) {
        self.spec.start_time = Some(Time(at(offset_mins)));
    }
}

pub fn eligibility(name: &str, start_offset: i64, length_mins: Option<i64>) -> Eligibility {
    Eligibility {
        assignment: name.into(),
        start: at(start_offset),
        end: length_mins.map(|l| at(start_offset + l)),
        via_group: None,
    }
}
