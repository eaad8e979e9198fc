//! Operations endpoints: `/metrics`, `/healthz`, `/readyz` (on the HTTP listener or a separate
//! metrics listener), and the admin API, off unless a bearer token is configured and bound to
//! loopback by default:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /admin/allocations` | list allocations: id, username, 5-tuple, relayed addresses, age, bytes |
//! | `DELETE /admin/allocations/{id}` | end one allocation |
//! | `DELETE /admin/users/{user}/allocations` | end all of a user's allocations |
//! | `GET /admin/rooms` | list signaling rooms and participants |
//! | `DELETE /admin/rooms/{room}` | close a room (participants are disconnected) |
//! | `POST /admin/credentials?user=NAME&ttl=600` | mint a TURN REST credential |
//! | `PUT /admin/log` (body: a tracing filter) | change the log filter |
//! | `POST /admin/reload` | reload the config file (like SIGHUP) |
//!
//! No `Authorization` header → 401; a wrong token → 403 (constant-time comparison).

use super::socketio::Hub;
use crate::auth::{Secret, mint_rest};
use crate::ops::Ops;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the operations endpoints can see and do.
#[derive(Clone)]
pub struct OpsState {
    /// The running server.
    pub ops: Ops,
    /// Signaling rooms, when the web side runs.
    pub hub: Option<Arc<Hub>>,
    /// Admin bearer token (None: admin API off).
    pub token: Option<Secret>,
    /// Credential lifetime for minted credentials.
    pub ttl: u64,
}

impl std::fmt::Debug for OpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsState")
            .field("admin", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

async fn metrics(State(st): State<Arc<OpsState>>) -> Response {
    // The shards are asked for their counters: wait for them off the async workers.
    let signaling = st.hub.as_ref().map(|h| h.counts());
    let ops = st.ops.clone();
    let Ok(body) = tokio::task::spawn_blocking(move || ops.metrics(signaling)).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn readyz(State(st): State<Arc<OpsState>>) -> Response {
    if st.ops.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if st.hub.as_ref().is_some_and(|h| !h.ready()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "signaling store (redis) unreachable\n",
        )
            .into_response();
    }
    if st.ops.relay_ports_exhausted() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no relay ports available\n",
        )
            .into_response();
    }
    "ready\n".into_response()
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn ops_router(st: Arc<OpsState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(st)
}

/// `/healthz`, `/readyz` without `/metrics` (an HTTP listener that is not on loopback).
pub fn health_router(st: Arc<OpsState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(st)
}

fn check(st: &OpsState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &st.token else {
        return Err(Box::new(
            (StatusCode::NOT_FOUND, "admin API disabled\n").into_response(),
        ));
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing bearer token\n",
            )
                .into_response(),
        ));
    };
    let ok: bool = given.as_bytes().ct_eq(token.expose()).into();
    if !ok {
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "wrong token\n").into_response(),
        ));
    }
    Ok(())
}

macro_rules! guard {
    ($st:expr, $h:expr) => {
        if let Err(r) = check(&$st, &$h) {
            return *r;
        }
    };
}

async fn list_allocations(State(st): State<Arc<OpsState>>, h: HeaderMap) -> Response {
    guard!(st, h);
    let c = st.ops.clone();
    let list = tokio::task::spawn_blocking(move || c.list_allocations())
        .await
        .unwrap_or_default();
    let v: Vec<serde_json::Value> = list
        .into_iter()
        .map(|(id, a)| {
            let mut j = serde_json::to_value(&a).unwrap_or_default();
            j["id"] = json!(id);
            j
        })
        .collect();
    axum::Json(json!({ "allocations": v })).into_response()
}

async fn end_allocation(
    State(st): State<Arc<OpsState>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guard!(st, h);
    let c = st.ops.clone();
    let n = tokio::task::spawn_blocking(move || c.end_allocations(Some(&id), None))
        .await
        .unwrap_or(0);
    if n == 0 {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"ended": 0}))).into_response();
    }
    axum::Json(json!({ "ended": n })).into_response()
}

async fn end_user(
    State(st): State<Arc<OpsState>>,
    h: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    guard!(st, h);
    let c = st.ops.clone();
    let n = tokio::task::spawn_blocking(move || c.end_allocations(None, Some(&user)))
        .await
        .unwrap_or(0);
    axum::Json(json!({ "ended": n })).into_response()
}

async fn list_rooms(State(st): State<Arc<OpsState>>, h: HeaderMap) -> Response {
    guard!(st, h);
    let rooms = st.hub.as_ref().map(|h| h.snapshot()).unwrap_or_default();
    axum::Json(json!({ "rooms": rooms })).into_response()
}

async fn close_room(
    State(st): State<Arc<OpsState>>,
    h: HeaderMap,
    Path(room): Path<String>,
) -> Response {
    guard!(st, h);
    match st.hub.as_ref().map(|h| h.close_room(&room)) {
        Some(n) if n > 0 => {
            axum::Json(json!({ "closed": room, "participants": n })).into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({ "closed": null }))).into_response(),
    }
}

#[derive(Deserialize)]
struct MintQuery {
    user: Option<String>,
    ttl: Option<u64>,
}

async fn mint(
    State(st): State<Arc<OpsState>>,
    h: HeaderMap,
    Query(q): Query<MintQuery>,
) -> Response {
    guard!(st, h);
    let creds = st.ops.credentials();
    let Some(secret) = creds.secrets().first() else {
        return (StatusCode::CONFLICT, "no REST secret configured\n").into_response();
    };
    let ttl = q.ttl.unwrap_or(st.ttl).clamp(1, creds.rest_max_ttl());
    let name = q.user.unwrap_or_else(|| "admin".into());
    if name.len() > 128 || name.contains(':') {
        return (
            StatusCode::BAD_REQUEST,
            "user must be at most 128 characters without ':'\n",
        )
            .into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (username, password) = mint_rest(secret, &name, ttl, now);
    axum::Json(json!({ "username": username, "password": password, "ttl": ttl })).into_response()
}

async fn set_log(State(st): State<Arc<OpsState>>, h: HeaderMap, body: String) -> Response {
    guard!(st, h);
    if !st.ops.can_set_log() {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "log filter cannot be changed here\n",
        )
            .into_response();
    }
    match st.ops.set_log_filter(body.trim()) {
        Ok(()) => {
            tracing::info!(filter = %body.trim(), "log filter changed by the admin API");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn reload(State(st): State<Arc<OpsState>>, h: HeaderMap) -> Response {
    guard!(st, h);
    if !st.ops.can_reload() {
        return (StatusCode::NOT_IMPLEMENTED, "no config file to reload\n").into_response();
    }
    let ops = st.ops.clone();
    match tokio::task::spawn_blocking(move || ops.reload()).await {
        Ok(Ok(notes)) => axum::Json(json!({ "applied": true, "notes": notes })).into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "applied": false, "errors": e })),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The admin API router.
pub fn admin_router(st: Arc<OpsState>) -> Router {
    Router::new()
        .route("/admin/allocations", get(list_allocations))
        .route("/admin/allocations/{id}", delete(end_allocation))
        .route("/admin/users/{user}/allocations", delete(end_user))
        .route("/admin/rooms", get(list_rooms))
        .route("/admin/rooms/{room}", delete(close_room))
        .route("/admin/credentials", post(mint))
        .route("/admin/log", put(set_log))
        .route("/admin/reload", post(reload))
        .with_state(st)
}

/// Serve `router` on `addr` until `shutdown`, bounded like the page's listener (header
/// deadline, idle close) with small caps: these listeners serve operators and scrapers.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = super::limits::HttpLimits::default();
    let gate = super::limits::ConnGate::with_cap(16, 64);
    super::limits::serve_bounded(
        listener,
        router,
        super::limits::Front::Plain,
        limits,
        gate,
        shutdown,
    )
    .await
}
