//! Prometheus metrics (contract names). Route labels are matched route
//! templates, never raw paths, so label values stay bounded.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use vidhost_core::domain::UploadMethod;

#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

impl Metrics {
    /// Installs the process-wide recorder (once; later calls share it).
    pub fn install() -> Metrics {
        let handle = HANDLE
            .get_or_init(|| {
                let secs = &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 1800.0,
                ];
                let sizes = &[1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11];
                PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), secs)
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full("vidhost_upload_size_bytes".into()),
                            sizes,
                        )
                    })
                    .expect("static buckets are valid")
                    .install_recorder()
                    .expect("one recorder per process")
            })
            .clone();
        for m in UploadMethod::ALL {
            metrics::gauge!("vidhost_uploads_in_progress", "method" => m.as_str()).set(0.0);
        }
        Metrics { handle }
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains recorded histogram samples into their buckets, every few
    /// seconds. The recorder keeps each sample until then (or until a
    /// scrape), so without it memory grows with every request served.
    pub async fn upkeep_loop(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            self.handle.run_upkeep();
        }
    }
}

/// The request counter and duration histogram of one (route, status):
/// looked up in the registry once, then reused (a registry lookup builds
/// the key's labels and allocates a handle, on every request otherwise).
type RouteHandles = (metrics::Counter, metrics::Histogram);
type ByStatus = HashMap<u16, HashMap<String, RouteHandles>>;
static ROUTE_HANDLES: OnceLock<Mutex<ByStatus>> = OnceLock::new();

fn route_handles(route: &str, status: u16) -> RouteHandles {
    let map = ROUTE_HANDLES.get_or_init(Default::default);
    let mut map = map.lock().expect("not poisoned");
    // Route templates and status codes are both few; the map stays small.
    if let Some(h) = map.get(&status).and_then(|m| m.get(route)) {
        return h.clone();
    }
    let h = (
        metrics::counter!("vidhost_http_requests_total", "route" => route.to_owned(), "status" => status.to_string()),
        metrics::histogram!("vidhost_http_request_duration_seconds", "route" => route.to_owned()),
    );
    map.entry(status)
        .or_default()
        .insert(route.to_owned(), h.clone());
    h
}

pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let route = route.as_ref().map(|p| p.as_str()).unwrap_or("unmatched");
    record_http(route, resp.status().as_u16(), start);
    resp
}

/// Counts one answered request of `route` (its template) that began at `start`.
pub(crate) fn record_http(route: &str, status: u16, start: Instant) {
    let (requests, duration) = route_handles(route, status);
    requests.increment(1);
    duration.record(start.elapsed().as_secs_f64());
}

/// The counter of bytes delivered, looked up once.
pub fn delivered_bytes() -> &'static metrics::Counter {
    static DELIVERED: OnceLock<metrics::Counter> = OnceLock::new();
    DELIVERED.get_or_init(|| metrics::counter!("vidhost_delivery_bytes_total"))
}

/// Counts a request refused by the rate limits (answered before routing,
/// so `vidhost_http_requests_total` does not see it).
pub fn rate_limited() {
    static LIMITED: OnceLock<metrics::Counter> = OnceLock::new();
    LIMITED
        .get_or_init(|| metrics::counter!("vidhost_rate_limited_total"))
        .increment(1);
}

/// The counter of requests the connection answered itself (fastpath.rs).
pub fn quick_answers() -> &'static metrics::Counter {
    static QUICK: OnceLock<metrics::Counter> = OnceLock::new();
    QUICK.get_or_init(|| metrics::counter!("vidhost_delivery_quick_answers_total"))
}

/// Sets `vidhost_uploads_in_progress` for the ways whose uploads are rows in
/// the catalog (presigned, multipart, tus) from the catalog, when scraped:
/// such an upload may start on one node and end on another (or expire
/// while no node is up), so counting up and down in each process drifted,
/// and went negative on the node that saw only its end. Every node reports
/// the cluster's number (aggregate with `max`, not `sum`). Form uploads
/// live within one request: those are this node's requests in flight
/// (`UploadTracker`). If the catalog cannot answer, the last numbers stay.
pub async fn count_uploads_in_progress(state: &crate::state::SharedState) {
    let Ok(rows) = state.db.count_uploads_by_method().await else {
        return;
    };
    for m in UploadMethod::ALL {
        if *m == UploadMethod::Form {
            continue;
        }
        let n = rows
            .iter()
            .find(|(name, _)| name == m.as_str())
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("vidhost_uploads_in_progress", "method" => m.as_str()).set(n as f64);
    }
}

/// Sets `vidhost_jobs_queued` and `vidhost_jobs_dead` from the catalog when
/// scraped, so every node reports them (the cluster's numbers: aggregate
/// with `max`), also a `serve` that runs no workers of its own (a `vidhost
/// worker` reports them at its `--metrics-listen` scrape the same way).
pub async fn count_jobs(state: &crate::state::SharedState) {
    if let (Ok(q), Ok(d)) = (
        state.db.count_jobs("queued").await,
        state.db.count_jobs("dead").await,
    ) {
        metrics::gauge!("vidhost_jobs_queued").set(q as f64);
        metrics::gauge!("vidhost_jobs_dead").set(d as f64);
    }
}

/// Counts an upload from start to its outcome; dropping it unfinished counts
/// as `failed` (the request died or errored).
pub struct UploadTracker {
    method: UploadMethod,
    start: Instant,
    done: bool,
}

impl UploadTracker {
    pub fn start(method: UploadMethod) -> Self {
        metrics::gauge!("vidhost_uploads_in_progress", "method" => method.as_str()).increment(1.0);
        UploadTracker {
            method,
            start: Instant::now(),
            done: false,
        }
    }

    pub fn finish(mut self, outcome: &'static str, size: Option<u64>) {
        self.record(outcome, size);
    }

    fn record(&mut self, outcome: &'static str, size: Option<u64>) {
        if self.done {
            return;
        }
        self.done = true;
        let m = self.method.as_str();
        metrics::gauge!("vidhost_uploads_in_progress", "method" => m).decrement(1.0);
        metrics::counter!("vidhost_uploads_total", "method" => m, "outcome" => outcome)
            .increment(1);
        if outcome == "completed" {
            metrics::histogram!("vidhost_upload_duration_seconds", "method" => m)
                .record(self.start.elapsed().as_secs_f64());
            if let Some(s) = size {
                metrics::histogram!("vidhost_upload_size_bytes", "method" => m).record(s as f64);
            }
        }
    }
}

impl Drop for UploadTracker {
    fn drop(&mut self) {
        self.record("failed", None);
    }
}

/// Outcome of an upload whose steps span several requests (presigned,
/// multipart): counted once at the end, timed from its creation.
pub fn record_upload_outcome(
    method: UploadMethod,
    outcome: &'static str,
    created_at_ms: i64,
    size: Option<u64>,
) {
    let m = method.as_str();
    metrics::counter!("vidhost_uploads_total", "method" => m, "outcome" => outcome).increment(1);
    if outcome == "completed" {
        let secs = (vidhost_core::time::now_ms() - created_at_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("vidhost_upload_duration_seconds", "method" => m).record(secs);
        if let Some(s) = size {
            metrics::histogram!("vidhost_upload_size_bytes", "method" => m).record(s as f64);
        }
    }
}
