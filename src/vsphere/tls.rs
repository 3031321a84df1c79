//! How a vSphere host's certificate is trusted.
//!
//! Verification is on by default (the platform's trust store). An admin can
//! instead trust a CA file, pin the SHA-256 thumbprint of the host's own
//! certificate (what vSphere shows as the host's "SHA-256 thumbprint"), or,
//! explicitly, skip verification. Every mode records the thumbprint the host
//! presented, so that a refusal can tell the admin how to trust it.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The trust setting of one vSphere host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// The platform's trust store.
    #[default]
    Verify,
    /// Only certificates issued by the CAs in this PEM file (a self-signed
    /// host certificate can be its own CA file).
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 thumbprint, whoever issued it.
    Thumbprint(String),
    /// Anything. Logged as a warning when the client is built.
    Insecure,
}

impl TlsMode {
    /// A short name for tables and logs.
    pub fn label(&self) -> String {
        match self {
            TlsMode::Verify => "verify".into(),
            TlsMode::CaFile(p) => format!("ca-file {}", p.display()),
            TlsMode::Thumbprint(t) => format!("thumbprint {t}"),
            TlsMode::Insecure => "insecure".into(),
        }
    }
}

/// Normalises a thumbprint as `AB:CD:...` (64 hex digits, any case, colons
/// optional), or says what is wrong with it.
pub fn parse_thumbprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.chars().count() != 64 {
        return Err(format!(
            "thumbprint {text:?} is not a SHA-256 thumbprint (64 hex digits, colons optional)"
        ));
    }
    decode_hex::<32>(&hex)
        .ok_or_else(|| format!("thumbprint {text:?} has a character that is not hex"))
}

/// Exactly `N` bytes written as `2N` hex digits, or `None`. Works on bytes,
/// so any text a user types is safe to give it.
pub fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

pub fn format_thumbprint(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The SHA-256 thumbprint of the first certificate in a PEM file, as
/// `--thumbprint` takes it.
pub fn pem_file_thumbprint(path: &std::path::Path) -> Result<String, String> {
    let cert = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))?
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    Ok(format_thumbprint(&Sha256::digest(cert.as_ref())))
}

/// The thumbprint a host presented in the last handshake, kept so that an
/// error can show it.
#[derive(Debug, Default, Clone)]
pub struct SeenCertificate(Arc<Mutex<Option<String>>>);

impl SeenCertificate {
    pub fn thumbprint(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }

    fn record(&self, cert: &CertificateDer<'_>) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(format_thumbprint(&Sha256::digest(cert.as_ref())));
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls configuration for a mode.
pub fn client_config(
    mode: &TlsMode,
    seen: SeenCertificate,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let check: Check = match mode {
        TlsMode::Verify => {
            let v = rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| format!("cannot load the system trust store: {e}"))?;
            Check::Delegate(Arc::new(v))
        }
        TlsMode::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("CA file {} is not PEM: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("CA file {} holds no certificate", path.display()));
            }
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            Check::Delegate(v)
        }
        TlsMode::Thumbprint(t) => Check::Pinned(parse_thumbprint(t)?),
        TlsMode::Insecure => Check::Nothing,
    };
    let verifier = Verifier {
        check,
        seen,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

#[derive(Debug)]
enum Check {
    Delegate(Arc<dyn ServerCertVerifier>),
    Pinned([u8; 32]),
    Nothing,
}

#[derive(Debug)]
struct Verifier {
    check: Check,
    seen: SeenCertificate,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.seen.record(end_entity);
        match &self.check {
            Check::Delegate(inner) => {
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Check::Pinned(expected) => {
                if Sha256::digest(end_entity.as_ref()).as_slice() == expected {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(TlsError::General(
                        "certificate thumbprint does not match the pinned one".into(),
                    ))
                }
            }
            Check::Nothing => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        match &self.check {
            Check::Delegate(inner) => inner.verify_tls12_signature(message, cert, dss),
            _ => verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            ),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        match &self.check {
            Check::Delegate(inner) => inner.verify_tls13_signature(message, cert, dss),
            _ => verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            ),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match &self.check {
            Check::Delegate(inner) => inner.supported_verify_schemes(),
            _ => self
                .provider
                .signature_verification_algorithms
                .supported_schemes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_typed_thumbprint_is_an_answer_not_a_panic() {
        for text in [
            "",
            "é".repeat(64).as_str(),
            &"ü".repeat(32),
            &format!("{}é", "A".repeat(63)),
            &"9".repeat(10_000),
        ] {
            assert!(parse_thumbprint(text).is_err(), "{text:?}");
        }
        assert!(parse_thumbprint(&"ab".repeat(32)).is_ok());
        assert_eq!(decode_hex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(decode_hex::<2>("0aF"), None);
        assert_eq!(decode_hex::<1>("é"), None);
    }

    #[test]
    fn thumbprints_parse_with_or_without_colons() {
        let colons = "AB:".repeat(31) + "CD";
        let bare = "ab".repeat(31) + "cd";
        assert_eq!(parse_thumbprint(&colons), parse_thumbprint(&bare));
        assert_eq!(
            format_thumbprint(&parse_thumbprint(&bare).expect("valid")),
            colons
        );
        assert!(
            parse_thumbprint("AB:CD")
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert!(
            parse_thumbprint(&"zz".repeat(32))
                .unwrap_err()
                .contains("not hex")
        );
    }
}
