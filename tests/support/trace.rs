//! A process-wide tracing subscriber that keeps every event with its level,
//! fields and the fields of the spans it happened in, for tests that assert
//! what the crate logs. Home threads are other threads, so it is installed
//! globally; tests running in parallel tell their events apart by the id of
//! the context span each event carries ([`Event::context_id`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The name of a context's span.
pub const CONTEXT_SPAN: &str = "aioctx.context";

/// One recorded event.
#[derive(Debug, Clone)]
pub struct Event {
    pub level: Level,
    pub target: String,
    pub message: String,
    pub fields: BTreeMap<String, String>,
    /// The spans the event happened in, outermost first: name and fields.
    pub spans: Vec<(String, BTreeMap<String, String>)>,
}

impl Event {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The fields of the context span the event happened in.
    pub fn context(&self) -> Option<&BTreeMap<String, String>> {
        self.spans
            .iter()
            .rev()
            .find(|(name, _)| name == CONTEXT_SPAN)
            .map(|(_, fields)| fields)
    }

    /// The id of the context whose span the event happened in.
    pub fn context_id(&self) -> Option<u64> {
        self.context()?.get("id")?.parse().ok()
    }

    /// A field of the context span the event happened in.
    pub fn context_field(&self, name: &str) -> Option<&str> {
        self.context()?.get(name).map(String::as_str)
    }
}

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

/// Installs the recording subscriber for the whole process (once).
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
    });
}

/// Every event recorded so far in context `id`'s span.
pub fn of_context(id: u64) -> Vec<Event> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.context_id() == Some(id))
        .cloned()
        .collect()
}

/// The events of context `id` whose message starts with `message`.
pub fn named(id: u64, message: &str) -> Vec<Event> {
    of_context(id)
        .into_iter()
        .filter(|e| e.message.starts_with(message))
        .collect()
}

struct Recorder;

/// A span's fields, kept in its extensions.
struct SpanFields(BTreeMap<String, String>);

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.0));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(known) = span.extensions_mut().get_mut::<SpanFields>() {
            known.0.extend(fields.0);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<SpanFields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default();
                        (span.name().to_owned(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        EVENTS.lock().unwrap().push(Event {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message,
            fields: fields.0,
            spans,
        });
    }
}
