//! The operator's log: one JSON object per line on stdout. Audit records (target
//! [`crate::audit::sink::TARGET`]) are nested JSON objects under `record`, not JSON text inside
//! the message, so a log pipeline reads them without decoding twice.

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::audit::sink::TARGET as AUDIT;

/// `RUST_LOG` (default `info`), with the audit target always at `info`: audit records are not
/// diagnostics, and retention deletes a request once its records were emitted.
pub fn filter() -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if let Ok(audit) = format!("{AUDIT}=info").parse() {
        filter = filter.add_directive(audit);
    }
    filter
}

/// The operator's subscriber: JSON lines into `writer`.
pub fn subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .event_format(AuditAsObject {
            other: tracing_subscriber::fmt::format().json(),
        })
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

/// Formats audit records as `{"level","record","target","timestamp"}` with the record as an
/// object; every other event as tracing's JSON format does.
pub struct AuditAsObject {
    other: Format<Json>,
}

impl<S, N> FormatEvent<S, N> for AuditAsObject
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    Format<Json>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if event.metadata().target() == AUDIT
            && let Some(record) = record_of(event)
        {
            let mut timestamp = String::new();
            SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
            let line = serde_json::json!({
                "timestamp": timestamp,
                "level": event.metadata().level().as_str(),
                "target": AUDIT,
                "record": record,
            });
            return writeln!(writer, "{line}");
        }
        self.other.format_event(ctx, writer, event)
    }
}

/// The event's message as a JSON object: an audit record. Other audit-target events (warnings
/// with fields) are formatted as usual.
fn record_of(event: &Event<'_>) -> Option<Value> {
    struct Message(Option<String>);
    impl Visit for Message {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = Some(format!("{value:?}"));
            }
        }
    }
    let mut message = Message(None);
    event.record(&mut message);
    serde_json::from_str::<Value>(&message.0?)
        .ok()
        .filter(Value::is_object)
}
