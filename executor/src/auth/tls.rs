//! Mutual TLS for TCP listeners (rustls through tonic): the server's
//! identity, the CA that client certificates must chain to, and the
//! principal a verified client certificate stands for (its subject).

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::{Principal, TlsConfig};
use crate::config::ConfigError;

/// The server TLS configuration: client certificates required and
/// verified against `client_ca`.
pub fn server_config(tls: &TlsConfig) -> Result<ServerTlsConfig, ConfigError> {
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            ConfigError::Invalid(format!("auth.tls.{what}: cannot read {}: {e}", p.display()))
        })
    };
    let cert = read("cert", &tls.cert)?;
    let key = read("key", &tls.key)?;
    let ca = read("client_ca", &tls.client_ca)?;
    // rustls rejects malformed PEM only when the first connection comes;
    // check the certificates now so that a bad file stops start-up.
    for (what, pem) in [("cert", &cert), ("client_ca", &ca)] {
        let n = x509_parser::pem::Pem::iter_from_buffer(pem)
            .map(|p| {
                p.map_err(|e| e.to_string())
                    .and_then(|p| p.parse_x509().map(|_| ()).map_err(|e| e.to_string()))
            })
            .collect::<Result<Vec<()>, String>>()
            .map_err(|e| ConfigError::Invalid(format!("auth.tls.{what}: {e}")))?
            .len();
        if n == 0 {
            return Err(ConfigError::Invalid(format!(
                "auth.tls.{what}: no PEM certificate in the file"
            )));
        }
    }
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(false))
}

/// The principal of a client certificate (DER) that rustls has already
/// verified: its subject in RFC 4514 form.
pub fn principal_of(der: &[u8]) -> Result<Principal, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unparsable client certificate: {e}"))?;
    let subject = cert.subject().to_string();
    if subject.is_empty() {
        return Err("the client certificate has an empty subject".into());
    }
    Ok(Principal::Cert { subject })
}
