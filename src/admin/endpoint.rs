//! The admin endpoint: `/metrics`, `/healthz`, `/readyz`, `/status` and
//! `POST /reload`, served with hyper on the first shard's executor, on an
//! address of its own (never the client or peer port).
//!
//! Reads what the shards publish ([`crate::ops::metrics`]) through the
//! [`Registry`]; renders nothing itself (the text is made in the pure
//! `prometheus` module, the JSON in `metrics`). Small and bounded: a few
//! connections at a time, each with read and write deadlines, request
//! bodies ignored.

use crate::ops::metrics::{self, Inbound, ServerView, ShardFigures, ShardMetrics};
use crate::ops::prometheus;
use crate::rt::http::GlommioIo;
use bytes::Bytes;
use glommio::net::{TcpListener, TcpStream};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;

/// A request must arrive, and a reply be taken, within this.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the admin endpoint reads: the server's identity, every shard's
/// metrics and the incoming links. Shared by the shards (`Arc`); the locks
/// are taken at start-up, on a reload and per scrape, never per command.
pub(crate) struct Registry {
    server: String,
    /// The client and peer addresses, as bound (a port 0 resolved).
    addresses: Mutex<(String, String)>,
    started: Instant,
    shards: Mutex<Vec<Arc<ShardMetrics>>>,
    /// Incoming links, for readiness.
    pub inbound: Arc<Inbound>,
    /// The server's config in force, and its reloads.
    config: Arc<dyn ConfigInForce>,
    /// Bytes of damaged journal tail the start cut off.
    journal_cut_bytes: u64,
}

/// What the admin endpoint asks of the config in force: the server's
/// neighbours now (a reload changes them) and a reload itself.
pub(crate) trait ConfigInForce: Send + Sync {
    /// This server's neighbours in the config in force, in config order.
    fn neighbours(&self) -> Vec<String>;
    /// Re-reads the config (`POST /reload`); `Err` with the reasons when
    /// the new config is refused.
    fn reload(&self) -> Result<String, String>;
}

impl Registry {
    /// The registry of one server whose config in force is `config`.
    pub(crate) fn new(server: &str, config: Arc<dyn ConfigInForce>) -> Registry {
        Registry {
            server: server.to_owned(),
            addresses: Mutex::new((String::new(), String::new())),
            started: Instant::now(),
            shards: Mutex::new(Vec::new()),
            inbound: Arc::new(Inbound::default()),
            config,
            journal_cut_bytes: 0,
        }
    }

    /// Where the server listens, once its shards have bound (before any
    /// admin request can be served).
    pub(crate) fn set_addresses(&self, client: SocketAddr, peer: SocketAddr) {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        *addresses = (client.to_string(), peer.to_string());
    }

    /// What the start's journal replay cut off as damaged (known before
    /// the registry is shared).
    pub(crate) fn with_journal_cut_bytes(self, bytes: u64) -> Registry {
        Registry {
            journal_cut_bytes: bytes,
            ..self
        }
    }

    /// A shard's metrics join the registry as the shard starts.
    pub(crate) fn add_shard(&self, metrics: Arc<ShardMetrics>) {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        shards.push(metrics);
        shards.sort_by_key(|m| m.shard);
    }

    /// Everything at this moment.
    pub(crate) fn view(&self) -> ServerView {
        let shards = self
            .shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (listen, peer_listen) = self
            .addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        ServerView {
            server: self.server.clone(),
            listen,
            peer_listen,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            neighbours: self.config.neighbours(),
            shards: shards.iter().map(|m| ShardFigures::of(m)).collect(),
            incoming: self.inbound.views(),
            journal_cut_bytes: self.journal_cut_bytes,
        }
    }

    /// Re-reads the config in force.
    pub(crate) fn reload(&self) -> Result<String, String> {
        self.config.reload()
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Serves the admin endpoint until `stopped` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let open = Rc::new(Cell::new(0usize));
    let accepting = async {
        loop {
            if open.get() >= MAX_CONNECTIONS {
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
            match listener.accept().await {
                Ok(stream) => {
                    open.set(open.get() + 1);
                    let (registry, open) = (registry.clone(), open.clone());
                    glommio::spawn_local(async move {
                        serve_connection(stream, registry).await;
                        open.set(open.get() - 1);
                    })
                    .detach();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    futures_lite::future::or(accepting, stopped).await;
}

async fn serve_connection(stream: TcpStream, registry: Arc<Registry>) {
    // A client that stalls is dropped: the admin port must not pin memory.
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let _ = stream.set_write_timeout(Some(DEADLINE));
    let service = hyper::service::service_fn(move |req| {
        let registry = registry.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&registry, &req)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No hyper timer is installed (glommio timers are not Send); the
    // socket deadlines above bound a slow request instead.
    builder.header_read_timeout(None).keep_alive(true);
    if let Err(e) = builder
        .serve_connection(GlommioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "admin connection ended");
    }
}

/// The reply to one request.
fn answer(registry: &Registry, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus::render_prometheus(&registry.view(), VERSION),
        ),
        (&Method::GET, "/healthz") => reply(
            StatusCode::OK,
            "application/json",
            // The pid lets a starter (`herd up`) tell its own child from a
            // server that already held the address.
            serde_json::json!({"alive": true, "server": registry.server, "pid": std::process::id()})
                .to_string(),
        ),
        (&Method::GET, "/readyz") => {
            let why = metrics::not_ready(&registry.view());
            let status = if why.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({"ready": why.is_empty(), "not_ready": why});
            reply(status, "application/json", body.to_string())
        }
        (&Method::GET, "/status") => reply(
            StatusCode::OK,
            "application/json",
            metrics::status_json(&registry.view(), VERSION).to_string(),
        ),
        (&Method::POST, "/reload") => match registry.reload() {
            Ok(said) => reply(
                StatusCode::OK,
                "application/json",
                serde_json::json!({"reloaded": true, "message": said}).to_string(),
            ),
            Err(why) => reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application/json",
                serde_json::json!({"reloaded": false, "message": why}).to_string(),
            ),
        },
        (_, "/metrics" | "/healthz" | "/readyz" | "/status") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        ),
        (_, "/reload") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST only\n".to_owned(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz, /status or POST /reload\n".to_owned(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
