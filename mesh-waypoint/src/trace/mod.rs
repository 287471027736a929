//! Request tracing (`--otlp-endpoint`): one span per request on the waypoint and the
//! ingress gateway, exported over OTLP/gRPC by opentelemetry's batch processor. The
//! caller's context (W3C or B3, see [`propagation`]) is the span's parent; a request
//! without one starts a trace. Upstream requests carry this proxy's span as parent.
//!
//! Off unless configured: the proxy then holds `None` and creates no span, context or
//! header. On, a request never waits for export: finished spans go into a bounded
//! queue ([`OtlpOptions::queue_size`]) that a background thread drains; spans that find
//! it full are dropped.

mod b3;
mod export;
pub mod propagation;
mod span;

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, TracerProviderBuilder,
};

pub use span::{Finished, RequestSpan};

/// `--otlp-queue-size` default (the SDK's own default).
pub const DEFAULT_QUEUE_SIZE: usize = 2048;
/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct OtlpOptions {
    /// The collector's OTLP/gRPC address, `http://host:4317`.
    pub endpoint: String,
    /// Finished spans waiting for export; more are dropped.
    pub queue_size: usize,
    /// `service.name` of the exported spans (`<workload>.<namespace>`, as Istio's proxies).
    pub service_name: String,
    /// Share of new traces recorded (`--trace-sampling`, 0.0–1.0); a request whose
    /// caller sent a trace context follows the caller's sampled flag instead.
    pub sampling: f64,
}

/// `--trace-sampling` default: 1% of new traces, Istio's mesh default
/// (`meshConfig.defaultConfig.tracing.sampling: 1.0`, a percentage there). A production
/// mesh does not record every request; `1.0` here records all of them.
pub const DEFAULT_SAMPLING: f64 = 0.01;

/// The sampler: the parent's decision when there is one, else `ratio` of new traces.
pub(crate) fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio.clamp(0.0, 1.0))))
}

/// Parses `--trace-sampling`: a fraction from 0.0 to 1.0.
pub fn parse_sampling(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!(
            "{f} is not between 0.0 and 1.0 (a share of new traces, not a percentage)"
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("--otlp-endpoint {endpoint}: cannot set up the OTLP/gRPC exporter: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("--otlp-endpoint {0}: expected http://host:port (OTLP over gRPC)")]
    Endpoint(String),
}

/// The proxy's tracer when `opts` asks for one.
pub fn start(opts: Option<&OtlpOptions>) -> Result<Option<std::sync::Arc<RequestTracer>>, TraceError> {
    let Some(opts) = opts else { return Ok(None) };
    let tracer = RequestTracer::start(opts)?;
    tracing::info!(
        endpoint = opts.endpoint,
        queue = opts.queue_size,
        sampling = opts.sampling,
        service = opts.service_name,
        "exporting request spans over OTLP/gRPC"
    );
    Ok(Some(std::sync::Arc::new(tracer)))
}

pub struct RequestTracer {
    tracer: opentelemetry_sdk::trace::Tracer,
    /// Decides each request before any SDK span exists ([`RequestTracer::begin`]); the
    /// provider's own sampler records whatever reaches it.
    sampler: Sampler,
    // Kept so the batch processor lives as long as the proxy; dropped (and flushed)
    // before the runtime its exporter's channel runs on (fields drop in this order).
    _provider: SdkTracerProvider,
    _runtime: Option<ExportRuntime>,
}

/// The OTLP exporter's own single-threaded tokio runtime, on its own thread
/// (`otlp-export`): the gRPC channel encodes and sends a batch of up to 512 spans at
/// a time, and on the proxy's runtime that kept a request worker busy for whole
/// milliseconds (a p99 several times the median's in `cargo xtask bench waypoint`).
struct ExportRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExportRuntime {
    fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("otlp-export".into()).spawn(move || {
            rt.block_on(async {
                let _ = stopped.await;
            })
        })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl RequestTracer {
    /// Sets up the exporter, its gRPC channel on a runtime of its own ([`ExportRuntime`]).
    pub fn start(opts: &OtlpOptions) -> Result<Self, TraceError> {
        if !opts.endpoint.starts_with("http://") && !opts.endpoint.starts_with("https://") {
            return Err(TraceError::Endpoint(opts.endpoint.clone()));
        }
        let runtime = ExportRuntime::start().map_err(|e| TraceError::Exporter {
            endpoint: opts.endpoint.clone(),
            reason: format!("cannot start the export thread: {e}"),
        })?;
        // The channel's tasks are spawned where it is built: on the export runtime.
        let entered = runtime.handle.enter();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&opts.endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TraceError::Exporter {
                endpoint: opts.endpoint.clone(),
                reason: e.to_string(),
            })?;
        drop(entered);
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(opts.queue_size.max(1))
            .with_max_export_batch_size(opts.queue_size.clamp(1, 512))
            .build();
        let processor = BatchSpanProcessor::builder(export::LoggedExporter::new(exporter, &opts.endpoint))
            .with_batch_config(batch)
            .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(opts.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource);
        Ok(Self {
            _runtime: Some(runtime),
            ..Self::with_provider(provider, opts.sampling)
        })
    }

    /// A tracer on the provider `builder` builds, recording `sampling` of new traces
    /// (see [`sampler`]). The decision is taken before the SDK sees the request
    /// ([`RequestSpan`]), so the provider records every span it is asked to start, and
    /// a new trace keeps the trace id the decision was taken on ([`span::DecidedIds`]).
    pub fn with_provider(builder: TracerProviderBuilder, sampling: f64) -> Self {
        let provider = builder
            .with_sampler(Sampler::AlwaysOn)
            .with_id_generator(span::DecidedIds)
            .build();
        Self {
            tracer: provider.tracer("mesh-waypoint"),
            sampler: sampler(sampling),
            _provider: provider,
            _runtime: None,
        }
    }

    /// Starts the request's span, named like Envoy's (`<host>:<port>/*`).
    /// `name` is called only when the span is recorded (see [`RequestSpan`]).
    pub fn begin(&self, headers: &HeaderMap, name: impl FnOnce() -> String, start: SystemTime) -> RequestSpan {
        RequestSpan::start(&self.tracer, &self.sampler, propagation::extract(headers), name, start)
    }
}
