//! Two [`TlsLayer`]s driven against each other in memory (no sockets): handshakes whole and
//! byte by byte, data both ways, verification failures, garbage, the bounded write buffer.

use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use bytes::BytesMut;
use proptest::prelude::*;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, ServerConfig};

use super::test_certs::{Issued, TestCa};
use super::*;
use crate::limits::{TLS_BUFFERED_BYTES_MAX, TLS_RECORD_BYTES_MAX};

fn server_config(cert: &Issued, client_ca: Option<&TestCa>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider()).build();
            builder.with_client_cert_verifier(verifier.unwrap())
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(vec![cert.cert_der.clone()], cert.key()).unwrap())
}

fn client_tls(trusted: &TestCa, identity: Option<&Issued>) -> ClientTls {
    ClientTls::new(trusted.roots(), identity.map(|i| (vec![i.cert_der.clone()], i.key()))).unwrap()
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

/// A pair over one CA: a server certified for `fanout.test`, a client that trusts the CA.
fn pair() -> (TlsLayer, TlsLayer) {
    let ca = TestCa::new("test CA");
    let server = TlsLayer::server(server_config(&ca.issue(&["fanout.test"]), None)).unwrap();
    let client = TlsLayer::client(client_tls(&ca, None).config(), dns("fanout.test")).unwrap();
    (client, server)
}

/// Moves every record `from` has queued to `to`, `chunk` bytes at a time, appending what `to`
/// decrypts to `got`.
fn pump(from: &mut TlsLayer, to: &mut TlsLayer, chunk: usize, got: &mut BytesMut) -> Result<Received, TlsError> {
    let mut wire = Vec::new();
    from.write_records(&mut wire).unwrap();
    let mut received = Received { peer_closed: false };
    for piece in wire.chunks(chunk) {
        received = to.receive(piece, got)?;
    }
    Ok(received)
}

/// Runs the handshake to its end, `chunk` bytes at a time; the error is the first side's.
fn handshake(client: &mut TlsLayer, server: &mut TlsLayer, chunk: usize) -> Result<(), TlsError> {
    handshake_into(client, server, chunk, &mut BytesMut::new())
}

/// [`handshake`], keeping the plaintext the server received on the way in `got`.
fn handshake_into(
    client: &mut TlsLayer,
    server: &mut TlsLayer,
    chunk: usize,
    got: &mut BytesMut,
) -> Result<(), TlsError> {
    let mut ignored = BytesMut::new();
    for _ in 0..16 {
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() && !server.wants_write() {
            return Ok(());
        }
        pump(client, server, chunk, got)?;
        pump(server, client, chunk, &mut ignored)?;
    }
    panic!("the handshake did not end in 16 round trips");
}

#[test]
fn a_handshake_then_data_both_ways() {
    let (mut client, mut server) = pair();
    assert!(client.is_handshaking() && server.is_handshaking());
    handshake(&mut client, &mut server, usize::MAX).unwrap();
    let mut wire = Vec::new();
    client.writer(&mut wire).write_all(b"HELLO from the client").unwrap();
    let mut input = BytesMut::new();
    assert_eq!(server.receive(&wire, &mut input).unwrap(), Received { peer_closed: false });
    assert_eq!(&input[..], b"HELLO from the client");
    wire.clear();
    server.writer(&mut wire).write_all(b"WELCOME").unwrap();
    let mut output = BytesMut::from(&b"kept: "[..]);
    client.receive(&wire, &mut output).unwrap();
    assert_eq!(&output[..], b"kept: WELCOME", "plaintext is appended after what the buffer held");
}

#[test]
fn a_handshake_fed_one_byte_at_a_time_completes_and_data_follows() {
    let (mut client, mut server) = pair();
    handshake(&mut client, &mut server, 1).unwrap();
    let mut wire = Vec::new();
    client.writer(&mut wire).write_all(b"split records").unwrap();
    let mut input = BytesMut::new();
    for byte in wire.chunks(1) {
        server.receive(byte, &mut input).unwrap();
    }
    assert_eq!(&input[..], b"split records");
}

#[test]
fn plaintext_written_during_the_handshake_leaves_after_it() {
    let (mut client, mut server) = pair();
    let mut wire = Vec::new();
    client.writer(&mut wire).write_all(b"early").unwrap();
    let mut input = BytesMut::new();
    server.receive(&wire, &mut input).unwrap();
    assert!(input.is_empty(), "the ClientHello carries no data");
    handshake_into(&mut client, &mut server, usize::MAX, &mut input).unwrap();
    assert_eq!(&input[..], b"early");
}

#[test]
fn garbage_is_an_error_and_leaves_nothing_in_the_input() {
    for garbage in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"\x00\x00\x00\x05\x01hello", &[0xff; 64]] {
        let (_, mut server) = pair();
        let mut input = BytesMut::new();
        let e = server.receive(garbage, &mut input).unwrap_err();
        assert!(matches!(e, TlsError::Protocol(_)), "{garbage:?}: {e}");
        assert!(input.is_empty());
    }
}

proptest! {
    #[test]
    fn any_bytes_from_a_peer_give_a_result_never_a_panic(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)
    ) {
        let (_, mut server) = pair();
        let mut input = BytesMut::new();
        let mut fed = 0;
        for chunk in &chunks {
            fed += chunk.len();
            if server.receive(chunk, &mut input).is_err() {
                break;
            }
        }
        prop_assert!(input.len() <= fed);
    }
}

#[test]
fn a_client_that_does_not_trust_the_ca_refuses_and_tells_the_server() {
    let (ca, stranger) = (TestCa::new("the server's CA"), TestCa::new("another CA"));
    let mut server = TlsLayer::server(server_config(&ca.issue(&["fanout.test"]), None)).unwrap();
    let mut client = TlsLayer::client(client_tls(&stranger, None).config(), dns("fanout.test")).unwrap();
    let mut ignored = BytesMut::new();
    pump(&mut client, &mut server, usize::MAX, &mut ignored).unwrap();
    let e = pump(&mut server, &mut client, usize::MAX, &mut ignored).unwrap_err();
    let TlsError::Protocol(rustls::Error::InvalidCertificate(why)) = e else { panic!("{e}") };
    assert_eq!(why, CertificateError::UnknownIssuer);
    let e = pump(&mut client, &mut server, usize::MAX, &mut ignored).unwrap_err();
    let TlsError::Protocol(rustls::Error::AlertReceived(alert)) = e else { panic!("{e}") };
    assert_eq!(alert, AlertDescription::UnknownCA);
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let ca = TestCa::new("CA");
    let mut server = TlsLayer::server(server_config(&ca.issue(&["fanout.test"]), None)).unwrap();
    let mut client = TlsLayer::client(client_tls(&ca, None).config(), dns("other.test")).unwrap();
    let e = handshake(&mut client, &mut server, usize::MAX).unwrap_err();
    let TlsError::Protocol(rustls::Error::InvalidCertificate(why)) = e else { panic!("{e}") };
    assert!(matches!(why, CertificateError::NotValidForNameContext { .. }), "{why:?}");
}

#[test]
fn an_ip_address_is_verified_as_an_ip_name() {
    let ca = TestCa::new("CA");
    let tls = client_tls(&ca, None);
    let at = "127.0.0.1:7400".parse().unwrap();
    for (names, accepted) in [(&["127.0.0.1"][..], true), (&["localhost"][..], false), (&["127.0.0.2"][..], false)] {
        let mut server = TlsLayer::server(server_config(&ca.issue(names), None)).unwrap();
        let mut client = tls.layer_for(at).unwrap();
        assert_eq!(handshake(&mut client, &mut server, usize::MAX).is_ok(), accepted, "{names:?}");
    }
}

#[test]
fn mutual_tls_takes_a_client_with_a_certificate_from_the_ca_only() {
    let (ca, clients_ca, stranger) = (TestCa::new("CA"), TestCa::new("clients' CA"), TestCa::new("stranger"));
    let config = server_config(&ca.issue(&["fanout.test"]), Some(&clients_ca));
    let cases =
        [(Some(clients_ca.issue(&["alice"])), true), (Some(stranger.issue(&["mallory"])), false), (None, false)];
    for (identity, accepted) in cases {
        let mut server = TlsLayer::server(config.clone()).unwrap();
        let mut client = TlsLayer::client(client_tls(&ca, identity.as_ref()).config(), dns("fanout.test")).unwrap();
        let result = handshake(&mut client, &mut server, usize::MAX);
        // A refused client learns it from the server's alert, after its own Finished.
        let mut wire = Vec::new();
        let written = client.writer(&mut wire).write_all(b"x").is_ok();
        let mut input = BytesMut::new();
        let served = result.is_ok() && written && server.receive(&wire, &mut input).is_ok() && &input[..] == b"x";
        assert_eq!(served, accepted, "identity given: {}", identity.is_some());
    }
}

/// A socket whose send buffer is always full.
struct FullSocket;

impl Write for FullSocket {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_writer_buffers_a_bounded_amount_then_would_block() {
    let (mut client, mut server) = pair();
    handshake(&mut client, &mut server, usize::MAX).unwrap();
    let big = vec![7u8; 4 * TLS_BUFFERED_BYTES_MAX];
    let mut taken = 0;
    let mut socket = FullSocket;
    let mut writer = server.writer(&mut socket);
    for _ in 0..big.len() {
        match writer.write_vectored(&[IoSlice::new(&big[taken..taken + 1000]), IoSlice::new(&big[taken + 1000..])]) {
            Ok(n) => taken += n,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                break;
            }
        }
    }
    assert!(taken > 0 && taken <= TLS_BUFFERED_BYTES_MAX, "took {taken}");
    assert!(server.wants_write());
    // The socket drains: at most the limit and a record's overhead, and every byte taken
    // arrives, in order.
    let mut wire = Vec::new();
    server.write_records(&mut wire).unwrap();
    assert!(wire.len() <= TLS_BUFFERED_BYTES_MAX + TLS_RECORD_BYTES_MAX, "{} bytes buffered", wire.len());
    let mut input = BytesMut::new();
    client.receive(&wire, &mut input).unwrap();
    assert_eq!(input.len(), taken);
    assert!(input.iter().all(|b| *b == 7));
}

#[test]
fn close_notify_is_seen_as_the_peer_closing() {
    let (mut client, mut server) = pair();
    handshake(&mut client, &mut server, usize::MAX).unwrap();
    client.close();
    let mut input = BytesMut::new();
    assert_eq!(pump(&mut client, &mut server, usize::MAX, &mut input).unwrap(), Received { peer_closed: true });
}

#[test]
fn server_names_are_the_host_of_the_address() {
    let ip = |text: &str| ServerName::IpAddress(text.parse::<std::net::IpAddr>().unwrap().into());
    assert_eq!(server_name("127.0.0.1:7400").unwrap(), ip("127.0.0.1"));
    assert_eq!(server_name("[::1]:7400").unwrap(), ip("::1"));
    assert_eq!(server_name("chat.example.com:7443").unwrap(), dns("chat.example.com"));
    assert_eq!(server_name("chat.example.com").unwrap(), dns("chat.example.com"));
    assert!(server_name("bad host:1").is_err());
}

/// A file in a fresh directory of the system's temporary directory.
fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fanout-proto-tls-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn client_files_are_checked_with_errors_naming_the_flag() {
    let ca = TestCa::new("CA");
    let (alice, bob) = (ca.issue(&["alice"]), ca.issue(&["bob"]));
    let ca_file = temp_file("ca.pem", &ca.cert_pem());
    let cert = temp_file("alice.pem", &alice.cert_pem);
    let key = temp_file("alice.key", &alice.key_pem);
    let bob_key = temp_file("bob.key", &bob.key_pem);
    let not_pem = temp_file("notes.txt", "hello\n");
    let missing = ca_file.with_file_name("missing.pem");
    assert!(ClientTls::from_files(Some(&ca_file), Some(&cert), Some(&key)).is_ok());
    let cases = [
        (ClientTls::from_files(Some(&missing), None, None), "--tls-ca", "cannot read it"),
        (ClientTls::from_files(Some(&not_pem), None, None), "--tls-ca", "holds no PEM certificate"),
        (ClientTls::from_files(Some(&ca_file), Some(&not_pem), Some(&key)), "--tls-cert", "holds no PEM certificate"),
        (ClientTls::from_files(Some(&ca_file), Some(&cert), Some(&not_pem)), "--tls-key", "holds no PEM private key"),
        (ClientTls::from_files(Some(&ca_file), Some(&cert), Some(&bob_key)), "--tls-key", "is not the key of"),
        (ClientTls::from_files(Some(&ca_file), Some(&cert), None), "--tls-key", "go together"),
    ];
    for (result, flag, needle) in cases {
        let e = result.unwrap_err();
        assert!(e.0.contains(flag) && e.0.contains(needle), "{e}");
    }
}

#[test]
fn a_client_hello_starts_like_tls_and_plain_protocol_bytes_do_not() {
    let (mut client, _) = pair();
    let mut hello = Vec::new();
    client.write_records(&mut hello).unwrap();
    for prefix in 0..=hello.len().min(8) {
        assert!(starts_like_tls(&hello[..prefix]), "{prefix} bytes");
    }
    for plain in [&b"\x00\x00\x00\x10\x01"[..], b"hello\n", b"/nick bob\n", b"\x16\x00"] {
        assert!(!starts_like_tls(plain), "{plain:?}");
    }
}
