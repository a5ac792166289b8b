//! Mutual TLS on the raft port: who is calling is proved by a certificate
//! of the mesh CA that names the voter its hello claims to be.
//!
//! Both sides present a certificate of the mesh CA (TLS 1.3 only). The
//! caller checks that the server's certificate is valid for the name of
//! the voter it dials; the server, once the hello names the caller, checks
//! that the caller's certificate is valid for that voter's name. So a
//! certificate of the mesh is not enough: a member of another pair, a
//! client, or the other member of this pair cannot pass for a voter it is
//! not. The names are the caller's to choose ([`RaftTls::new`]); canopy
//! uses `<member>.<node>.canopy`. A plaintext connection fails the
//! handshake and is closed and counted like any refused one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls;

use crate::error::RaftError;
use crate::types::NodeId;

/// Both sides' TLS configuration of one voter, and the name each voter's
/// certificate must carry.
#[derive(Clone)]
pub struct RaftTls {
    pub(crate) client: Arc<rustls::ClientConfig>,
    pub(crate) server: Arc<rustls::ServerConfig>,
    names: BTreeMap<NodeId, String>,
}

impl std::fmt::Debug for RaftTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftTls")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

fn config(field: &str, reason: impl std::fmt::Display) -> RaftError {
    RaftError::Config {
        field: field.to_owned(),
        reason: reason.to_string(),
    }
}

impl RaftTls {
    /// From PEM texts: the mesh CA, this voter's certificate (chain) and
    /// its private key; `names`: every voter's certificate name.
    pub fn new(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        names: BTreeMap<NodeId, String>,
    ) -> Result<Self, RaftError> {
        let mut roots = rustls::RootCertStore::empty();
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| config("tls.ca", e))?;
        if cas.is_empty() {
            return Err(config("tls.ca", "no certificate"));
        }
        for ca in cas {
            roots.add(ca).map_err(|e| config("tls.ca", e))?;
        }
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| config("tls.cert", e))?;
        if chain.is_empty() {
            return Err(config("tls.cert", "no certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| config("tls.key", e))?;
        for (id, name) in &names {
            ServerName::try_from(name.clone())
                .map_err(|e| config(&format!("tls.names.{id}"), e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| config("tls.ca", e))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config("tls", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| config("tls.cert", e))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config("tls", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| config("tls.cert", e))?;
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
            names,
        })
    }

    /// [`RaftTls::new`] from files; an error names the file.
    pub fn load(
        ca: &Path,
        cert: &Path,
        key: &Path,
        names: BTreeMap<NodeId, String>,
    ) -> Result<Self, RaftError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| RaftError::Storage {
                path: p.to_owned(),
                source,
            })
        };
        Self::new(&read(ca)?, &read(cert)?, &read(key)?, names).map_err(|e| match e {
            RaftError::Config { field, reason } => {
                let path = match field.as_str() {
                    "tls.ca" => ca,
                    "tls.key" => key,
                    _ => cert,
                };
                RaftError::Config {
                    field,
                    reason: format!("{}: {reason}", path.display()),
                }
            }
            other => other,
        })
    }

    /// The name voter `id`'s certificate must carry.
    pub(crate) fn name(&self, id: NodeId) -> Option<ServerName<'static>> {
        self.names
            .get(&id)
            .and_then(|n| ServerName::try_from(n.clone()).ok())
    }

    /// Why the certificate `der` the caller presented is not voter `id`'s,
    /// if it is not (its chain was verified in the handshake).
    pub(crate) fn check_peer(
        &self,
        id: NodeId,
        der: Option<&CertificateDer<'_>>,
    ) -> Result<(), String> {
        let Some(der) = der else {
            return Err("no client certificate".into());
        };
        let Some(name) = self.name(id) else {
            return Err(format!("no certificate name for voter {id}"));
        };
        let cert =
            webpki::EndEntityCert::try_from(der).map_err(|e| format!("certificate: {e:?}"))?;
        cert.verify_is_valid_for_subject_name(&name).map_err(|_| {
            format!(
                "its certificate is not voter {id}'s ({})",
                self.names.get(&id).map(String::as_str).unwrap_or("?")
            )
        })
    }
}
