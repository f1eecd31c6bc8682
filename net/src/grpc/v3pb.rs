//! The wire side of etcd's Lock (`v3lockpb`) and Election (`v3electionpb`) services.
//!
//! etcd-client compiles their .proto files but exports neither the request messages nor
//! the server traits, so the requests are declared here (same field numbers and types as
//! etcd's v3lock.proto and v3election.proto) and the services are plain tower services
//! that hand each method path to tonic's gRPC codec. The response messages etcd-client
//! does export are used as they are: their encoding is etcd's by construction.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub(crate) use corekv_engine::pb::{
    PbCampaignResponse as CampaignResponse, PbLeaderKey as LeaderKey,
    PbLeaderResponse as LeaderResponse, PbLockResponse as LockResponse,
    PbProclaimResponse as ProclaimResponse, PbResignResponse as ResignResponse,
    PbUnlockResponse as UnlockResponse,
};

/// v3lockpb.LockRequest
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LockRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub lease: i64,
}

/// v3lockpb.UnlockRequest
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct UnlockRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

/// v3electionpb.CampaignRequest
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CampaignRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub lease: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

/// v3electionpb.LeaderRequest (also Observe's request)
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeaderRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
}

/// v3electionpb.ResignRequest
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResignRequest {
    #[prost(message, optional, tag = "1")]
    pub leader: Option<LeaderKey>,
}

/// v3electionpb.ProclaimRequest
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProclaimRequest {
    #[prost(message, optional, tag = "1")]
    pub leader: Option<LeaderKey>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The future a hand-written service returns for one HTTP/2 request.
pub(crate) type HttpFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// Message size limits applied to every method of a service.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub decode_max: usize,
    pub encode_max: usize,
}

/// A closure as the tower service tonic's `Grpc` drives for one call.
struct Handler<F>(F);

impl<F, Fut, Req, Resp> tower::Service<Request<Req>> for Handler<F>
where
    F: FnMut(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Req>) -> Fut {
        (self.0)(request)
    }
}

fn grpc<Req, Resp>(limits: Limits) -> tonic::server::Grpc<tonic_prost::ProstCodec<Resp, Req>>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
        .apply_max_message_size_config(Some(limits.decode_max), Some(limits.encode_max))
}

/// Serves one unary call: decodes `Req`, runs `f`, encodes its answer.
pub(crate) fn unary<Req, Resp, F, Fut>(req: http::Request<Body>, limits: Limits, f: F) -> HttpFuture
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    Box::pin(async move {
        let mut f = Some(f);
        let handler = Handler(move |request: Request<Req>| {
            let f = f.take();
            async move {
                // tonic calls a unary handler exactly once.
                let f = f.ok_or_else(|| Status::internal("corekv: handler called twice"))?;
                f(request.into_inner()).await.map(Response::new)
            }
        });
        Ok(grpc::<Req, Resp>(limits).unary(handler, req).await)
    })
}

/// Serves one server-streaming call: decodes `Req`, runs `f`, streams what it returns.
pub(crate) fn server_streaming<Req, Resp, F, Fut, S>(
    req: http::Request<Body>,
    limits: Limits,
    f: F,
) -> HttpFuture
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<S, Status>> + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    Box::pin(async move {
        let mut f = Some(f);
        let handler = Handler(move |request: Request<Req>| {
            let f = f.take();
            async move {
                let f = f.ok_or_else(|| Status::internal("corekv: handler called twice"))?;
                f(request.into_inner()).await.map(Response::new)
            }
        });
        Ok(grpc::<Req, Resp>(limits)
            .server_streaming(handler, req)
            .await)
    })
}

/// etcd's answer to a method path the service does not have.
pub(crate) fn unknown_method() -> HttpFuture {
    Box::pin(async {
        let mut response = http::Response::new(Body::default());
        let headers = response.headers_mut();
        headers.insert(
            Status::GRPC_STATUS,
            (tonic::Code::Unimplemented as i32).into(),
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            tonic::metadata::GRPC_CONTENT_TYPE,
        );
        Ok(response)
    })
}

/// etcdserverpb.AuthStatusRequest (etcd-client does not export it).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AuthStatusRequest {}

/// etcdserverpb.AuthStatusResponse (etcd-client does not export it).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AuthStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<corekv_engine::pb::PbResponseHeader>,
    #[prost(bool, tag = "2")]
    pub enabled: bool,
    #[prost(uint64, tag = "3")]
    pub auth_revision: u64,
}
