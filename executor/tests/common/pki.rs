//! Certificates made in the test (rcgen) and mTLS channels.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A CA, and certificates it signs.
pub struct Pki {
    /// The CA.
    pub ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Pki {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// (certificate PEM, key PEM) with the subject `CN={cn}, O=hermetic
    /// tests`, valid for localhost.
    pub fn issue(&self, cn: &str) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "hermetic tests");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Configures the daemon's mTLS with a server certificate from this CA
    /// (files written into `dir`).
    pub fn configure(&self, c: &mut hermeticd::config::Config, dir: &std::path::Path) {
        let (cert, key) = self.issue("hermeticd");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        c.auth.tls = Some(hermeticd::auth::TlsConfig {
            cert: write("server.pem", &cert),
            key: write("server.key", &key),
            client_ca: write("ca.pem", &self.ca.pem()),
        });
    }
}

/// An mTLS channel to `addr`, trusting `ca`, presenting `identity`.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::try_from(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await
}
