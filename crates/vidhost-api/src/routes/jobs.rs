//! Admin view of the processing queue and its dead letters.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Query};
use crate::state::SharedState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use vidhost_core::time::{now_ms, rfc3339};
use vidhost_db::Job;

fn job_json(j: &Job) -> serde_json::Value {
    json!({
        "id": j.id, "video_id": j.video_id, "kind": j.kind, "state": j.state,
        "attempts": j.attempts, "max_attempts": j.max_attempts, "run_at": rfc3339(j.run_at),
        "last_error": j.last_error, "created_at": rfc3339(j.created_at), "updated_at": rfc3339(j.updated_at),
    })
}

#[derive(Deserialize)]
pub struct JobsQuery {
    state: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    Query(q): Query<JobsQuery>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    if let Some(s) = q.state.as_deref() {
        if !matches!(s, "queued" | "running" | "failed" | "dead" | "done") {
            return Err(ApiError::validation(
                "state must be queued, running, failed, dead or done",
            ));
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let jobs = state.db.list_jobs(q.state.as_deref(), limit).await?;
    Ok(axum::Json(
        json!({ "items": jobs.iter().map(job_json).collect::<Vec<_>>() }),
    ))
}

pub async fn retry(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    match state.db.retry_job(&id, now_ms()).await? {
        Some(job) => {
            tracing::info!(admin = %caller.user.id, job = %id, "dead job re-queued");
            Ok(axum::Json(job_json(&job)))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "job_not_found",
            "no dead job with this id (or its video is being processed again already)",
        )),
    }
}
