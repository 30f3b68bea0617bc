//! The server's TLS files: errors that name the flag, a reload that serves new connections with
//! the new certificate (and keeps the old one when the new files are bad), and node links that
//! verify each other against the cluster CA.

use std::path::PathBuf;

use bytes::BytesMut;
use fanout_proto::tls::rustls::pki_types::ServerName;

use super::*;

#[path = "../../crates/fanout-proto/src/tls/test_certs.rs"]
mod test_certs;
use test_certs::{Issued, TestCa};

/// A fresh directory for one test's files.
fn temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fanout-tls-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `issued` as `name.pem` and `name.key` in `dir`.
fn write_identity(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

fn listener_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> TlsFiles {
    TlsFiles {
        cert: ("--tls-cert", cert.to_path_buf()),
        key: ("--tls-key", key.to_path_buf()),
        ca: client_ca.map(|ca| ("--tls-client-ca", ca.to_path_buf())),
    }
}

fn cluster_files(cert: &Path, key: &Path, ca: &Path) -> TlsFiles {
    TlsFiles {
        cert: ("--cluster-tls-cert", cert.to_path_buf()),
        key: ("--cluster-tls-key", key.to_path_buf()),
        ca: Some(("--cluster-tls-ca", ca.to_path_buf())),
    }
}

/// Runs a handshake between two layers in memory; true when both ends finished it.
fn handshake(client: &mut TlsLayer, server: &mut TlsLayer) -> bool {
    let mut ignored = BytesMut::new();
    for _ in 0..16 {
        let mut wire = Vec::new();
        client.write_records(&mut wire).unwrap();
        if server.receive(&wire, &mut ignored).is_err() {
            return false;
        }
        wire.clear();
        server.write_records(&mut wire).unwrap();
        if client.receive(&wire, &mut ignored).is_err() {
            return false;
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return true;
        }
    }
    false
}

fn client_for(ca: &TestCa, name: &str) -> TlsLayer {
    let tls = ClientTls::new(ca.roots(), None).unwrap();
    TlsLayer::client(tls.config(), ServerName::try_from(name.to_string()).unwrap()).unwrap()
}

#[test]
fn bad_files_are_refused_with_the_flag_that_named_them() {
    let dir = temp_dir();
    let ca = TestCa::new("CA");
    let (cert, key) = write_identity(&dir, "server", &ca.issue(&["fanout.test"]));
    let (_, other_key) = write_identity(&dir, "other", &ca.issue(&["other.test"]));
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
    let missing = dir.join("missing.pem");
    assert!(ListenerTls::load(listener_files(&cert, &key, None)).is_ok());
    let cases = [
        (listener_files(&missing, &key, None), "--tls-cert", "cannot read it"),
        (listener_files(&garbage, &key, None), "--tls-cert", "not valid PEM"),
        (listener_files(&cert, &cert, None), "--tls-key", "holds no PEM private key"),
        (listener_files(&cert, &other_key, None), "--tls-key", "is not the key of the certificate in --tls-cert"),
        (listener_files(&cert, &key, Some(&missing)), "--tls-client-ca", "cannot read it"),
    ];
    for (files, flag, needle) in cases {
        let e = ListenerTls::load(files).unwrap_err();
        assert!(e.0.starts_with(flag) && e.0.contains(needle), "{e}");
    }
    let e = ClusterTls::load(TlsFiles { ca: None, ..cluster_files(&cert, &key, &cert) }).unwrap_err();
    assert!(e.0.contains("--cluster-tls-ca"), "{e}");
}

#[test]
fn a_reread_certificate_serves_new_connections_and_bad_files_keep_the_old_one() {
    let dir = temp_dir();
    let ca = TestCa::new("CA");
    let (cert, key) = write_identity(&dir, "server", &ca.issue(&["old.test"]));
    let listener = ListenerTls::load(listener_files(&cert, &key, None)).unwrap();
    let mut before = listener.accept().unwrap();
    // A renewal: new certificate and key in place.
    write_identity(&dir, "server", &ca.issue(&["new.test"]));
    listener.replace(listener.reread().unwrap());
    assert!(handshake(&mut client_for(&ca, "new.test"), &mut listener.accept().unwrap()));
    assert!(!handshake(&mut client_for(&ca, "old.test"), &mut listener.accept().unwrap()));
    assert!(handshake(&mut client_for(&ca, "old.test"), &mut before), "a connection keeps its certificate");
    // A botched renewal is refused by reread, so the one in force stays.
    std::fs::write(&key, "not a key").unwrap();
    let e = listener.reread().unwrap_err();
    assert!(e.0.contains("--tls-key"), "{e}");
    assert!(handshake(&mut client_for(&ca, "new.test"), &mut listener.accept().unwrap()));
}

#[test]
fn nodes_verify_each_other_against_the_cluster_ca() {
    let dir = temp_dir();
    let (ca, rogue_ca) = (TestCa::new("cluster CA"), TestCa::new("rogue CA"));
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let node = |name: &str, issuer: &TestCa, addr: &str| {
        let (cert, key) = write_identity(&dir, name, &issuer.issue(&[addr]));
        ClusterTls::load(cluster_files(&cert, &key, &ca_file)).unwrap()
    };
    let (a, b) = (node("a", &ca, "127.0.0.1"), node("b", &ca, "127.0.0.2"));
    let rogue = node("rogue", &rogue_ca, "127.0.0.3");
    assert!(handshake(&mut a.dial("127.0.0.2:7501").unwrap(), &mut b.accept().unwrap()));
    assert!(!handshake(&mut a.dial("127.0.0.3:7501").unwrap(), &mut rogue.accept().unwrap()), "rogue server");
    assert!(!handshake(&mut rogue.dial("127.0.0.1:7501").unwrap(), &mut a.accept().unwrap()), "rogue client");
    assert!(!handshake(&mut a.dial("127.0.0.9:7501").unwrap(), &mut b.accept().unwrap()), "b is not 127.0.0.9");
}
