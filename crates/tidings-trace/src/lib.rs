//! Traces across hops, the way OpenTelemetry's messaging conventions draw
//! them: a span for each publish, receive, process and settle, tied to the
//! trace context each event carries (`traceparent`, the CloudEvents
//! distributed-tracing extension; a Kafka record's `traceparent` or
//! `ce_traceparent` header).
//!
//! Spans are `tracing` spans with OpenTelemetry's field names (`otel.name`,
//! `otel.kind`, `messaging.*`), so the process's subscriber decides what
//! becomes of them: log lines carry their fields (a `correlationid` among
//! them), and with the `otel` feature and an OpenTelemetry layer installed
//! (see [`otlp`] for the server's) they are exported. The functions here tie
//! a span to an event's context:
//!
//! - [`continue_from`]: the event's context is the span's parent (a single
//!   delivery processed, a single event published);
//! - [`link_to`]: the span links to it (a batch: one link per event);
//! - [`creation_context`]: the context to give an event published without
//!   one — the span's own when spans are exported, else a new trace — so a
//!   flow is traceable from its first hop.
//!
//! Without the `otel` feature (or without the layer at run time) parents and
//! links are not recorded and [`creation_context`] starts a new trace.

use tidings_types::CloudEvent;
pub use tidings_types::TraceParent;

#[cfg(feature = "otlp")]
pub mod otlp;

/// `messaging.system`: what the spans name the messaging system.
pub const SYSTEM: &str = "tidings";

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans ([`otlp::Pipeline`] started): work
/// done only to enrich spans (reading the trace context out of a Kafka
/// producer's batches) is skipped otherwise.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets `span`'s parent to the remote context `parent`. Call it before the
/// span is entered or its context read: a started span keeps its parent.
pub fn continue_from(span: &tracing::Span, parent: &TraceParent) {
    #[cfg(feature = "otel")]
    {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = opentelemetry::Context::new().with_remote_span_context(otel::remote(parent));
        // Not set when no OpenTelemetry layer is installed or the span is
        // filtered out: nothing records it then.
        let _ = span.set_parent(cx);
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, parent);
}

/// Links `span` to the remote context `to`.
pub fn link_to(span: &tracing::Span, to: &TraceParent) {
    #[cfg(feature = "otel")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        span.add_link(otel::remote(to));
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, to);
}

/// `span`'s own context, when an OpenTelemetry layer records it.
pub fn context_of(span: &tracing::Span) -> Option<TraceParent> {
    #[cfg(feature = "otel")]
    {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = span;
        None
    }
}

/// Gives `event`, when it carries no trace context, `context` — the span
/// the caller works in ([`context_of`] the current span, when recorded): an
/// event staged now and sent later (the transactional outbox) then
/// continues the trace of the work that staged it. Without a context it is
/// left as it is; its publish makes one.
pub fn stamp(event: &mut CloudEvent, context: Option<&TraceParent>) {
    if let (Some(context), None) = (context, event.traceparent()) {
        event.set_traceparent(context.to_string());
    }
}

/// The context to give an event published without one: `span`'s own when
/// it is recorded, else a new sampled trace (so whoever handles the event
/// next can continue it).
pub fn creation_context(span: &tracing::Span) -> TraceParent {
    context_of(span).unwrap_or_else(|| TraceParent::new_root(true))
}

/// An attribute value.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// A string.
    Str(&'a str),
    /// An integer.
    Int(i64),
}

/// Sets OpenTelemetry attributes of `span` without making them fields of
/// its log lines.
pub fn set_attributes(span: &tracing::Span, attributes: &[(&'static str, Value<'_>)]) {
    #[cfg(feature = "otel")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        for (key, value) in attributes {
            match value {
                Value::Str(s) => span.set_attribute(*key, (*s).to_owned()),
                Value::Int(n) => span.set_attribute(*key, *n),
            }
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, attributes);
}

/// The span of sending `events` to `topic`: `publish {topic}`, a producer
/// span of operation type `send`. It is tied to the contexts the events
/// bring: one event's is its parent unless `continued` (the span it opens
/// under already continues a caller's trace); otherwise each is a link.
/// Then every event without a context gets one — this span's for a single
/// event, a `create {topic}` span's each in a batch — so whoever handles it
/// next continues this trace. Open it before the events leave and enter it
/// (or instrument with it) while they are sent.
pub fn publish_span(topic: &str, events: &mut [&mut CloudEvent], continued: bool) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
    );
    let mut attributes = vec![
        ("messaging.system", Value::Str(SYSTEM)),
        ("messaging.operation.type", Value::Str("send")),
        ("messaging.operation.name", Value::Str("publish")),
        ("messaging.destination.name", Value::Str(topic)),
    ];
    let count = events.len();
    if let [event] = &events[..] {
        attributes.push(("messaging.message.id", Value::Str(event.id())));
        if let Some(id) = event.correlationid() {
            attributes.push(("messaging.message.conversation_id", Value::Str(id)));
        }
    } else {
        attributes.push((
            "messaging.batch.message_count",
            Value::Int(i64::try_from(count).unwrap_or(i64::MAX)),
        ));
    }
    set_attributes(&span, &attributes);
    let brought: Vec<Option<TraceParent>> = events
        .iter()
        .map(|e| e.traceparent().and_then(TraceParent::parse))
        .collect();
    match (&brought[..], continued) {
        ([Some(context)], false) => continue_from(&span, context),
        _ => brought.iter().flatten().for_each(|c| link_to(&span, c)),
    }
    for (event, brought) in events.iter_mut().zip(&brought) {
        if brought.is_some() {
            continue;
        }
        let context = if count == 1 {
            creation_context(&span)
        } else if !exporting() {
            // A `create` span would record nothing and give no context:
            // what it would end in is the new trace made here.
            TraceParent::new_root(true)
        } else {
            let create = tracing::info_span!(
                parent: &span,
                "create",
                otel.name = %format!("create {topic}"),
                otel.kind = "producer",
            );
            set_attributes(
                &create,
                &[
                    ("messaging.system", Value::Str(SYSTEM)),
                    ("messaging.operation.type", Value::Str("create")),
                    ("messaging.destination.name", Value::Str(topic)),
                    ("messaging.message.id", Value::Str(event.id())),
                ],
            );
            creation_context(&create)
        };
        event.set_traceparent(context.to_string());
    }
    span
}

/// `{operation} {topic}`: the span of settling one delivery of `topic` to
/// `group` — `ack`, `nack`, `reject` or `release` — of operation type
/// `settle`. `kind` is `client` where a consumer asks a backend, `internal`
/// where the server carries out the answer it was sent.
pub fn settle_span(
    system: &str,
    kind: &'static str,
    operation: &'static str,
    topic: &str,
    group: &str,
) -> tracing::Span {
    let span = tracing::info_span!(
        "settle",
        otel.name = %format!("{operation} {topic}"),
        otel.kind = kind,
    );
    set_attributes(
        &span,
        &[
            ("messaging.system", Value::Str(system)),
            ("messaging.operation.type", Value::Str("settle")),
            ("messaging.operation.name", Value::Str(operation)),
            ("messaging.destination.name", Value::Str(topic)),
            ("messaging.consumer.group.name", Value::Str(group)),
        ],
    );
    span
}

/// `receive {topic}`: a consumer span of operation type `receive`, one pull
/// of deliveries by `group`. What it received is tied to it afterwards by
/// [`link_events`]: a pull does not know its events before it ends.
pub fn receive_span(system: &str, topic: &str, group: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "receive",
        otel.name = %format!("receive {topic}"),
        otel.kind = "consumer",
    );
    set_attributes(
        &span,
        &[
            ("messaging.system", Value::Str(system)),
            ("messaging.operation.type", Value::Str("receive")),
            ("messaging.operation.name", Value::Str("receive")),
            ("messaging.destination.name", Value::Str(topic)),
            ("messaging.consumer.group.name", Value::Str(group)),
        ],
    );
    span
}

/// Ties the events a span handled as a batch (a pull's, a redrive's) to it:
/// their count, and a link to the context each carries (a batch has no
/// single parent).
pub fn link_events(span: &tracing::Span, contexts: impl IntoIterator<Item = Option<TraceParent>>) {
    let mut count = 0_i64;
    for context in contexts {
        count += 1;
        if let Some(context) = context {
            link_to(span, &context);
        }
    }
    set_attributes(
        span,
        &[("messaging.batch.message_count", Value::Int(count))],
    );
}

/// The span of dead-lettering one event of `topic` for `group` into
/// `dead_letters`: `dead_letter {topic}`, a producer span (the event is
/// published again, to the dead-letter topic) continuing the event's own
/// trace when it carries one, so the trace of a flow shows where it ended.
pub fn dead_letter_span(
    topic: &str,
    group: &str,
    dead_letters: &str,
    event_context: Option<&TraceParent>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "dead_letter",
        otel.name = %format!("dead_letter {topic}"),
        otel.kind = "producer",
    );
    set_attributes(
        &span,
        &[
            ("messaging.system", Value::Str(SYSTEM)),
            ("messaging.operation.type", Value::Str("send")),
            ("messaging.operation.name", Value::Str("dead_letter")),
            ("messaging.destination.name", Value::Str(dead_letters)),
            ("messaging.consumer.group.name", Value::Str(group)),
            ("tidings.dead_letter.source_topic", Value::Str(topic)),
        ],
    );
    if let Some(context) = event_context {
        continue_from(&span, context);
    }
    span
}

/// The span of redriving dead letters of `group` back to it:
/// `redrive {dead_letters}`, a producer span linked to the context of each
/// event it sends back (tied on by [`link_events`]).
pub fn redrive_span(dead_letters: &str, group: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "redrive",
        otel.name = %format!("redrive {dead_letters}"),
        otel.kind = "producer",
    );
    set_attributes(
        &span,
        &[
            ("messaging.system", Value::Str(SYSTEM)),
            ("messaging.operation.type", Value::Str("send")),
            ("messaging.operation.name", Value::Str("redrive")),
            ("messaging.destination.name", Value::Str(dead_letters)),
            ("messaging.consumer.group.name", Value::Str(group)),
        ],
    );
    span
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use crate::TraceParent;

    /// A context received from elsewhere.
    pub(crate) fn remote(tp: &TraceParent) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(tp.trace_id),
            SpanId::from_bytes(tp.span_id),
            TraceFlags::new(tp.flags),
            true,
            TraceState::default(),
        )
    }
}
