//! Certificates, private keys and CA bundles from PEM files, for the server's flags and the
//! clients' alike. Every error names the flag the file came from and the file, because that is
//! what the operator has to fix.

use std::fmt;
use std::io::Read;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::limits::PEM_FILE_BYTES_MAX;

/// A TLS file that cannot be used, with the flag that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileError(pub String);

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFileError {}

/// A file given with `flag`: where it is and which flag named it, for errors.
#[derive(Debug, Clone, Copy)]
pub struct FlagFile<'a> {
    /// The flag, as the operator typed it (`--tls-cert`).
    pub flag: &'a str,
    /// The file.
    pub path: &'a Path,
}

impl FlagFile<'_> {
    fn error(&self, what: impl fmt::Display) -> TlsFileError {
        TlsFileError(format!("{} {}: {what}", self.flag, self.path.display()))
    }

    /// The file's bytes, at most [`PEM_FILE_BYTES_MAX`] of them.
    fn read(&self) -> Result<Vec<u8>, TlsFileError> {
        let file = std::fs::File::open(self.path).map_err(|e| self.error(format_args!("cannot read it: {e}")))?;
        let mut bytes = Vec::new();
        let limit = PEM_FILE_BYTES_MAX as u64 + 1;
        file.take(limit).read_to_end(&mut bytes).map_err(|e| self.error(format_args!("cannot read it: {e}")))?;
        if bytes.len() > PEM_FILE_BYTES_MAX {
            return Err(self.error(format_args!("larger than {PEM_FILE_BYTES_MAX} bytes: not a PEM file")));
        }
        Ok(bytes)
    }
}

/// Every certificate in the file, in order (a chain: the certificate first, then the
/// intermediates); at least one.
pub fn read_certificates(file: FlagFile<'_>) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = file.read()?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file.error(format_args!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file.error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// The first private key in the file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn read_private_key(file: FlagFile<'_>) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = file.read()?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            file.error("holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
        }
        e => file.error(format_args!("not valid PEM: {e}")),
    })
}

/// The certificates of a CA bundle as trust anchors; every one must be usable as one.
pub fn read_roots(file: FlagFile<'_>) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(file)? {
        roots.add(cert).map_err(|e| file.error(format_args!("a certificate that cannot be a trust anchor: {e}")))?;
    }
    Ok(roots)
}
