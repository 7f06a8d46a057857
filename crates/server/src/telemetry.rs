//! Prometheus metrics on their own HTTP listener (`metrics.listen`, off by default): every crate
//! records through the `metrics` facade; this module installs the Prometheus exporter
//! (`metrics-exporter-prometheus`, chosen because the facade keeps the core free of any exporter
//! and the exporter brings its own listener) and describes every metric. `docs/operations.md` lists them.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tributary_core::{buffer::Budget, view::View};

use crate::events;

/// The `[metrics]` configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (Prometheus text format); unset: no metrics listener.
    pub listen: Option<SocketAddr>,
}

/// Buckets of the latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0];

/// Buckets of the stream lag histogram, in records behind the view's head.
const LAG_BUCKETS: &[f64] = &[0.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0];

/// Installs the exporter and its listener once per process (later calls, e.g. a second gateway
/// in the same test process, share it).
pub fn install(listen: SocketAddr) -> Result<(), String> {
    static INSTALLED: OnceLock<Result<SocketAddr, String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        PrometheusBuilder::new()
            .with_http_listener(listen)
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("tributary_stream_lag_records".into()), LAG_BUCKETS))
            .and_then(|b| b.install())
            .map(|()| listen)
            .map_err(|e| format!("metrics listener on {listen}: {e}"))
    });
    match installed {
        Ok(at) if *at == listen => {
            describe();
            info!(%listen, "metrics served at /metrics");
            Ok(())
        }
        Ok(at) => {
            events::emit(&events::MetricsListenerConflict { listen: listen.to_string(), already: at.to_string() });
            Ok(())
        }
        Err(e) => Err(e.clone()),
    }
}

fn describe() {
    describe_counter!(
        "tributary_ingest_records_total",
        Unit::Count,
        "Records applied to the view, per topic and partition."
    );
    describe_counter!("tributary_ingest_bytes_total", Unit::Bytes, "Key, value and header bytes applied to the view.");
    describe_gauge!(
        "tributary_view_offset",
        "Next offset the view applies, per partition (at the last watermark refresh)."
    );
    describe_gauge!("tributary_kafka_earliest_offset", "Earliest offset Kafka retains, per partition.");
    describe_gauge!("tributary_kafka_latest_offset", "High watermark, per partition.");
    describe_gauge!("tributary_view_lag_records", Unit::Count, "Records Kafka has that the view has not applied yet.");
    describe_gauge!("tributary_view_keys", Unit::Count, "Keys in the view's state, per partition.");
    describe_gauge!(
        "tributary_view_bytes",
        Unit::Bytes,
        "Key, value and header bytes of the view's state, per partition."
    );
    describe_gauge!(
        "tributary_tail_bytes",
        Unit::Bytes,
        "Memory the tail buffer alone keeps alive, per partition (limits.tail_max_bytes plus what it borrowed)."
    );
    describe_gauge!(
        "tributary_tail_pool_lent_bytes",
        Unit::Bytes,
        "Bytes the tails borrowed beyond their own bounds, of limits.tail_pool_bytes."
    );
    describe_gauge!(
        "tributary_view_lag_seconds",
        Unit::Seconds,
        "While the view is behind Kafka: the age of the newest record it applied (0 when caught up)."
    );
    describe_gauge!("tributary_view_load_percent", "Progress of the initial load, 0 to 100.");
    describe_gauge!(
        "tributary_translator_instances",
        Unit::Count,
        "Translator instances alive, of translators.max_instances."
    );
    describe_counter!(
        "tributary_translator_uploads_total",
        Unit::Count,
        "Translator uploads by result (stored, refused)."
    );
    describe_histogram!(
        "tributary_translator_compile_duration_seconds",
        Unit::Seconds,
        "Compiling one uploaded component (in the compiler child process)."
    );
    describe_gauge!("tributary_view_ready", "1 once the view has caught up after start (snapshots are served).");
    describe_gauge!("tributary_kafka_reachable", "1 if Kafka answered the last watermark refresh, else 0.");
    describe_gauge!("tributary_streams_open", Unit::Count, "Open Subscribe and GetSnapshot streams, by kind.");
    describe_counter!(
        "tributary_http_requests_total",
        Unit::Count,
        "HTTP log requests answered, by kind and status (behind a cache: what reached the gateway)."
    );
    describe_counter!(
        "tributary_http_answers_made_total",
        Unit::Count,
        "HTTP log answers read and encoded, by kind (requests for the same one while it is made share it)."
    );
    describe_histogram!(
        "tributary_http_response_seconds",
        Unit::Seconds,
        "Time to an HTTP log response's head, by kind (a long-poll's wait included)."
    );
    describe_counter!(
        "tributary_records_delivered_total",
        Unit::Count,
        "Records (or snapshot entries) handed to clients, by kind."
    );
    describe_counter!(
        "tributary_bytes_delivered_total",
        Unit::Bytes,
        "Key, value and header bytes of the records and entries handed to clients, by kind."
    );
    describe_gauge!(
        "tributary_runtime_tasks",
        Unit::Count,
        "Tasks alive in the gateway's async runtime (streams, connections, background work), sampled every second."
    );
    describe_gauge!(
        "tributary_catchup_readers_in_use",
        Unit::Count,
        "Catch-up readers (Kafka consumers) in use, of limits.max_catchup_readers."
    );
    describe_gauge!(
        "tributary_stream_buffer_bytes",
        Unit::Bytes,
        "Bytes held by stream buffers from the shared budget (limits.stream_buffer_total_bytes)."
    );
    describe_counter!("tributary_grpc_requests_total", Unit::Count, "Finished gRPC calls by method and status code.");
    describe_histogram!(
        "tributary_grpc_request_duration_seconds",
        Unit::Seconds,
        "Duration of gRPC calls (streams: until they end), by method."
    );
    describe_gauge!(
        "tributary_subscription_committed_lag_records",
        Unit::Count,
        "Records between a durable subscription's committed position and the view's head."
    );
    describe_histogram!(
        "tributary_stream_lag_records",
        Unit::Count,
        "Records between the view's head and each open Subscribe stream's last progress taken by its client, sampled every second."
    );
    describe_counter!("tributary_translator_calls_total", Unit::Count, "Translator calls (batches), by translator.");
    describe_counter!("tributary_translator_records_total", Unit::Count, "Records passed to translators.");
    describe_counter!(
        "tributary_translator_reused_records_total",
        Unit::Count,
        "Records of subscriptions whose outcome another subscription's call had already made (not translated again)."
    );
    describe_counter!(
        "tributary_translator_errors_total",
        Unit::Count,
        "Failed translator calls by reason (trap, deadline, memory, output, error, instances)."
    );
    describe_histogram!(
        "tributary_translator_call_duration_seconds",
        Unit::Seconds,
        "Duration of one translator call."
    );
}

/// Samples the lag of every open Subscribe stream and sets the committed lag of durable
/// subscriptions, every second until `shutdown`.
pub async fn lags(
    durable: Arc<tributary_core::durable::Durable>,
    streams: crate::api::lag::StreamLags,
    shutdown: CancellationToken,
) {
    loop {
        durable.record_committed_lag();
        streams.sample();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Sets the gauges no event updates, every second until `shutdown`.
pub async fn gauges(
    view: Arc<View>,
    catchup_pool: Arc<Semaphore>,
    max_catchup_readers: usize,
    buffers: Budget,
    shutdown: CancellationToken,
) {
    loop {
        metrics::gauge!("tributary_view_ready").set(if view.is_ready() { 1.0 } else { 0.0 });
        metrics::gauge!("tributary_view_load_percent").set(view.load_percent() as f64);
        let readers = max_catchup_readers.saturating_sub(catchup_pool.available_permits());
        metrics::gauge!("tributary_catchup_readers_in_use").set(readers as f64);
        metrics::gauge!("tributary_stream_buffer_bytes").set(buffers.used() as f64);
        let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        metrics::gauge!("tributary_runtime_tasks").set(tasks as f64);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
            _ = shutdown.cancelled() => return,
        }
    }
}
