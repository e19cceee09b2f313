//! Optional OpenTelemetry export: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are exported over OTLP/HTTP, and a
//! message's processing span is a child of the trace its `traceparent` names. Without it no
//! layer is installed and nothing is exported.
//!
//! Export needs clustera's `otlp` feature; a kernel built without it that finds an endpoint
//! configured refuses to start rather than silently exporting nothing.

#[cfg(feature = "otlp")]
pub(crate) use export::{continue_trace, layer, provider};

#[cfg(not(feature = "otlp"))]
/// Without export, the caller makes up the span id it propagates.
pub(crate) fn continue_trace(
    _span: &tracing::Span,
    _parent: &crate::runtime::trace::TraceParent,
) -> Option<[u8; 8]> {
    None
}

/// Whether an OTLP endpoint is configured in the environment.
pub(crate) fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()))
}

#[cfg(feature = "otlp")]
mod export {
    use std::sync::atomic::{AtomicBool, Ordering};

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::runtime::trace::TraceParent;

    static ENABLED: AtomicBool = AtomicBool::new(false);

    /// The tracer provider exporting to the configured endpoint (it reads the standard `OTEL_*`
    /// variables itself).
    pub(crate) fn provider(service: &str) -> Result<SdkTracerProvider, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| {
                format!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter: {e}")
            })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(provider)
    }

    /// The tracing layer feeding `provider`.
    pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("clustera"))
    }

    /// Makes `span` a child of `parent`'s trace and returns the span id to propagate, when
    /// exporting; `None` when spans are not exported (the caller then makes up a span id).
    pub(crate) fn continue_trace(span: &tracing::Span, parent: &TraceParent) -> Option<[u8; 8]> {
        if !ENABLED.load(Ordering::Relaxed) {
            return None;
        }
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // Fails only if the span is disabled or already started; then fall back to a made-up id.
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
            .ok()?;
        let own = span.context().span().span_context().clone();
        own.is_valid().then(|| own.span_id().to_bytes())
    }
}
