//! What a client needs to connect over TLS ([`ClientTls`]), and the name it verifies.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::pem::{read_certificates, read_private_key, read_roots, FlagFile, TlsFileError};
use super::{provider, TlsError, TlsLayer};

/// Where the system's CA bundle is on common systems (Debian and Ubuntu, Fedora and RHEL,
/// Alpine and macOS), tried in order when no CA file is given.
const SYSTEM_CA_BUNDLES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// A client's TLS settings: whom it trusts, what it presents for mutual TLS, and which name it
/// verifies. Cheap to clone (the rustls configuration is shared).
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

/// A certificate chain and its private key, which a client presents for mutual TLS.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl ClientTls {
    /// Trusts `roots`, presenting `identity` when the server asks for a client certificate.
    pub fn new(roots: RootCertStore, identity: Option<Identity>) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Protocol)?
            .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(TlsError::Protocol)?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self { config: Arc::new(config), server_name: None })
    }

    /// From the files of a client's flags: `ca` (`--tls-ca`; else the system's CA bundle) and,
    /// for mutual TLS, `cert` and `key` (`--tls-cert`, `--tls-key`). Errors name the flag.
    pub fn from_files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<Self, TlsFileError> {
        let roots = match ca {
            Some(path) => read_roots(FlagFile { flag: "--tls-ca", path })?,
            None => system_roots()?,
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((
                read_certificates(FlagFile { flag: "--tls-cert", path: cert })?,
                read_private_key(FlagFile { flag: "--tls-key", path: key })?,
            )),
            (None, None) => None,
            _ => return Err(TlsFileError("--tls-cert and --tls-key go together".into())),
        };
        Self::new(roots, identity).map_err(|e| match e {
            TlsError::Protocol(rustls::Error::InconsistentKeys(_)) => {
                TlsFileError("--tls-key is not the key of the certificate in --tls-cert".into())
            }
            e => TlsFileError(format!("--tls-cert/--tls-key: {e}")),
        })
    }

    /// [`ClientTls::from_flags`] when the command line asks for TLS at all (`--tls`, or a CA or
    /// a certificate given, which imply it), else `None`: the one rule `fanout chat` and
    /// `fanout bench` share.
    pub fn from_flags_if_asked(
        tls: bool,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name_flag: Option<&str>,
        addrs: &[String],
    ) -> Result<Option<Self>, TlsFileError> {
        if !(tls || ca.is_some() || cert.is_some()) {
            return Ok(None);
        }
        Self::from_flags(ca, cert, key, server_name_flag, addrs).map(Some)
    }

    /// What a command line's TLS flags ask for: the files of [`ClientTls::from_files`], and
    /// the name to verify: `server_name` if given (`--tls-server-name`), else the host the
    /// server addresses `addrs` share when it is a host name (an IP literal is verified as an
    /// IP name, address by address). Addresses with different host names need `server_name`.
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name_flag: Option<&str>,
        addrs: &[String],
    ) -> Result<Self, TlsFileError> {
        let tls = Self::from_files(ca, cert, key)?;
        if let Some(name) = server_name_flag {
            let name = ServerName::try_from(name.to_string())
                .map_err(|_| TlsFileError(format!("--tls-server-name {name:?} is not a host name or IP address")))?;
            return Ok(tls.with_server_name(name));
        }
        let mut shared: Option<ServerName<'static>> = None;
        for addr in addrs {
            let name = server_name(addr)?;
            if matches!(name, ServerName::IpAddress(_)) {
                continue;
            }
            match &shared {
                Some(other) if *other != name => {
                    let text = format!("the addresses name different hosts ({}, {}): give the name their certificates hold with --tls-server-name", other.to_str(), name.to_str());
                    return Err(TlsFileError(text));
                }
                _ => shared = Some(name),
            }
        }
        Ok(match shared {
            Some(name) => tls.with_server_name(name),
            None => tls,
        })
    }

    /// The same settings, verifying `name` whichever address is dialed (several servers
    /// behind one certificate, or an address that is not the certificate's name).
    pub fn with_server_name(mut self, name: ServerName<'static>) -> Self {
        self.server_name = Some(name);
        self
    }

    /// The rustls configuration, for a caller that builds its own connections.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name a connection to `peer` verifies: the one given, else the peer's IP address
    /// (which the certificate must then hold as an IP subject alternative name).
    pub fn name_for(&self, peer: SocketAddr) -> ServerName<'static> {
        self.server_name.clone().unwrap_or(ServerName::IpAddress(peer.ip().into()))
    }

    /// A client-side [`TlsLayer`] for a connection to `peer`.
    pub fn layer_for(&self, peer: SocketAddr) -> Result<TlsLayer, TlsError> {
        TlsLayer::client(self.config.clone(), self.name_for(peer))
    }
}

/// The name to verify for `addr` (`host:port`, `[v6]:port` or a bare host): the host part; an
/// IP literal is verified as an IP subject alternative name, anything else as a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsFileError> {
    let host = match addr.parse::<SocketAddr>() {
        Ok(socket) => return Ok(ServerName::IpAddress(socket.ip().into())),
        Err(_) => addr.rsplit_once(':').map_or(addr, |(host, _)| host),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string())
        .map_err(|_| TlsFileError(format!("{host:?} (from {addr:?}) is neither a host name nor an IP address")))
}

/// The system's trusted CAs, from the first bundle of [`SYSTEM_CA_BUNDLES`] that exists.
fn system_roots() -> Result<RootCertStore, TlsFileError> {
    let found = SYSTEM_CA_BUNDLES.iter().map(Path::new).find(|path| path.exists());
    let Some(path) = found else {
        let tried = SYSTEM_CA_BUNDLES.join(", ");
        return Err(TlsFileError(format!("no system CA bundle ({tried}): give the server's CA with --tls-ca")));
    };
    let mut roots = RootCertStore::empty();
    let (_added, _unusable) = roots.add_parsable_certificates(read_certificates(FlagFile { flag: "--tls", path })?);
    if roots.is_empty() {
        return Err(TlsFileError(format!("the system CA bundle {} holds no usable CA", path.display())));
    }
    Ok(roots)
}
