//! W3C Trace Context at the edge: the header names it travels under in gRPC
//! metadata, the span id each participant call sends, and (with the `otlp`
//! feature) the bridge that parents a saga's exported spans on its trace.
//!
//! The value itself, [`TraceContext`], is the domain's (`crate::saga::trace`):
//! it is journaled with the saga, parsed from and formatted to header text
//! there. What is here reads randomness or the tracing subscriber, which the
//! domain does not.
//!
//! Invariants:
//! - Each call gets a fresh span id (never zero), so a participant sees one
//!   parent span per attempt.

use crate::saga::trace::{SpanId, TraceContext};

/// The metadata key of the W3C `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The metadata key of the W3C `tracestate` header (vendor data, passed on as is).
pub const TRACESTATE: &str = "tracestate";

impl SpanId {
    /// A random span id, never zero (W3C forbids the all-zero id).
    pub fn random() -> Self {
        Self(fastrand::u64(1..).to_be_bytes())
    }
}

/// The bridge to OpenTelemetry, when sagad is built with the `otlp` feature:
/// the saga's span is parented on the saga's trace context, and a call's
/// `traceparent` names the attempt's exported span, so the trace a collector
/// receives holds the saga, its attempts and the participants' own spans.
#[cfg(feature = "otlp")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
        TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{SpanId, TraceContext};

    /// Makes the saga's trace context the parent of `span`. Without an
    /// OpenTelemetry layer (no `--otlp-endpoint`), this does nothing.
    pub fn set_parent(span: &tracing::Span, trace: &TraceContext) {
        let state = trace
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let parent = SpanContext::new(
            OtelTraceId::from_bytes(trace.trace_id.0),
            OtelSpanId::from_bytes(trace.parent_id.0),
            TraceFlags::new(trace.flags),
            true,
            state,
        );
        // Fails only when no OpenTelemetry layer is installed or the span is
        // disabled: then there is nothing to parent.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }

    /// The exported span id of `span`, if an OpenTelemetry layer records it.
    pub fn span_id(span: &tracing::Span) -> Option<SpanId> {
        let context = span.context();
        let otel = context.span();
        let span_context = otel.span_context();
        span_context
            .is_valid()
            .then(|| SpanId(span_context.span_id().to_bytes()))
    }
}

/// Makes the saga's trace the parent of the saga's span in exported traces
/// (a no-op without the `otlp` feature).
pub fn set_span_parent(span: &tracing::Span, trace: &TraceContext) {
    #[cfg(feature = "otlp")]
    otel::set_parent(span, trace);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, trace);
}

/// The span id a call made inside `span` should send: the exported span's id
/// when OpenTelemetry records it, so the participant's spans nest under the
/// attempt; otherwise a fresh random one.
pub fn call_span_id(span: &tracing::Span) -> SpanId {
    #[cfg(feature = "otlp")]
    if let Some(id) = otel::span_id(span) {
        return id;
    }
    #[cfg(not(feature = "otlp"))]
    let _ = span;
    SpanId::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_span_ids_are_never_zero_and_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| SpanId::random()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&SpanId([0; 8])));
    }
}
