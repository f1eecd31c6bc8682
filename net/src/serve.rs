//! One core's serving loop: accepts on its own SO_REUSEPORT listeners (the kernel spreads
//! connections over cores; a connection then lives on its core for life) and serves HTTP/1.1
//! and HTTP/2 on the same port, like etcd's client port (gRPC, /health, /metrics).

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};

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

/// The full router of a client port: etcd's gRPC services plus the HTTP endpoints.
/// Unknown paths answer as etcd: gRPC UNIMPLEMENTED to gRPC clients, 404 to the rest.
pub fn client_router(shard: ShardClient) -> axum::Router {
    let grpc = crate::grpc::router(shard.clone());
    grpc.merge(crate::gateway::routes(shard.clone()))
        .merge(crate::http::routes(shard))
        .fallback(crate::http::not_found)
        .with_state(())
}

/// The router of a metrics port: only the HTTP endpoints.
pub fn metrics_router(shard: ShardClient) -> axum::Router {
    crate::http::routes(shard).fallback(crate::http::not_found)
}

/// Serves `router` on every listener until the runtime stops. Must run inside a tokio
/// runtime (one current-thread runtime per core).
pub async fn serve(listeners: Vec<(StdListener, axum::Router)>) -> io::Result<()> {
    let mut tasks = Vec::new();
    for (listener, router) in listeners {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tasks.push(tokio::spawn(accept_loop(listener, router)));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn accept_loop(listener: tokio::net::TcpListener, router: axum::Router) {
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
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
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
        });
    }
}
