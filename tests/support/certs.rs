//! Certificates for the TLS tests, generated on the spot ([`TestCa`], shared with the unit tests
//! of `fanout_proto::tls` by path) and written into a directory of this test process, and the
//! client options that trust them.

// Each test crate that includes `support` compiles this module; not all of them use TLS.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use fanout::client::ClientOptions;
use fanout::tls::ClientTls;

#[path = "../../crates/fanout-proto/src/tls/test_certs.rs"]
mod test_certs;
pub use test_certs::{Issued, TestCa};

use super::IO_TIMEOUT;

/// A fresh directory for one test's certificate files.
pub struct CertDir {
    path: PathBuf,
}

impl CertDir {
    /// A new, empty directory.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("fanout-tls-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("a temp dir");
        Self { path }
    }

    /// Writes `contents` to `name` in the directory (replacing it); returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("write a certificate file");
        path
    }

    /// Writes `issued` as `NAME.pem` and `NAME.key`; returns both paths.
    pub fn identity(&self, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        (self.write(&format!("{name}.pem"), &issued.cert_pem), self.write(&format!("{name}.key"), &issued.key_pem))
    }

    /// Writes the certificate of `ca` as `NAME.pem`; returns its path.
    pub fn ca(&self, name: &str, ca: &TestCa) -> PathBuf {
        self.write(&format!("{name}.pem"), &ca.cert_pem())
    }
}

/// A path as a flag's value.
pub fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// Client options over TLS, trusting `ca` (and presenting `identity`, for mutual TLS); the
/// server's certificate must name the IP address dialed.
pub fn tls_options(ca: &TestCa, identity: Option<&Issued>) -> ClientOptions {
    let identity = identity.map(|i| (vec![i.cert_der.clone()], i.key()));
    let tls = ClientTls::new(ca.roots(), identity).expect("a client TLS configuration");
    ClientOptions { tls: Some(tls), connect_timeout: Some(IO_TIMEOUT), ..ClientOptions::default() }
}
