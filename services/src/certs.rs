//! The mesh's certificates, made offline by `canopy keys gen`: one CA per
//! mesh (its key stays where it was generated), and per member, witness
//! and client principal a certificate of that CA with its own key.
//!
//! Each host needs only its own files and the CA certificate: the layout
//! beside the nkey seeds (`<out>/<node>/<member>.crt` and `.key`,
//! `<out>/clients/<name>.crt` and `.key`, `<out>/ca.crt`) keeps the rule
//! "the CA is `ca.crt` two directories above a prefix" for every identity.
//! A certificate names its principal in a SAN of its own namespace
//! (`<member>.<node>.canopy`, `<name>.client.canopy`), so a peer can check
//! *who* presented a certificate, not only that the mesh CA signed it; a
//! member's certificate also carries its topology host (IP or DNS name).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::Digest as _;

/// How long a certificate `keys gen` makes is valid.
pub const VALID_DAYS: i64 = 730;

/// The SAN that names a member or witness of `node`.
pub fn member_name(node: &str, member: &str) -> String {
    format!("{member}.{node}.canopy")
}

/// The SAN that names the query workers of `node` (they share one
/// identity, `<keys>/<node>/query`, as they share one queue group).
pub fn query_worker_name(node: &str) -> String {
    format!("query.{node}.worker.canopy")
}

/// The file stem of a node's query-worker identity in a `keys gen`
/// directory (`<out>/<node>/query.*`).
pub const QUERY_IDENTITY: &str = "query";

/// The SAN that names client principal `name`.
pub fn client_name(name: &str) -> String {
    format!("{name}.client.canopy")
}

/// The CA certificate of an identity given by its prefix
/// (`<out>/<dir>/<name>`): `<out>/ca.crt`.
pub fn ca_beside(prefix: &Path) -> Option<PathBuf> {
    Some(prefix.parent()?.parent()?.join("ca.crt"))
}

/// The mesh CA: its certificate (PEM) and what signs with it.
pub struct Ca {
    /// `ca.crt`'s text.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn ca_params(mesh: &str) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "canopy");
    dn.push(DnType::CommonName, format!("canopy mesh {mesh} CA"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time_now();
    p.not_after = time_now() + rcgen_days(VALID_DAYS * 5);
    Ok(p)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rcgen_days(d: i64) -> time::Duration {
    time::Duration::days(d)
}

/// Writes `text` to `path` with `mode`, replacing it.
pub fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The CA of `mesh` under `out` (`ca.crt`, `ca.key` 0600), made if
/// missing (or with `force`); true if made now. An existing CA key signs
/// again under the same name, so certificates made later chain to the
/// same `ca.crt`.
pub fn ca(out: &Path, mesh: &str, force: bool) -> anyhow::Result<(Ca, bool)> {
    let (crt, key) = (out.join("ca.crt"), out.join("ca.key"));
    if !force && crt.exists() && key.exists() {
        let key_pem =
            std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
        let kp = KeyPair::from_pem(&key_pem)
            .map_err(|e| anyhow::anyhow!("{}: not a private key: {e}", key.display()))?;
        let pem =
            std::fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?;
        let issuer = Issuer::new(ca_params(mesh)?, kp);
        return Ok((Ca { pem, issuer }, false));
    }
    let kp = KeyPair::generate()?;
    let params = ca_params(mesh)?;
    let cert = params.self_signed(&kp)?;
    write_file(&key, &kp.serialize_pem(), 0o600)?;
    write_file(&crt, &cert.pem(), 0o644)?;
    Ok((
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, kp),
        },
        true,
    ))
}

/// Who a certificate is for.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Its canopy name (a SAN, and the common name).
    pub name: String,
    /// Further SANs: the topology host of a member (an IP address or a DNS
    /// name).
    pub hosts: Vec<String>,
    /// Servers (members, witnesses) authenticate both ways; clients only
    /// as clients.
    pub server: bool,
}

/// The certificate `<prefix>.crt` and its key `<prefix>.key` (0600) for
/// `subject`, signed by `ca`: made if missing, with `force`, or when the
/// CA was made now (a certificate of the old CA would no longer verify).
/// Returns its SHA-256 fingerprint (hex of the DER) and whether it was
/// made.
pub fn leaf(
    ca: &Ca,
    prefix: &Path,
    subject: &Subject,
    remake: bool,
) -> anyhow::Result<(String, bool)> {
    let crt = with_ext(prefix, "crt");
    let key = with_ext(prefix, "key");
    if !remake && crt.exists() && key.exists() {
        let text =
            std::fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?;
        return Ok((
            fingerprint_pem(&text).with_context(|| crt.display().to_string())?,
            false,
        ));
    }
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "canopy");
    dn.push(DnType::CommonName, subject.name.clone());
    p.distinguished_name = dn;
    let mut sans = vec![SanType::DnsName(subject.name.clone().try_into()?)];
    for h in &subject.hosts {
        sans.push(match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.clone().try_into()?),
        });
    }
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = if subject.server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    p.not_before = time_now();
    p.not_after = time_now() + rcgen_days(VALID_DAYS);
    let kp = KeyPair::generate()?;
    let cert = p.signed_by(&kp, &ca.issuer)?;
    write_file(&key, &kp.serialize_pem(), 0o600)?;
    write_file(&crt, &cert.pem(), 0o644)?;
    Ok((fingerprint(cert.der()), true))
}

/// The TLS files of one identity, found from its prefix: `<prefix>.crt`,
/// `<prefix>.key` and the mesh CA two directories up ([`ca_beside`]).
/// Servers and clients of the secured tree present the certificate and
/// trust only the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The mesh CA certificate (`<out>/ca.crt`).
    pub ca: PathBuf,
    /// This identity's certificate.
    pub cert: PathBuf,
    /// Its private key (0600).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files of the identity `prefix` (`<out>/<node>/<member>`,
    /// `<out>/clients/<name>`); an error names the first one missing.
    pub fn of(prefix: &Path) -> anyhow::Result<TlsFiles> {
        let files = TlsFiles {
            ca: ca_beside(prefix)
                .ok_or_else(|| anyhow::anyhow!("{}: no CA two directories up", prefix.display()))?,
            cert: with_ext(prefix, "crt"),
            key: with_ext(prefix, "key"),
        };
        for f in [&files.ca, &files.cert, &files.key] {
            if !f.is_file() {
                anyhow::bail!(
                    "{} is missing (canopy keys gen writes it beside the identity {})",
                    f.display(),
                    prefix.display()
                );
            }
        }
        Ok(files)
    }

    /// The files of the process whose nkey seed is `seed`
    /// (`<out>/<node>/<member>.nk`).
    pub fn of_seed(seed: &Path) -> anyhow::Result<TlsFiles> {
        TlsFiles::of(&seed.with_extension(""))
    }
}

/// `<prefix>.<ext>`.
pub fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// SHA-256 of a certificate's DER, hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(der))
}

/// [`fingerprint`] of the first certificate of a PEM text.
pub fn fingerprint_pem(text: &str) -> anyhow::Result<String> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    Ok(fingerprint(&der))
}

/// The pin of the first certificate of the PEM file `path`: hex SHA-256 of
/// its SubjectPublicKeyInfo, as nats-server's `pinned_certs` wants it (a
/// new certificate of `keys gen` has a new key, so a new pin).
pub fn pin_of_file(path: &Path) -> anyhow::Result<String> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::from_pem_file(path)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", path.display()))?;
    Ok(hex::encode(sha2::Sha256::digest(
        cert.tbs_certificate.subject_pki.raw,
    )))
}

/// Days before a certificate's end from which `canopy status` warns.
pub const EXPIRY_WARN_DAYS: u64 = 30;

/// When the first certificate of the PEM file `path` stops being valid,
/// in milliseconds since the Unix epoch.
pub fn not_after_ms(path: &Path) -> anyhow::Result<u64> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::from_pem_file(path)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", path.display()))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
}

/// [`not_after_ms`] of the certificate beside the nkey seed `seed`; a
/// missing or unreadable one is logged and gives None.
pub fn expiry_of_seed(seed: &Path) -> Option<u64> {
    match TlsFiles::of_seed(seed).and_then(|f| not_after_ms(&f.cert)) {
        Ok(ms) => Some(ms),
        Err(e) => {
            tracing::warn!("cannot read this process's certificate validity: {e:#}");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use super::*;

    #[test]
    fn a_leaf_chains_to_the_ca_and_is_kept_unless_remade() {
        let dir = tempfile::tempdir().unwrap();
        let (ca1, made) = ca(dir.path(), "m", false).unwrap();
        assert!(made);
        let prefix = dir.path().join("a");
        let subject = Subject {
            name: member_name("root", "a"),
            hosts: vec!["127.0.0.1".into(), "plc-host".into()],
            server: true,
        };
        let (fp, made) = leaf(&ca1, &prefix, &subject, false).unwrap();
        assert!(made);
        let key = with_ext(&prefix, "key");
        let mode = std::fs::metadata(&key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // Kept: the same fingerprint, read back from the PEM.
        let (ca2, made) = ca(dir.path(), "m", false).unwrap();
        assert!(!made);
        assert_eq!(ca2.pem, ca1.pem);
        assert_eq!(
            leaf(&ca2, &prefix, &subject, false).unwrap(),
            (fp.clone(), false)
        );
        let (fp2, made) = leaf(&ca2, &prefix, &subject, true).unwrap();
        assert!(made && fp2 != fp);
    }

    #[test]
    fn a_leafs_end_of_validity_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = ca(dir.path(), "m", false).unwrap();
        let prefix = dir.path().join("c");
        let subject = Subject {
            name: client_name("c"),
            hosts: vec![],
            server: false,
        };
        leaf(&ca, &prefix, &subject, false).unwrap();
        let end = not_after_ms(&with_ext(&prefix, "crt")).unwrap();
        let now_ms = (time_now().unix_timestamp() * 1000) as u64;
        let days = (end - now_ms) / 86_400_000;
        assert!(
            (VALID_DAYS as u64 - 2..=VALID_DAYS as u64).contains(&days),
            "{days}"
        );
        let bad = dir.path().join("bad.crt");
        std::fs::write(&bad, "no certificate").unwrap();
        let e = not_after_ms(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.crt"), "{e}");
    }
}
