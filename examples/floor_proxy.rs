//! The stack floor of the load benchmark (`benches/load/run`, target `floor`): the same
//! crates Wardgate is built on (tokio, rustls with ring behind Wardgate's own TLS stream,
//! hyper's HTTP/1 or HTTP/2 server as ALPN chose, Wardgate's own upstream client, mimalloc)
//! and the same serving model (a single-threaded runtime per core,
//! `wardgate::server::workers`), forwarding every request with no authentication, no
//! policy, no header hygiene and no audit.
//!
//! It is not a product and must never front real traffic. It exists so the benchmark can
//! tell apart what the zero-trust path costs (Wardgate / floor) from what the HTTP and TLS
//! stack costs (floor / nginx), measured in the same run.
//!
//! Usage: `floor_proxy LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_URL`

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use wardgate::body::Body;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, cert, key, backend] = args.as_slice() else {
        return Err("usage: floor_proxy LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_URL".into());
    };
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = Arc::new(tls);
    let backend: Arc<str> = backend.trim_end_matches('/').into();
    let listen = listen.clone();
    // Wardgate's serving model: accept on a main runtime, hand each connection to one of the
    // single-threaded serving runtimes, each with its own upstream client.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = wardgate::server::workers::Workers::start(threads)?;
    let clients = (0..threads)
        .map(|_| {
            wardgate::proxy::client::build(None, Duration::from_secs(5), Duration::from_secs(90))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let clients: Arc<[wardgate::proxy::client::UpstreamClient]> = clients.into();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await?;
            println!("floor proxy ready on {listen}");
            loop {
                let (stream, _) = listener.accept().await?;
                let stream = stream.into_std()?;
                let (tls, clients, backend) =
                    (Arc::clone(&tls), Arc::clone(&clients), Arc::clone(&backend));
                workers.spawn(async move {
                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                        return;
                    };
                    let _ = stream.set_nodelay(true);
                    let Ok(tls_stream) = wardgate::server::tls_stream::accept(stream, tls).await
                    else {
                        return;
                    };
                    // Serving threads are numbered from 1.
                    let index = wardgate::server::workers::index().saturating_sub(1);
                    let Some(client) = clients.get(index).cloned() else {
                        return;
                    };
                    let service =
                        service_fn(move |req| forward(client.clone(), Arc::clone(&backend), req));
                    // As Wardgate: hyper's HTTP/1 or HTTP/2 server, as ALPN chose.
                    let h2 = tls_stream.alpn_protocol() == Some(b"h2".as_slice());
                    let io = TokioIo::new(tls_stream);
                    if h2 {
                        let builder = http2::Builder::new(TokioExecutor::new());
                        let _ = builder.serve_connection(io, service).await;
                    } else {
                        let _ = http1::Builder::new().serve_connection(io, service).await;
                    }
                });
            }
        })
}

/// Sends `req` to the backend as is (only the URI and version change) and streams the answer.
async fn forward(
    client: wardgate::proxy::client::UpstreamClient,
    backend: Arc<str>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Body>, Failure> {
    let (mut parts, incoming) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{backend}{path}").parse()?;
    parts.version = http::Version::HTTP_11;
    let response = client
        .request(http::Request::from_parts(parts, boxed(incoming)))
        .await?;
    Ok(response.map(boxed))
}

fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = bytes::Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    body.map_err(|err| -> wardgate::body::BoxError { Box::new(err) })
        .boxed()
}
