//! Fault switches that tests flip while the server runs: fail the next N requests, fail all
//! requests until told otherwise (optionally only writes, one resource or one verb), and add
//! latency to every request. Dropping watches and expiring history live with the watch and
//! store code; the handle exposes them all.

use std::time::Duration;

use super::observe::Verb;

/// Which requests a fault applies to. The default: every resource request (discovery is never
/// failed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultScope {
    /// Only create, update, patch, delete, deletecollection.
    pub writes_only: bool,
    /// Only this resource (plural).
    pub resource: Option<String>,
    /// Only this verb.
    pub verb: Option<Verb>,
}

impl FaultScope {
    /// Every resource request.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only writes.
    pub fn writes() -> Self {
        Self {
            writes_only: true,
            ..Self::default()
        }
    }

    /// Narrow to one resource (plural).
    pub fn resource(mut self, plural: impl Into<String>) -> Self {
        self.resource = Some(plural.into());
        self
    }

    /// Narrow to one verb.
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    fn covers(&self, verb: Verb, resource: &str) -> bool {
        (!self.writes_only || verb.is_write())
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self.verb.is_none_or(|v| v == verb)
    }
}

#[derive(Debug, Clone)]
struct FailNext {
    remaining: u32,
    code: u16,
    scope: FaultScope,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    next: Vec<FailNext>,
    always: Option<(u16, FaultScope)>,
    pub latency: Duration,
}

impl Faults {
    pub fn fail_next(&mut self, n: u32, code: u16, scope: FaultScope) {
        if n > 0 {
            self.next.push(FailNext {
                remaining: n,
                code,
                scope,
            });
        }
    }

    pub fn fail_always(&mut self, code: u16, scope: FaultScope) {
        self.always = Some((code, scope));
    }

    pub fn clear(&mut self) {
        self.next.clear();
        self.always = None;
    }

    /// The status code this request must fail with, if any (consuming one `fail_next`).
    pub fn check(&mut self, verb: Verb, resource: &str) -> Option<u16> {
        if let Some(rule) = self
            .next
            .iter_mut()
            .find(|r| r.remaining > 0 && r.scope.covers(verb, resource))
        {
            rule.remaining -= 1;
            let code = rule.code;
            self.next.retain(|r| r.remaining > 0);
            return Some(code);
        }
        self.always
            .as_ref()
            .filter(|(_, scope)| scope.covers(verb, resource))
            .map(|(code, _)| *code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_counts_down_within_scope() {
        let mut faults = Faults::default();
        faults.fail_next(2, 500, FaultScope::writes().resource("leases"));
        assert_eq!(faults.check(Verb::Get, "leases"), None);
        assert_eq!(faults.check(Verb::Update, "configmaps"), None);
        assert_eq!(faults.check(Verb::Update, "leases"), Some(500));
        assert_eq!(faults.check(Verb::Create, "leases"), Some(500));
        assert_eq!(faults.check(Verb::Create, "leases"), None);
        faults.fail_always(503, FaultScope::all().verb(Verb::List));
        assert_eq!(faults.check(Verb::List, "x"), Some(503));
        faults.clear();
        assert_eq!(faults.check(Verb::List, "x"), None);
    }
}
