//! The HTTP front end (`[http] listen`) and the metrics endpoint
//! (`[metrics] listen`), on the same dispatcher as ZeroMQ: the same limits,
//! deadlines and replies.
//!
//! - `POST /v1/call` takes vPoller's request object and answers vPoller's
//!   reply object;
//! - `GET /v1/call/{method}?hostname=..&name=..&properties=a,b&..` is the
//!   same request in a URL, for Zabbix's HTTP agent items and for curl;
//! - `GET /v1/methods`, `GET /healthz` (the process is up), `GET /readyz`
//!   (methods loaded, and per agent the session and mirror state);
//! - `GET /metrics` in the Prometheus exposition format.
//!
//! A request refused before any method ran gets 400 with vPoller's error
//! envelope, an unknown path 404, a body over 1 MiB 413. With a token
//! (`[http] token-file`), every path but `/healthz` needs
//! `Authorization: Bearer <token>`, compared in constant time.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

use super::dispatch::{Dispatcher, MAX_REQUEST_BYTES};
use super::metrics::Metrics;
use super::nats::NatsStats;
use super::route::{Answer, Answerer};
use crate::agents::RegistryAgents;
use crate::methods::Reply;

/// What the routes answer from.
#[derive(Clone)]
pub struct Backend {
    /// Who answers `/v1/call`: the methods here, or workers over NATS (not
    /// the ZeroMQ broker, which serves only its metrics).
    pub answerer: Option<Answerer>,
    /// The catalogue and sessions, where the methods run in this process.
    pub methods: Option<MethodSide>,
    /// The connection a NATS frontend's readiness depends on.
    pub nats: Option<Arc<NatsStats>>,
    pub metrics: Arc<Metrics>,
    pub token: Option<Arc<str>>,
}

#[derive(Clone)]
pub struct MethodSide {
    pub dispatcher: Arc<Dispatcher>,
    pub agents: Arc<RegistryAgents>,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    pub api: bool,
    pub metrics: bool,
}

pub fn router(backend: Backend, routes: Routes) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if routes.api && backend.answerer.is_some() {
        app = app
            .route("/v1/call", post(call_posted))
            .route("/v1/call/{method}", get(call_in_url));
    }
    if routes.api && backend.methods.is_some() {
        app = app.route("/v1/methods", get(methods));
    }
    if routes.metrics {
        app = app.route("/metrics", get(metrics));
    }
    app.fallback(not_found)
        .layer(middleware::from_fn_with_state(backend.clone(), authorized))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(backend)
}

/// Binds the listeners the configuration names (`[http] listen` with the
/// API and the metrics, `[metrics] listen` with the metrics) and serves them
/// until `stop` turns true. An address that cannot be bound is an error at
/// start-up, not a silent gap.
pub async fn start(
    config: &super::config::Config,
    backend: Backend,
    with_api: bool,
    stop: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut listeners: Vec<(SocketAddr, Routes)> = Vec::new();
    if with_api && let Some(address) = config.http_listen {
        listeners.push((
            address,
            Routes {
                api: true,
                metrics: true,
            },
        ));
    }
    if let Some(address) = config.metrics_listen
        && !listeners.iter().any(|(a, _)| *a == address)
    {
        listeners.push((
            address,
            Routes {
                api: false,
                metrics: true,
            },
        ));
    }
    let tls = match (&config.http_cert_file, &config.http_key_file) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err("[http] cert-file and key-file go together".into()),
    };
    let mut tasks = Vec::new();
    for (address, routes) in listeners {
        if tls.is_none() && !address.ip().is_loopback() {
            return Err(format!(
                "HTTP on {address}: a non-loopback address needs TLS ([http] cert-file and key-file)"
            ));
        }
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen for HTTP on {address}: {e}"))?;
        tracing::info!(
            api = routes.api,
            tls = tls.is_some(),
            "serving HTTP on {address}"
        );
        let app = router(backend.clone(), routes);
        let stopped = stopped_future(stop.clone());
        tasks.push(match &tls {
            Some(acceptor) => tokio::spawn(serve_tls(listener, acceptor.clone(), app, stopped)),
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!("HTTP on {address}: {e}");
                }
            }),
        });
    }
    Ok(tasks)
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped_future(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// rustls (ring, TLS 1.2 and 1.3) with the certificate chain and key of
/// the PEM files.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("[http] cert-file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "[http] cert-file {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("[http] key-file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("[http] TLS: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections until stopped; each is served by hyper with the
/// router. A handshake that fails ends that connection only.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    stopped: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "HTTPS connection: {e}");
            }
        });
    }
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The HTTP side of a process that runs methods; `nats` for a worker on
/// NATS, whose connection is in its metrics too.
pub fn backend(
    config: &super::config::Config,
    dispatcher: &Arc<Dispatcher>,
    agents: &Arc<RegistryAgents>,
    nats: Option<Arc<NatsStats>>,
) -> Result<Backend, String> {
    Ok(Backend {
        answerer: Some(Answerer::Here(dispatcher.clone())),
        methods: Some(MethodSide {
            dispatcher: dispatcher.clone(),
            agents: agents.clone(),
        }),
        metrics: Arc::new(Metrics::for_methods(
            dispatcher.clone(),
            agents.clone(),
            nats.clone(),
        )),
        nats,
        token: token(config)?,
    })
}

/// The HTTP side of the ZeroMQ broker: its metrics.
pub fn proxy_backend(
    config: &super::config::Config,
    status: Arc<dyn super::wire::Management>,
) -> Result<Backend, String> {
    Ok(Backend {
        answerer: None,
        methods: None,
        nats: None,
        metrics: Arc::new(Metrics::for_proxy(status)),
        token: token(config)?,
    })
}

/// The HTTP side of a frontend forwarding to NATS: calls go to the workers.
pub fn forwarding_backend(
    config: &super::config::Config,
    answerer: Answerer,
    nats: Arc<NatsStats>,
) -> Result<Backend, String> {
    Ok(Backend {
        answerer: Some(answerer),
        methods: None,
        metrics: Arc::new(Metrics::for_nats_frontend(nats.clone())),
        nats: Some(nats),
        token: token(config)?,
    })
}

fn token(config: &super::config::Config) -> Result<Option<Arc<str>>, String> {
    config
        .http_token_file
        .as_deref()
        .map(read_token)
        .transpose()
}

/// A reply as vPoller's JSON envelope (or a helper's text), with its status.
fn respond(status: StatusCode, answer: Answer) -> Response {
    let content_type = if answer.text {
        "text/plain; charset=utf-8"
    } else {
        "application/json"
    };
    (status, [(header::CONTENT_TYPE, content_type)], answer.body).into_response()
}

fn refused(status: StatusCode, msg: String) -> Response {
    respond(status, Answer::of(&Reply::refusal(msg)))
}

async fn dispatch(backend: &Backend, body: Bytes) -> Response {
    let Some(answerer) = &backend.answerer else {
        return refused(StatusCode::NOT_FOUND, "this process runs no methods".into());
    };
    let answer = answerer.answer(body).await;
    let status = if answer.refused {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    respond(status, answer)
}

async fn call_posted(
    State(backend): State<Backend>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body {
        Ok(body) => dispatch(&backend, body).await,
        Err(rejection) => refused(rejection.status(), rejection.body_text()),
    }
}

/// The request fields a URL may give; `properties` is comma-separated.
const URL_FIELDS: &[&str] = &[
    "hostname",
    "name",
    "properties",
    "key",
    "username",
    "password",
    "counter-name",
    "instance",
    "max-sample",
    "perf-interval",
    "helper",
];

/// A vPoller request object from a URL's method and query.
fn request_from_url(method: &str, query: &HashMap<String, String>) -> Result<Value, String> {
    let mut request = Map::new();
    request.insert("method".into(), Value::from(method));
    for (key, value) in query {
        if !URL_FIELDS.contains(&key.as_str()) {
            return Err(format!(
                "unknown query parameter {key:?} (known: {})",
                URL_FIELDS.join(", ")
            ));
        }
        let value = match key.as_str() {
            "properties" => Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(Value::from)
                    .collect(),
            ),
            "max-sample" => match value.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => return Err(format!("max-sample must be a number, not {value:?}")),
            },
            _ => Value::from(value.as_str()),
        };
        request.insert(key.clone(), value);
    }
    Ok(Value::Object(request))
}

async fn call_in_url(
    State(backend): State<Backend>,
    Path(method): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match request_from_url(&method, &query) {
        Ok(request) => dispatch(&backend, Bytes::from(request.to_string())).await,
        Err(e) => refused(StatusCode::BAD_REQUEST, e),
    }
}

async fn methods(State(backend): State<Backend>) -> Response {
    let Some(side) = &backend.methods else {
        return refused(StatusCode::NOT_FOUND, "this process runs no methods".into());
    };
    let catalog = side.dispatcher.host().catalog();
    let mut list: Vec<Value> = catalog
        .methods
        .values()
        .map(|m| {
            json!({
                "name": m.name,
                "description": m.description,
                "required": m.required,
                "repeatable": m.repeatable,
                "source": m.file.display().to_string(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    axum::Json(Value::Array(list)).into_response()
}

async fn readyz(State(backend): State<Backend>) -> Response {
    let Some(side) = &backend.methods else {
        return match &backend.nats {
            // A frontend on NATS is ready while it is connected.
            Some(nats) => {
                let ready = nats.is_connected();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (
                    status,
                    axum::Json(json!({"ready": ready, "nats": nats.to_json()})),
                )
                    .into_response()
            }
            // The broker: serving is being ready.
            None => axum::Json(json!({"ready": true})).into_response(),
        };
    };
    let methods = side.dispatcher.host().catalog().methods.len();
    let agents: Vec<Value> = side
        .agents
        .sessions()
        .into_iter()
        .map(|(hostname, c)| {
            json!({
                "hostname": hostname,
                "logged_in": c.session().is_logged_in(),
                "mirror": c.mirror_status().get("state").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    let status = if methods > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": methods > 0, "methods": methods, "agents": agents})),
    )
        .into_response()
}

async fn metrics(State(backend): State<Backend>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        backend.metrics.render(),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    refused(
        StatusCode::NOT_FOUND,
        format!("no such path: {}", request.uri().path()),
    )
}

async fn authorized(State(backend): State<Backend>, request: Request, next: Next) -> Response {
    let Some(token) = &backend.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" || bearer_matches(request.headers(), token) {
        return next.run(request).await;
    }
    let mut response = refused(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required (Authorization: Bearer ...)".into(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// Equality whose time depends on the lengths only, not on where the
/// first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a token file: its first line, which must not be empty.
pub fn read_token(path: &std::path::Path) -> Result<Arc<str>, String> {
    super::config::read_secret_file(path, "HTTP token").map(Arc::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_becomes_a_vpoller_request() {
        let query: HashMap<String, String> = [
            ("hostname", "vc01"),
            ("name", "vm 1"),
            ("properties", "runtime.powerState, name"),
            ("max-sample", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let request = request_from_url("vm.get", &query).expect("a request");
        assert_eq!(request["method"], "vm.get");
        assert_eq!(request["properties"], json!(["runtime.powerState", "name"]));
        assert_eq!(request["max-sample"], 3);
        let bad: HashMap<String, String> = [("hostnme".to_string(), "x".to_string())].into();
        assert!(request_from_url("vm.get", &bad).is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret-longer"));
    }
}
