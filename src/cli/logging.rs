//! Where `sagad serve`'s logs and spans go: stderr as text or JSON lines, and,
//! in builds with the `otlp` feature, an OpenTelemetry collector.
//!
//! - Which lines are written is `SAGAD_LOG`, then `RUST_LOG`, then the verb's
//!   default (an `EnvFilter` directive such as `info,sagad=debug`). The filter
//!   applies to stderr only, so debug-level attempt spans cost nothing unless
//!   something wants them.
//! - Text lines are coloured only when stderr is a terminal.
//! - JSON lines carry `timestamp`, `level`, `target`, the event's fields
//!   (`message` among them) at the top level, and `spans`: the enclosing spans
//!   with their fields (`saga` has `saga_id`, `definition` and `trace_id`; `attempt` has
//!   `step`, `action`, `attempt` and `participant`).
//! - With `--otlp-endpoint`, sagad's spans (saga and attempt, whatever the log
//!   filter) and its info-and-above events are exported over OTLP/gRPC in
//!   batches; [`Logging::shutdown`] sends what is still buffered.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use sagad::config::LogFormat;

/// The installed logging; keep it until the process ends, then call
/// [`Logging::shutdown`] so buffered spans are exported.
pub struct Logging {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// Installs the global subscriber: stderr (stdout is for results) in `format`,
/// filtered by `SAGAD_LOG`, then `RUST_LOG`, then `default_filter`; and the
/// OTLP export when `otlp_endpoint` is given (only possible with the `otlp`
/// feature: the configuration refuses the setting otherwise).
pub fn init(
    default_filter: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Logging> {
    let filter = std::env::var("SAGAD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_filter.to_string());
    let stderr = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            // Colours only for a person at a terminal: a log file or collector
            // would get escape codes, and every saga's span would pay for them.
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            // `spans` lists every enclosing span, the current one last.
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(EnvFilter::new(filter));
    let registry = tracing_subscriber::registry().with(stderr);

    #[cfg(feature = "otlp")]
    {
        let (otel, provider) = match otlp_endpoint {
            Some(endpoint) => {
                let (layer, provider) = otlp::layer(endpoint)?;
                (Some(layer), Some(provider))
            }
            None => (None, None),
        };
        registry.with(otel).try_init()?;
        Ok(Logging { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        // The configuration refuses an endpoint in builds without the feature.
        debug_assert!(otlp_endpoint.is_none());
        registry.try_init()?;
        Ok(Logging {})
    }
}

impl Logging {
    /// Exports the spans still buffered and stops the exporter (waiting at
    /// most a few seconds for an unreachable collector).
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            // shutdown() blocks until the batch is sent, and the export runs on
            // this runtime: block a blocking-pool thread, not a worker.
            let stopped = tokio::task::spawn_blocking(move || {
                provider.shutdown_with_timeout(otlp::SHUTDOWN_TIMEOUT)
            })
            .await;
            if let Ok(Err(e)) = stopped {
                eprintln!("sagad: could not export the last spans: {e}");
            }
        }
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
    use tracing::{Level, Metadata, Subscriber};
    use tracing_subscriber::{Layer, filter::filter_fn, registry::LookupSpan};

    /// How long one export may take.
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long the final export at shutdown may take.
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

    /// sagad's spans down to debug (the attempts), and its events from info up
    /// (attached to their span). Nothing from other crates: the exporter's own
    /// gRPC client must not feed its export.
    fn exported(meta: &Metadata<'_>) -> bool {
        meta.target().starts_with("sagad")
            && if meta.is_span() {
                *meta.level() <= Level::DEBUG
            } else {
                *meta.level() <= Level::INFO
            }
    }

    /// The OpenTelemetry layer exporting to `endpoint`, and its provider (kept
    /// to flush at shutdown). Must run inside the tokio runtime: the exporter's
    /// gRPC channel lives on it.
    pub fn layer<S>(
        endpoint: &str,
    ) -> anyhow::Result<(Box<dyn Layer<S> + Send + Sync>, SdkTracerProvider)>
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("sagad").build())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sagad"))
            .with_filter(filter_fn(exported))
            .boxed();
        Ok((layer, provider))
    }
}
