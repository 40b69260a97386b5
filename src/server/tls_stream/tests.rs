//! The TLS stream on its own, against a tokio-rustls client over loopback.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{accept, TlsStream};

/// A server configuration with a fresh self-signed certificate, and a client trusting it.
fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let cert_der = CertificateDer::from(cert.der().to_vec());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Polls one read of `stream` once: whether it had to wait.
async fn read_would_wait(stream: &mut TlsStream) -> bool {
    let mut bytes = [0u8; 64];
    poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut bytes);
        Poll::Ready(Pin::new(&mut *stream).poll_read(cx, &mut buf).is_pending())
    })
    .await
}

/// One exchange, then a read that must wait for the client, then a second exchange; returns
/// the buffer capacity the server held while it waited.
async fn capacity_while_waiting(release: bool) -> usize {
    let (server_config, client_config) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (go_on, wait) = oneshot::channel::<()>();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(client_config)
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.write_all(b"first").await.expect("write");
        let mut answer = [0u8; 4];
        tls.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"pong");
        wait.await.expect("go on");
        tls.write_all(b"second").await.expect("write");
        tls.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"done");
    });
    let (tcp, _) = listener.accept().await.expect("accept");
    let mut stream = accept(tcp, server_config).await.expect("server handshake");
    if release {
        stream.release_buffers_while_waiting();
    }
    let mut first = [0u8; 5];
    stream.read_exact(&mut first).await.expect("first");
    assert_eq!(&first, b"first");
    stream.write_all(b"pong").await.expect("pong");
    stream.flush().await.expect("flush");
    assert!(
        stream.buffer_capacity() > 0,
        "buffers in use after an exchange"
    );
    assert!(read_would_wait(&mut stream).await, "nothing was sent yet");
    let waiting = stream.buffer_capacity();
    go_on.send(()).expect("client waits");
    let mut second = [0u8; 6];
    stream.read_exact(&mut second).await.expect("second");
    assert_eq!(&second, b"second");
    stream.write_all(b"done").await.expect("done");
    stream.flush().await.expect("flush");
    client.await.expect("client");
    waiting
}

#[tokio::test]
async fn a_read_that_waits_gives_the_buffers_back_when_asked_and_the_stream_goes_on() {
    assert_eq!(capacity_while_waiting(true).await, 0);
    // Not asked (HTTP/1, which parks instead): the buffers stay while the read waits.
    assert!(capacity_while_waiting(false).await >= 4096);
}
