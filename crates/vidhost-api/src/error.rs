//! The one place where errors of every layer become RFC 9457 problem+json
//! with a stable `code`.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vidhost_db::DbError;
use vidhost_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }
    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// 429 `rate_limited`, with `Retry-After` in whole seconds (at least 1).
    pub fn rate_limited(wait_ms: i64, detail: impl Into<String>) -> Self {
        let secs = ((wait_ms + 999) / 1000).max(1);
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
            .with_header(header::RETRY_AFTER, &secs.to_string())
    }
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        )
    }
    pub fn invalid_tags(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_tags", detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            .with_header(header::WWW_AUTHENTICATE, "Bearer")
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    pub fn video_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "video_not_found", "no such video")
    }
    pub fn upload_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "upload_not_found",
            "no such upload in progress",
        )
    }
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_token",
            "the token is invalid or has expired",
        )
    }
    pub fn invalid_media() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_media",
            "the uploaded bytes are not a video container we recognise",
        )
    }
    pub fn file_too_large(limit: u64, single_request: bool) -> Self {
        let hint = if single_request {
            "; use a multipart or tus upload for larger files"
        } else {
            ""
        };
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            format!("the file exceeds the maximum of {limit} bytes{hint}"),
        )
    }
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("`{ct}` is not an accepted video type"),
        )
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
    }
    pub fn unavailable(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "{what} unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {what} is unavailable; try again"),
        )
        .with_header(header::RETRY_AFTER, "5")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = json!({
            "type": "about:blank",
            "title": title,
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => ApiError::unavailable("database", m),
            DbError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            other => ApiError::internal(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the object does not exist",
            ),
            StoreError::TooLarge(n) => ApiError::file_too_large(n, false),
            StoreError::PartSize {
                part_number,
                expected,
                got,
            } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_part_size",
                format!("part {part_number} must be {expected} bytes, got {got}"),
            ),
            StoreError::PartMismatch(n) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_part",
                format!("part {n} is missing or its ETag does not match what was stored"),
            ),
            StoreError::Range => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "bad range",
            ),
            StoreError::Unavailable(m) | StoreError::Unreachable(m) => {
                ApiError::unavailable("object store", m)
            }
            StoreError::Busy => ApiError::new(
                StatusCode::LOCKED,
                "upload_locked",
                "another request is writing this upload's bytes; try again when it is answered",
            )
            .with_header(header::RETRY_AFTER, "1"),
            StoreError::Full => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "the server has no room for this upload",
            ),
            StoreError::Io(e) if is_client_abort(&e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "upload_interrupted",
                "the request body ended early",
            ),
            other => ApiError::internal(other),
        }
    }
}

/// A body stream error from hyper (client went away) arrives as an io::Error
/// wrapping axum's error type.
fn is_client_abort(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<axum::Error>())
}

/// Rejections of axum's extractors (bad JSON, bad path) as problem+json.
pub struct Json<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) if rej.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON, with `Content-Type: application/json`",
            )),
            Err(rej) => Err(ApiError::validation(rej.body_text())),
        }
    }
}

/// A query string that does not fit its route (`limit=abc`) is bad input
/// like any other: 422 `validation_failed`, not axum's plain-text 400.
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(ApiError::validation(rej.body_text())),
        }
    }
}

/// The problem+json code of an error answer made outside the handlers: the
/// router's own 404 and 405, and rejections of extractors without a wrapper
/// here (a path that is not valid UTF-8, …).
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "file_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Every error answer is problem+json: one that is not (the router's empty
/// 404 and 405, the rejection of an extractor that has no wrapper here) gets
/// the body its status calls for and keeps its other headers (`Allow` on a
/// 405). Answers below 400, and problem+json ones, pass untouched. Plain
/// and synchronous, since it runs for every answer: as an async middleware
/// (a boxed future each) it cost ~5-8 % of the requests per second of the
/// cheapest routes. The texts it drops are axum's own; the rejections worth
/// explaining (JSON, query strings, forms) have wrappers with their own.
pub fn problem_for_bare_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if status.as_u16() < 400 || is_problem {
        return resp;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such route",
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take this method",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut fresh = ApiError::new(status, code_for(status), detail).into_response();
    for (name, value) in parts.headers.drain().filter_map(|(n, v)| n.map(|n| (n, v))) {
        fresh.headers_mut().entry(name).or_insert(value);
    }
    fresh
}
