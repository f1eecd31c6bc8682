//! A lean gRPC client for unary calls, straight on the `h2` crate.
//!
//! Why: the bench shares the machine with the server it measures, and every cycle it spends
//! is one the server cannot use. Through `etcd-client` (tonic's balanced channel, a tower
//! buffer, hyper's client and a task spawned per request) the bench took ~58% of both cores
//! at range 16/256 against corekv, more than the server (perf -a). Here a request is one
//! HTTP/2 stream opened on a shared connection: HEADERS, one DATA frame with the
//! length-prefixed message, then the answer's DATA and trailers, with gRPC's status read
//! from the trailers (or from the headers of a trailers-only answer) as any gRPC client
//! does. Only the put, range, txn-put and mixed workloads use it; streams (watch, lease
//! keep-alive) stay on `etcd-client`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, Uri};

/// The KV methods the closed-loop workloads call.
#[derive(Clone, Copy, Debug)]
pub enum KvMethod {
    Range,
    Put,
    Txn,
}

impl KvMethod {
    fn path(self) -> &'static str {
        match self {
            KvMethod::Range => "/etcdserverpb.KV/Range",
            KvMethod::Put => "/etcdserverpb.KV/Put",
            KvMethod::Txn => "/etcdserverpb.KV/Txn",
        }
    }
}

/// Largest answer accepted, a bound on the memory one call may take (etcd's Go client allows
/// 2 GiB; a `range --end` over a million 256-byte values is ~300 MB, so such a read fails
/// here with a clear error rather than being half-read).
const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// HTTP/2 flow-control windows the client advertises: large enough that 256 clients'
/// answers never wait for a WINDOW_UPDATE.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// One HTTP/2 connection, shared (cloned) by the clients assigned to it.
#[derive(Clone)]
pub struct Channel {
    send: SendRequest<Bytes>,
    uris: [Uri; 3],
    /// Longest a call may take before it fails (`--timeout`).
    call_timeout: Duration,
}

impl Channel {
    /// Opens a plain-TCP HTTP/2 connection to `endpoint` (`host:port` or
    /// `http://host:port`) and drives it on a task of its own.
    pub async fn connect(
        endpoint: &str,
        timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Channel, String> {
        if endpoint.starts_with("https://") {
            return Err(format!("{endpoint}: TLS is not supported by corekv-bench"));
        }
        let host_port = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(host_port))
            .await
            .map_err(|_| format!("connecting to {host_port} timed out"))?
            .map_err(|e| format!("cannot connect to {host_port}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {host_port}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("corekv-bench: connection to a server ended: {e}");
            }
        });
        let uri = |m: KvMethod| -> Result<Uri, String> {
            format!("http://{host_port}{}", m.path())
                .parse()
                .map_err(|e| format!("{endpoint}: {e}"))
        };
        Ok(Channel {
            send,
            uris: [
                uri(KvMethod::Range)?,
                uri(KvMethod::Put)?,
                uri(KvMethod::Txn)?,
            ],
            call_timeout,
        })
    }

    /// Calls `method` with `request`; the decoded answer, or the gRPC error as text.
    pub async fn call<Q: prost::Message, A: prost::Message + Default>(
        &self,
        method: KvMethod,
        request: &Q,
    ) -> Result<A, String> {
        tokio::time::timeout(self.call_timeout, self.call_untimed(method, request))
            .await
            .map_err(|_| format!("no answer within {:?}", self.call_timeout))?
    }

    async fn call_untimed<Q: prost::Message, A: prost::Message + Default>(
        &self,
        method: KvMethod,
        request: &Q,
    ) -> Result<A, String> {
        let message_len = request.encoded_len();
        let mut body = BytesMut::with_capacity(5 + message_len);
        body.put_u8(0); // not compressed
        body.put_u32(message_len as u32);
        request.encode(&mut body).map_err(|e| e.to_string())?;

        let head = Request::builder()
            .method(Method::POST)
            .uri(self.uris[method as usize].clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut send = self.send.clone().ready().await.map_err(err)?;
        let (answer, mut stream) = send.send_request(head, false).map_err(err)?;
        stream.send_data(body.freeze(), true).map_err(err)?;

        let (parts, mut answer_body) = answer.await.map_err(err)?.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(format!("HTTP status {}", parts.status));
        }
        // A trailers-only answer (an error, usually) carries grpc-status in its headers.
        if parts.headers.contains_key("grpc-status") {
            check_status(&parts.headers)?;
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = answer_body.data().await {
            let chunk = chunk.map_err(err)?;
            let _ = answer_body.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > ANSWER_BYTES_MAX + 5 {
                return Err(format!("answer larger than {ANSWER_BYTES_MAX} bytes"));
            }
            data.extend_from_slice(&chunk);
        }
        match answer_body.trailers().await.map_err(err)? {
            Some(trailers) => check_status(&trailers)?,
            None if parts.headers.contains_key("grpc-status") => {}
            None => return Err("answer without grpc-status".into()),
        }
        decode_message(&data)
    }
}

fn err(e: h2::Error) -> String {
    e.to_string()
}

/// Ok for grpc-status 0; otherwise "status N: message", as a gRPC client reports it.
fn check_status(headers: &HeaderMap) -> Result<(), String> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .ok_or("answer without grpc-status")?;
    if code == "0" {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Err(format!("grpc-status {code}: {message}"))
}

/// grpc-message is percent-encoded (gRPC over HTTP/2: bytes outside printable ASCII and
/// '%' itself; tonic encodes spaces too). A malformed escape is kept as it is.
fn percent_decode(raw: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = (raw[i] == b'%' && i + 2 < raw.len())
            .then(|| Some(hex(raw[i + 1])? << 4 | hex(raw[i + 2])?))
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes the single length-prefixed message of a unary answer.
fn decode_message<A: prost::Message + Default>(data: &[u8]) -> Result<A, String> {
    if data.len() < 5 {
        return Err(format!("answer of {} bytes has no message", data.len()));
    }
    if data[0] != 0 {
        return Err("compressed answers are not supported".into());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() != 5 + len {
        return Err(format!(
            "answer message length {len} does not match the {} bytes received",
            data.len() - 5
        ));
    }
    A::decode(&data[5..]).map_err(|e| format!("cannot decode the answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_framing_errors_are_reported() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(check_status(&h), Ok(()));
        h.insert("grpc-status", "9".parse().unwrap());
        h.insert("grpc-message", "etcdserver: key not found".parse().unwrap());
        assert_eq!(
            check_status(&h),
            Err("grpc-status 9: etcdserver: key not found".into())
        );
        assert!(check_status(&HeaderMap::new()).is_err());
        h.insert(
            "grpc-message",
            "etcdserver:%20request%20is%20too%20large".parse().unwrap(),
        );
        assert_eq!(
            check_status(&h),
            Err("grpc-status 9: etcdserver: request is too large".into())
        );
        assert_eq!(
            percent_decode(b"100%25 %e2%9c%93 %zz %4"),
            "100% \u{2713} %zz %4"
        );

        let mut framed = vec![0, 0, 0, 0, 0];
        assert!(decode_message::<corekv_client::proto::PbPutResponse>(&framed).is_ok());
        framed.push(1); // one byte more than the prefix says
        assert!(decode_message::<corekv_client::proto::PbPutResponse>(&framed).is_err());
        assert!(decode_message::<corekv_client::proto::PbPutResponse>(&[1, 0, 0, 0, 0]).is_err());
        assert!(decode_message::<corekv_client::proto::PbPutResponse>(&[0, 0]).is_err());
    }
}
