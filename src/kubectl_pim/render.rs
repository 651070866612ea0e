//! Tables and times as `kubectl get` prints them.

use jiff::{SignedDuration, Timestamp};

use crate::api::ActivationRequest;
use crate::api::Phase;
use crate::api::conditions::types;

/// A plain table: upper-case headers, columns padded to their widest cell, three spaces apart.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths.get(c).copied().unwrap_or(0) - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// At most `max` characters, with an ellipsis when cut; control characters become spaces.
pub fn cut(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= max {
        return clean;
    }
    let mut out: String = clean.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `2h5m`, `3d4h`, `40s`: the two largest units, as `kubectl get` shows ages.
pub fn short(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// `2026-03-02T09:30:00Z (in 30m)` or `(5m ago)`.
pub fn when(t: Timestamp, now: Timestamp) -> String {
    let d = t.duration_since(now);
    let relative = if d.is_zero() {
        "now".to_owned()
    } else if d.is_negative() {
        format!("{} ago", short(d))
    } else {
        format!("in {}", short(d))
    };
    format!("{} ({relative})", t.strftime("%Y-%m-%dT%H:%M:%SZ"))
}

/// The time since `t`, for an AGE column.
pub fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| "-".to_owned(), |t| short(now.duration_since(t)))
}

pub fn phase(request: &ActivationRequest) -> Option<Phase> {
    request.status.as_ref().and_then(|s| s.phase)
}

pub fn phase_text(request: &ActivationRequest) -> String {
    phase(request).map_or_else(|| "Pending".to_owned(), |p| p.to_string())
}

/// Why the request is in its phase: the latest transition into it, or else the condition that
/// speaks for the phase. `(reason, message)`, either may be empty.
pub fn phase_detail(request: &ActivationRequest) -> (String, String) {
    let Some(status) = &request.status else {
        return (
            String::new(),
            // Normal for a moment after creation; `activate --wait` says more if it lasts.
            "waiting for the operator".to_owned(),
        );
    };
    let current = status.phase.unwrap_or_default();
    if let Some(t) = status.history.iter().rev().find(|t| t.phase == current) {
        return (t.reason.clone(), t.message.clone().unwrap_or_default());
    }
    let condition = match current {
        Phase::Pending => types::VALIDATED,
        Phase::PendingApproval => types::APPROVED,
        _ => types::ACTIVE,
    };
    status
        .conditions
        .iter()
        .find(|c| c.type_ == condition)
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// `Reason: message`, or whichever is set.
pub fn reason_and_message(reason: &str, message: &str) -> String {
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_owned(),
        (true, false) => message.to_owned(),
        (true, true) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "PHASE"]);
        t.row(vec!["a-long-name".into(), "Active".into()]);
        t.row(vec!["b".into(), "".into()]);
        assert_eq!(t.render(), "NAME          PHASE\na-long-name   Active\nb\n");
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(short(SignedDuration::from_secs(40)), "40s");
        assert_eq!(short(SignedDuration::from_mins(125)), "2h5m");
        assert_eq!(short(SignedDuration::from_hours(50)), "2d2h");
        let now: Timestamp = "2026-03-02T09:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-03-02T09:30:00Z".parse().unwrap();
        assert_eq!(when(later, now), "2026-03-02T09:30:00Z (in 30m)");
        assert_eq!(when(now, later), "2026-03-02T09:00:00Z (30m ago)");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("a\nb", 4), "a b");
    }
}
