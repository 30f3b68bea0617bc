//! The server's TLS settings: certificates and keys read from the files its flags name, turned
//! into rustls configurations, and re-read on reload (SIGHUP) so that a renewed certificate
//! needs no restart.
//!
//! * [`ListenerTls`]: the client TLS listener's (`--tls-cert`, `--tls-key`, and
//!   `--tls-client-ca` to require client certificates).
//! * [`ClusterTls`]: node links' (`--cluster-tls-cert`, `--cluster-tls-key`, `--cluster-tls-ca`):
//!   both ends of every node link present a certificate and verify the other's against the
//!   cluster CA; the dialing end also verifies the name it dialed.
//!
//! The TLS connection itself, [`TlsLayer`], is sans-IO and lives in `fanout_proto::tls` (the
//! bench's workers use it too); the reactor puts one between a socket and the codec. Each
//! configuration sits behind a [`Swappable`]: a reload replaces it whole, connections already
//! open keep the one they started with, new ones get the new one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use fanout_proto::tls::pem::{read_certificates, read_private_key, read_roots, FlagFile, TlsFileError};
use fanout_proto::tls::rustls::server::WebPkiClientVerifier;
use fanout_proto::tls::rustls::{self, ClientConfig, ServerConfig};
use fanout_proto::tls::{provider, server_name};
pub use fanout_proto::tls::{starts_like_tls, BlockingTls, ClientTls, Received, TlsError, TlsLayer};

use crate::error::ConfigError;

/// A value that a reload replaces while readers hold on to the one they took: readers take an
/// `Arc` under a read lock (once per new connection), the reload swaps it under the write lock.
pub struct Swappable<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Swappable<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Swappable<T> {
    /// Holds `value`.
    pub fn new(value: Arc<T>) -> Self {
        Self(Arc::new(RwLock::new(value)))
    }

    /// The value now.
    pub fn current(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Replaces the value for everyone who asks from now on.
    pub fn replace(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = value;
    }
}

/// The files of a TLS identity and whom it trusts, with the flags that named them (every error
/// names the flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, and its flag.
    pub cert: (&'static str, PathBuf),
    /// The private key, PEM, and its flag.
    pub key: (&'static str, PathBuf),
    /// CA certificates that verify the peer's certificate, if the peer must present one.
    pub ca: Option<(&'static str, PathBuf)>,
}

/// What the files hold, parsed and checked.
struct Loaded {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    roots: Option<Arc<rustls::RootCertStore>>,
}

impl TlsFiles {
    fn load(&self) -> Result<Loaded, ConfigError> {
        fn file<'a>((flag, path): &'a (&'static str, PathBuf)) -> FlagFile<'a> {
            FlagFile { flag, path }
        }
        let chain = read_certificates(file(&self.cert)).map_err(config_error)?;
        let key = read_private_key(file(&self.key)).map_err(config_error)?;
        let roots = match &self.ca {
            Some(ca) => Some(Arc::new(read_roots(file(ca)).map_err(config_error)?)),
            None => None,
        };
        Ok(Loaded { chain, key, roots })
    }

    /// The error for a key that is not the certificate's, or any other refusal of the pair.
    fn pair_error(&self, e: rustls::Error) -> ConfigError {
        let (cert_flag, cert) = (&self.cert.0, self.cert.1.display());
        let (key_flag, key) = (&self.key.0, self.key.1.display());
        match e {
            rustls::Error::InconsistentKeys(_) => {
                ConfigError(format!("{key_flag} {key} is not the key of the certificate in {cert_flag} {cert}"))
            }
            e => ConfigError(format!("{cert_flag} {cert} with {key_flag} {key}: {e}")),
        }
    }

    /// A server configuration presenting this identity; with a CA, clients must present a
    /// certificate it issued.
    fn server_config(&self) -> Result<Arc<ServerConfig>, ConfigError> {
        let loaded = self.load()?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("TLS: {e}")))?;
        let builder = match loaded.roots {
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| self.ca_error(e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(loaded.chain, loaded.key).map_err(|e| self.pair_error(e))?;
        Ok(Arc::new(config))
    }

    /// A client configuration presenting this identity and trusting the CA (required).
    fn client_config(&self) -> Result<Arc<ClientConfig>, ConfigError> {
        let loaded = self.load()?;
        let Some(roots) = loaded.roots else {
            return Err(ConfigError("node-link TLS needs --cluster-tls-ca".into()));
        };
        let tls =
            ClientTls::new(Arc::unwrap_or_clone(roots), Some((loaded.chain, loaded.key))).map_err(|e| match e {
                TlsError::Protocol(e) => self.pair_error(e),
                e => ConfigError(format!("TLS: {e}")),
            })?;
        Ok(tls.config())
    }

    fn ca_error(&self, e: impl fmt::Display) -> ConfigError {
        let (flag, path) = self.ca.as_ref().map_or(("CA", Path::new("")), |(flag, path)| (*flag, path.as_path()));
        ConfigError(format!("{flag} {}: {e}", path.display()))
    }

    /// The files, for log lines.
    fn describe(&self) -> String {
        format!("{} {}", self.cert.0, self.cert.1.display())
    }
}

fn config_error(e: TlsFileError) -> ConfigError {
    ConfigError(e.0)
}

/// The client TLS listener's configuration: what a new TLS client connection is served with.
#[derive(Clone)]
pub struct ListenerTls {
    files: TlsFiles,
    current: Swappable<ServerConfig>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Reads and checks the files: a missing file, bad PEM or a key that is not the
    /// certificate's is an error naming the flag.
    pub fn load(files: TlsFiles) -> Result<Self, ConfigError> {
        let config = files.server_config()?;
        Ok(Self { files, current: Swappable::new(config) })
    }

    /// The TLS layer of a connection just accepted, with the certificate in force now.
    pub fn accept(&self) -> Result<TlsLayer, TlsError> {
        TlsLayer::server(self.current.current())
    }

    /// Reads the files again; the new configuration is for [`ListenerTls::replace`] (a reload
    /// checks everything before it applies anything).
    pub fn reread(&self) -> Result<Arc<ServerConfig>, ConfigError> {
        self.files.server_config()
    }

    /// Serves new connections with `config` (from [`ListenerTls::reread`]).
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.current.replace(config);
        log::info!("reload: client TLS certificate from {} in force for new connections", self.files.describe());
    }
}

/// Node links' TLS: every node presents its certificate and verifies the other's against the
/// cluster CA, whichever end dialed.
#[derive(Clone)]
pub struct ClusterTls {
    files: TlsFiles,
    server: Swappable<ServerConfig>,
    client: Swappable<ClientConfig>,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls").field("files", &self.files).finish_non_exhaustive()
    }
}

/// A re-read [`ClusterTls`], not yet in force.
pub struct ClusterTlsConfigs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl ClusterTls {
    /// Reads and checks the files (`files.ca` is required).
    pub fn load(files: TlsFiles) -> Result<Self, ConfigError> {
        let configs = Self::read(&files)?;
        Ok(Self { files, server: Swappable::new(configs.server), client: Swappable::new(configs.client) })
    }

    fn read(files: &TlsFiles) -> Result<ClusterTlsConfigs, ConfigError> {
        if files.ca.is_none() {
            return Err(ConfigError("--cluster-tls-cert needs --cluster-tls-ca (the CA of every node)".into()));
        }
        Ok(ClusterTlsConfigs { server: files.server_config()?, client: files.client_config()? })
    }

    /// The TLS layer of a node link accepted on the cluster port.
    pub fn accept(&self) -> Result<TlsLayer, TlsError> {
        TlsLayer::server(self.server.current())
    }

    /// The TLS layer of a node link dialed to `addr` (`host:port`): the node there must present
    /// a certificate for `host` (a DNS name, or an IP address as an IP name).
    pub fn dial(&self, addr: &str) -> Result<TlsLayer, String> {
        let name = server_name(addr).map_err(|e| e.0)?;
        TlsLayer::client(self.client.current(), name).map_err(|e| e.to_string())
    }

    /// Reads the files again; see [`ClusterTls::replace`].
    pub fn reread(&self) -> Result<ClusterTlsConfigs, ConfigError> {
        Self::read(&self.files)
    }

    /// Uses `configs` for node links from now on (links up keep theirs).
    pub fn replace(&self, configs: ClusterTlsConfigs) {
        self.server.replace(configs.server);
        self.client.replace(configs.client);
        log::info!("reload: node-link TLS certificate from {} in force for new links", self.files.describe());
    }
}

#[cfg(test)]
mod tests;
