//! Logs and traces: text or JSON lines on stderr (filtered by `RUST_LOG`), and, when configured,
//! every span (calls, ingest, reloads) exported to an OpenTelemetry collector over OTLP/gRPC.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    trace::{Sampler, SdkTracerProvider},
    Resource,
};
use serde::{Deserialize, Serialize};
use tracing_subscriber::{
    filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer, Registry,
};

/// The `[tracing]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// OTLP/gRPC endpoint of an OpenTelemetry collector (e.g. `http://127.0.0.1:4317`); unset:
    /// spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    pub service_name: String,
    /// Fraction of traces exported (0 to 1); a call's spans follow the caller's sampling decision
    /// when it sends a trace context.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "tributary".into(), sample_ratio: 1.0 }
    }
}

impl TracingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!("tracing.sample_ratio must be between 0 and 1, not {}", self.sample_ratio));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: http::Uri = endpoint.parse().map_err(|e| {
                format!("tracing.otlp_endpoint {endpoint:?} is not a URL ({e}); e.g. http://127.0.0.1:4317")
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!(
                    "tracing.otlp_endpoint {endpoint:?} needs http:// or https:// and a host, e.g. http://127.0.0.1:4317"
                ));
            }
        }
        Ok(())
    }
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, with the current span and the list of spans.
    Json,
}

/// Keeps the span exporter; dropping it flushes the spans still buffered.
#[must_use = "dropping it stops exporting spans"]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("tributary: spans not flushed at exit: {e}");
            }
        }
    }
}

/// Installs the process's logging, and span export when `tracing.otlp_endpoint` is set. Call it
/// inside the Tokio runtime (the OTLP exporter's gRPC channel runs on it).
pub fn init(format: LogFormat, tracing: Option<&TracingConfig>) -> Result<Tracing, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(std::io::stderr),
        ),
    };
    let (export, provider) = match tracing.and_then(|t| t.otlp_endpoint.as_ref().map(|e| (t, e))) {
        Some((config, endpoint)) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| format!("tracing.otlp_endpoint {endpoint}: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
                .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
                .build();
            let layer =
                tracing_opentelemetry::layer().with_tracer(provider.tracer("tributary")).with_filter(LevelFilter::INFO);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(export)
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    Ok(Tracing { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tracing_settings_name_the_key() {
        let bad = |f: fn(&mut TracingConfig)| {
            let mut config = TracingConfig::default();
            f(&mut config);
            config.validate().unwrap_err()
        };
        assert!(bad(|c| c.sample_ratio = 1.5).contains("tracing.sample_ratio"));
        assert!(bad(|c| c.otlp_endpoint = Some("collector:4317".into())).contains("tracing.otlp_endpoint"));
        assert!(bad(|c| c.otlp_endpoint = Some("not a url".into())).contains("tracing.otlp_endpoint"));
        let mut good = TracingConfig { otlp_endpoint: Some("http://127.0.0.1:4317".into()), ..Default::default() };
        assert_eq!(good.validate(), Ok(()));
        good.sample_ratio = 0.0;
        assert_eq!(good.validate(), Ok(()));
    }
}
