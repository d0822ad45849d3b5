//! The OpenAPI 3.1 document, generated from the route table in `routes`.

use crate::routes::OPERATIONS;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

fn build() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = Map::new();
        for code in op.ok {
            responses.insert(code.to_string(), json!({"description": "success"}));
        }
        responses.insert(
            "default".into(),
            json!({"description": "problem details (RFC 9457) with a stable `code`",
                   "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}),
        );
        let mut operation = json!({
            "tags": [op.tag],
            "summary": op.summary,
            "operationId": format!("{}_{}", op.method, op.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if op.auth {
            operation["security"] = json!([{"bearer": []}]);
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "vidhost", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Self-hosted video platform: uploads, processing, delivery."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Problem": {
                "type": "object",
                "required": ["type", "title", "status", "code"],
                "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "code": {"type": "string"}, "detail": {"type": "string"}
                }
            }}
        }
    })
}

pub fn spec() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

pub async fn document() -> impl IntoResponse {
    axum::Json(spec().clone())
}
