//! The HTTP API of vidhost: the only crate that knows axum.
//!
//! [`App::build`] connects the catalog and the object store and loads the
//! signing keys; [`App::run`] serves until the shutdown future resolves.

pub mod audit;
pub mod auth;
pub mod client;
mod conn;
pub mod error;
mod fastpath;
pub mod grants;
pub mod keys;
pub mod lockout;
pub mod metrics;
pub mod mfa;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod sendfile;
pub mod state;
pub mod views;
mod web;

use anyhow::Context;
use axum::http::{header, HeaderName, HeaderValue, Method};
use keys::{KeyRing, Signer};
use state::{AppState, SharedState};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use vidhost_core::domain::Role;
use vidhost_core::Config;

/// What tower-http's CORS layer (with a mirrored origin) puts in `Vary`.
pub(crate) const CORS_VARY: &str =
    "origin, access-control-request-method, access-control-request-headers";

pub struct App {
    pub state: SharedState,
    pub pipeline: Arc<vidhost_pipeline::Pipeline>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        prepare_data_dir(&config)?;
        let db_url = config.database_url();
        let db = vidhost_db::connect(&db_url).await.with_context(|| {
            format!(
                "opening the database {}",
                vidhost_core::config::redact_url(&db_url)
            )
        })?;
        db.migrate().await.context("applying database migrations")?;
        let store = vidhost_store::open(&config.storage_url())
            .await
            .context("opening the object store")?;
        let jwt_keys = KeyRing::load(&db, keys::JWT)
            .await
            .map_err(|e| anyhow::anyhow!("signing keys: {}", e.detail))?;
        let grants = Signer {
            ring: KeyRing::load(&db, keys::GRANT)
                .await
                .map_err(|e| anyhow::anyhow!("signing keys: {}", e.detail))?,
        };
        let viewer_key = KeyRing::load(&db, keys::VIEWER)
            .await
            .map_err(|e| anyhow::anyhow!("signing keys: {}", e.detail))?
            .current();
        let metrics = metrics::Metrics::install();
        // Fails at start, with a clear message, when ffmpeg/ffprobe are missing.
        let tools = vidhost_pipeline::Tools::discover(
            config.processing.workers.max(1),
            config.processing.tool_memory_mb,
        )?;
        let pipeline = Arc::new(vidhost_pipeline::Pipeline {
            config: config.clone(),
            db: db.clone(),
            store: store.clone(),
            tools,
        });
        let limits = ratelimit::Limits::new(&config.rate_limits);
        let state = Arc::new(AppState {
            config,
            db,
            store,
            jwt_keys,
            grants,
            viewer_key,
            metrics,
            original_types: Default::default(),
            videos_seen: Default::default(),
            seen_generation: Default::default(),
            users: Default::default(),
            sessions: Default::default(),
            tokens: Default::default(),
            limits,
            stopping: tokio_util::sync::CancellationToken::new(),
        });
        bootstrap_admin(&state).await?;
        Ok(App { state, pipeline })
    }

    pub fn router(&self) -> axum::Router {
        let cors = CorsLayer::new()
            .allow_origin(allowed_origins(&self.state.config.cors.allowed_origins))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(
                [
                    "authorization",
                    "content-type",
                    "range",
                    "if-range",
                    "tus-resumable",
                    "upload-length",
                    "upload-metadata",
                    "upload-offset",
                    "upload-checksum",
                    "upload-defer-length",
                    "x-requested-with",
                ]
                .map(HeaderName::from_static),
            )
            .expose_headers(
                [
                    "etag",
                    "location",
                    "content-range",
                    "retry-after",
                    "upload-offset",
                    "upload-length",
                    "upload-metadata",
                    "upload-expires",
                    "tus-resumable",
                    "tus-version",
                    "tus-extension",
                    "tus-max-size",
                    "tus-checksum-algorithm",
                ]
                .map(HeaderName::from_static),
            )
            .max_age(Duration::from_secs(600));
        // Only the metrics layer needs the matched route, so only it wraps
        // each route; `Router::layer` clones a route's whole layer stack on
        // every request, so everything else wraps the router once, outside.
        let app = routes::router()
            .with_state(self.state.clone())
            .layer(axum::middleware::from_fn(metrics::track_http));
        // Rate limits sit inside CORS: a browser page can read a 429 and its
        // Retry-After only if the answer carries the CORS headers too.
        let app = tower::ServiceBuilder::new()
            .map_response(error::problem_for_bare_errors)
            .option_layer(self.state.limits.as_ref().map(|_| {
                axum::middleware::from_fn_with_state(self.state.clone(), ratelimit::limit)
            }))
            .service(app);
        // tower-http answers every OPTIONS as a CORS preflight; tus clients
        // also send plain OPTIONS (no Access-Control-Request-Method) to
        // discover capabilities, and those must reach the tus handler.
        let with_cors = tower::Layer::layer(&cors, app.clone());
        // Only browsers act on CORS headers, and they send `Origin` on every
        // cross-origin request: the others (players, CDNs, curl, the CLI)
        // skip the CORS layer's work and get just its `Vary`, so a cache
        // never hands a browser an answer made without its origin.
        let dispatch = tower::service_fn(move |req: axum::extract::Request| {
            use futures::future::{Either, FutureExt};
            let plain_options = req.method() == Method::OPTIONS
                && !req.headers().contains_key("access-control-request-method");
            if plain_options {
                Either::Left(Either::Left(tower::ServiceExt::oneshot(app.clone(), req)))
            } else if !req.headers().contains_key(header::ORIGIN) {
                Either::Left(Either::Right(
                    tower::ServiceExt::oneshot(app.clone(), req).map(|r| {
                        r.map(|mut resp| {
                            resp.headers_mut()
                                .append(header::VARY, HeaderValue::from_static(CORS_VARY));
                            resp
                        })
                    }),
                ))
            } else {
                Either::Right(tower::ServiceExt::oneshot(with_cors.clone(), req))
            }
        });
        let outer = tower::ServiceBuilder::new()
            .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::extract::Request| {
                    tracing::debug_span!("http", method = %req.method(), path = %loggable_path(req.uri().path()))
                },
            ))
            .layer(axum::middleware::from_fn(conn::close_if_body_unread))
            .service(dispatch);
        axum::Router::new().fallback_service(outer)
    }

    /// Serves on `listener` until `shutdown` resolves; background sweeps run alongside.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sweeper = tokio::spawn(sweep_loop(self.state.clone()));
        let upkeep = tokio::spawn(self.state.metrics.clone().upkeep_loop());
        // The workers stop with the server's children: at the signal.
        let stop_workers = self.state.stopping.child_token();
        let n = self.state.config.processing.workers;
        let workers = tokio::spawn(self.pipeline.clone().run(n, stop_workers.clone()));
        let app = self.router();
        // Objects that are files here can be answered by the connection
        // itself; on shutdown, those answers finish before hyper's
        // graceful shutdown closes the connections.
        let drain = Arc::new(fastpath::Drain::default());
        let quick =
            (self.state.store.kind() == "disk").then(|| (self.state.clone(), drain.clone()));
        let listener = sendfile::Listener::new(listener, quick);
        let stopping = self.state.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            // At once, not when the last connection closes: the workers
            // hand their jobs back, event streams end.
            stopping.cancel();
            drain.finish(Duration::from_secs(30)).await;
        };
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<sendfile::ConnInfo>(),
        )
        .with_graceful_shutdown(shutdown);
        let stopping = self.state.stopping.clone();
        let result = tokio::select! {
            r = serve => r,
            // Answers still running a minute after the signal (a slow
            // download) are cut rather than hold the stop up for ever.
            _ = async { stopping.cancelled().await; tokio::time::sleep(GRACE).await } => {
                tracing::warn!("stopping with answers still running after {} s", GRACE.as_secs());
                Ok(())
            }
        };
        sweeper.abort();
        upkeep.abort();
        stop_workers.cancel();
        let _ = workers.await;
        result.context("serving HTTP")
    }

    /// `vidhost worker`: processing only, until `shutdown` resolves.
    /// Processing workers only. With `metrics`, the process also answers
    /// `GET /metrics` and `/healthz` there: its job counters and durations
    /// exist only in it.
    pub async fn run_workers(
        self,
        metrics: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = tokio_util::sync::CancellationToken::new();
        let n = self.state.config.processing.workers.max(1);
        let workers = tokio::spawn(self.pipeline.clone().run(n, stop.clone()));
        let upkeep = tokio::spawn(self.state.metrics.clone().upkeep_loop());
        let scrape = metrics.map(|listener| {
            let router = axum::Router::new()
                .route("/metrics", axum::routing::get(routes::ops::metrics))
                .route("/healthz", axum::routing::get(routes::ops::healthz))
                .with_state(self.state.clone());
            tokio::spawn(async move { axum::serve(listener, router).await })
        });
        shutdown.await;
        if let Some(s) = scrape {
            s.abort();
        }
        upkeep.abort();
        stop.cancel();
        let _ = workers.await;
        Ok(())
    }
}

/// How long a stopping server lets answers in flight finish.
const GRACE: Duration = Duration::from_secs(60);

/// Origins the CORS layer answers: any (echoed back) when the list holds
/// `"*"`, else just those listed (validated at start).
fn allowed_origins(list: &[String]) -> AllowOrigin {
    if list.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    }
}

/// Paths as logs may show them: play grants are secrets, so they are cut
/// out; query strings (`?access_token=`) are never logged at all.
fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/play/") {
        Some(rest) => format!(
            "/play/{{token}}/{}",
            rest.split_once('/').map(|x| x.1).unwrap_or("")
        ),
        None if path.starts_with("/api/v1/uploads/direct/") => {
            "/api/v1/uploads/direct/{token}".to_owned()
        }
        None => path.to_owned(),
    }
}

fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &config.data_dir;
    let needs_dir = config.database_url.is_none() || config.storage_url.is_none();
    if needs_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to its owner", dir.display()))?;
    }
    Ok(())
}

async fn bootstrap_admin(state: &SharedState) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (
        &state.config.bootstrap_admin_email,
        &state.config.bootstrap_admin_password,
    ) else {
        return Ok(());
    };
    if state.db.count_admins().await? > 0 {
        return Ok(());
    }
    match routes::accounts::create_user(state, email, password, None, Role::Admin).await {
        Ok(u) => tracing::info!(user = %u.id, "bootstrap admin created"),
        Err(e) if e.code == "email_taken" => {
            let u = state
                .db
                .user_by_email(email)
                .await?
                .context("bootstrap admin vanished")?;
            state
                .db
                .update_user(&u.id, Some(Role::Admin), Some(false), None)
                .await?;
            tracing::info!(user = %u.id, "existing user promoted to bootstrap admin");
        }
        Err(e) => anyhow::bail!("bootstrap admin: {}", e.detail),
    }
    Ok(())
}

async fn sweep_loop(state: SharedState) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(state.config.uploads.sweep_interval_s));
    loop {
        tick.tick().await;
        if let Err(e) = routes::uploads::sweep_expired(&state).await {
            tracing::warn!(error = %e.detail, "sweeping expired uploads");
        }
        if let Err(e) = routes::videos::retry_cleanups(&state).await {
            tracing::warn!(error = %e.detail, "removing deleted videos' objects");
        }
        if let Some(l) = &state.limits {
            l.upkeep();
        }
        match routes::analytics::fold_idle_sessions(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "playback sessions folded into daily totals"),
            Err(e) => tracing::warn!(error = %e.detail, "folding playback sessions"),
        }
        // Keys a rotation added (on any node) start signing here, and keys
        // retired (on any node) stop verifying.
        for ring in [&state.jwt_keys, &state.grants.ring] {
            match keys::retire_superseded(&state.db, &state.config, ring.purpose()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    purpose = ring.purpose(),
                    retired = n,
                    "superseded signing keys retired"
                ),
                Err(e) => tracing::warn!(error = %e.detail, "retiring superseded signing keys"),
            }
            if let Err(e) = ring.reload(&state.db).await {
                tracing::warn!(error = %e.detail, "reloading signing keys");
            }
        }
        // Past the expiry (by an hour, by default): every upload that old
        // has been swept.
        let u = &state.config.uploads;
        let idle = Duration::from_secs(u.expiry_s + u.leftovers_after_s);
        match state.store.sweep_leftovers(idle).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "leftovers of interrupted writes removed"),
            Err(e) => tracing::warn!(error = %e, "sweeping leftovers of interrupted writes"),
        }
    }
}
