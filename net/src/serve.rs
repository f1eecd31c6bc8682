//! One core's serving loop: accepts on its own SO_REUSEPORT listeners (the kernel spreads
//! connections over cores; a connection then lives on its core for life) and serves HTTP/1.1
//! and HTTP/2 on the same port, like etcd's client port (gRPC, /health, /metrics).

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};

use crate::grpc::ClientService;
use crate::shard_api::ShardClient;

/// Connections queued in the kernel per listener before accept.
const LISTEN_BACKLOG: i32 = 1024;
/// HTTP/2 streams in flight per connection (a bound, as everything has one).
const H2_STREAMS_PER_CONNECTION_MAX: u32 = 4096;

/// Binds `host:port` with SO_REUSEPORT so every core can hold its own listener on it.
pub fn bind_reuseport(host_port: &str) -> io::Result<StdListener> {
    let addr: SocketAddr = host_port.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot resolve {host_port}"),
        )
    })?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The full service of a client port: etcd's gRPC services plus the HTTP endpoints.
/// Unknown paths answer as etcd: gRPC UNIMPLEMENTED to gRPC clients, 404 to the rest.
pub fn client_router(shard: ShardClient) -> ClientService {
    let grpc = crate::grpc::router(shard.clone());
    let router = grpc
        .merge(crate::gateway::routes(shard.clone()))
        .merge(crate::http::routes(shard.clone()))
        .fallback(crate::http::not_found)
        .with_state(());
    ClientService::client(shard, router)
}

/// The service of a metrics port: only the HTTP endpoints.
pub fn metrics_router(shard: ShardClient) -> ClientService {
    ClientService::router_only(crate::http::routes(shard).fallback(crate::http::not_found))
}

/// Serves `router` on every listener until the runtime stops. Must run inside a tokio
/// runtime (one current-thread runtime per core).
pub async fn serve(listeners: Vec<(StdListener, ClientService)>) -> io::Result<()> {
    serve_with_tls(listeners.into_iter().map(|(l, r)| (l, r, None)).collect()).await
}

/// Longest a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// [`serve`], with TLS on the listeners that have a server configuration (https URLs):
/// there a connection that does not complete a TLS handshake gets nothing.
pub async fn serve_with_tls(
    listeners: Vec<(
        StdListener,
        ClientService,
        Option<Arc<rustls::ServerConfig>>,
    )>,
) -> io::Result<()> {
    let mut tasks = Vec::new();
    for (listener, router, tls) in listeners {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        crate::park::watch(&listener);
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        tasks.push(tokio::spawn(accept_loop(listener, router, tls)));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: ClientService,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                log::warn!("accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        crate::park::watch(&stream);
        let Some(tls) = tls.clone() else {
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(serve_connection(stream, service));
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(
                std::time::Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
                tls.accept(stream),
            );
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return log::debug!("TLS handshake failed: {err}"),
                Err(_) => return log::debug!("TLS handshake timed out"),
            };
            // A verified client certificate's CN names the caller (--client-cert-auth).
            let name = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::tls::common_name(cert))
                .map(|cn| crate::auth::PeerCertName(cn.into()));
            let service = tower::ServiceExt::map_request(
                router,
                move |mut request: http::Request<hyper::body::Incoming>| {
                    if let Some(name) = &name {
                        request.extensions_mut().insert(name.clone());
                    }
                    request
                },
            );
            serve_connection(stream, TowerToHyperService::new(service)).await;
        });
    }
}

/// Serves HTTP/1.1 and HTTP/2 on one accepted connection until it ends.
async fn serve_connection<S, Svc>(stream: S, service: Svc)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<axum::body::Body>,
        > + Clone
        + Send
        + 'static,
    Svc::Future: Send + 'static,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(H2_STREAMS_PER_CONNECTION_MAX);
    let stream = crate::authority::AuthorityRepair::new(stream);
    if let Err(err) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        log::debug!("connection ended: {err}");
    }
}
