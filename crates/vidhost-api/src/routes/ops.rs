//! Liveness, readiness, metrics and the OpenAPI document.

use crate::state::SharedState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// 200 when the database and the object store answer; 503 naming the part
/// that does not.
pub async fn readyz(State(state): State<SharedState>) -> impl IntoResponse {
    let (db, store) = tokio::join!(
        tokio::time::timeout(std::time::Duration::from_secs(5), state.db.ping()),
        tokio::time::timeout(std::time::Duration::from_secs(5), state.store.ping()),
    );
    // Anyone may ask: the answer names what fails, the log says how.
    let describe = |what: &str, r: Result<Result<(), String>, tokio::time::error::Elapsed>| match r
    {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the {what} fails");
            "error".to_owned()
        }
        Err(_) => "error: no answer within 5 s".to_owned(),
    };
    let db = describe("database", db.map(|r| r.map_err(|e| e.to_string())));
    let store = describe("object store", store.map(|r| r.map_err(|e| e.to_string())));
    let ok = db == "ok" && store == "ok";
    let failing: Vec<&str> = [("database", &db), ("storage", &store)]
        .iter()
        .filter(|(_, s)| s.as_str() != "ok")
        .map(|(n, _)| *n)
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body =
        json!({"status": if ok { "ok" } else { "unavailable" }, "database": db, "storage": store});
    if !ok {
        // A problem document: `status` is the HTTP status (RFC 9457).
        body["status"] = status.as_u16().into();
        body["type"] = "about:blank".into();
        body["title"] = "Service Unavailable".into();
        body["code"] = "not_ready".into();
        body["detail"] = format!("not ready: {}", failing.join(", ")).into();
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/problem+json".parse().expect("static"),
        );
        return resp;
    }
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    crate::metrics::count_uploads_in_progress(&state).await;
    crate::metrics::count_jobs(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
