//! Reaching the daemon: `unix:///path` (HTTP/2 authority `localhost`, since
//! a socket path is not a valid authority), `grpc://HOST:PORT` (plaintext)
//! or `grpcs://HOST:PORT` (TLS: the system's roots, or the CA of
//! `--tls-ca`; with `--tls-cert` and `--tls-key`, a client certificate for
//! a daemon that requires mutual TLS).

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::error::{Error, Result};

/// TLS files of the client (`--tls-ca`, `--tls-cert`, `--tls-key`, or the
/// settings' `tls_ca`, `tls_cert`, `tls_key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) the daemon's certificate must chain to;
    /// default: the system's roots.
    pub ca: Option<PathBuf>,
    /// The client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is named.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The client TLS configuration for `host`.
    fn config(&self, host: &str) -> Result<ClientTlsConfig> {
        let read = |flag: &str, p: &PathBuf| {
            std::fs::read(p).map_err(|e| {
                Error::InvalidJob(format!("--{flag} {}: cannot read it: {e}", p.display()))
            })
        };
        let pem = |flag: &str, p: &PathBuf, data: &[u8], what: &str| {
            if String::from_utf8_lossy(data).contains(&format!("-----BEGIN {what}")) {
                Ok(())
            } else {
                Err(Error::InvalidJob(format!(
                    "--{flag} {}: not a PEM file with a {}",
                    p.display(),
                    what.to_lowercase().trim_end_matches('-')
                )))
            }
        };
        let mut tls = ClientTlsConfig::new().domain_name(host.trim_matches(['[', ']']));
        match &self.ca {
            Some(p) => {
                let data = read("tls-ca", p)?;
                pem("tls-ca", p, &data, "CERTIFICATE")?;
                tls = tls.ca_certificate(Certificate::from_pem(data));
            }
            None => tls = tls.with_native_roots(),
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let cert = read("tls-cert", c)?;
                pem("tls-cert", c, &cert, "CERTIFICATE")?;
                let key = read("tls-key", k)?;
                if !String::from_utf8_lossy(&key).contains("PRIVATE KEY-----") {
                    return Err(Error::InvalidJob(format!(
                        "--tls-key {}: not a PEM private key",
                        k.display()
                    )));
                }
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::InvalidJob(
                    "--tls-cert (settings: tls_cert) needs --tls-key (tls_key), the \
                     certificate's private key"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::InvalidJob(
                    "--tls-key (settings: tls_key) needs --tls-cert (tls_cert), the client \
                     certificate"
                        .into(),
                ));
            }
        }
        Ok(tls)
    }
}

/// Where the daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A Unix socket.
    Unix(PathBuf),
    /// `host:port` over plaintext HTTP/2.
    Grpc(String),
    /// `host:port` over TLS.
    Grpcs(String),
}

impl Remote {
    /// Parses a `--remote` value.
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidJob(format!("--remote {uri:?}: {why}"));
        if let Some(path) = uri.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad("a socket path must be absolute (unix:///path)"));
            }
            return Ok(Remote::Unix(PathBuf::from(path)));
        }
        let (tls, rest) = if let Some(r) = uri.strip_prefix("grpcs://") {
            (true, r)
        } else if let Some(r) = uri.strip_prefix("grpc://") {
            (false, r)
        } else {
            return Err(bad(
                "expected unix:///path, grpc://HOST:PORT or grpcs://HOST:PORT",
            ));
        };
        let rest = rest.trim_end_matches('/');
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(bad("expected HOST:PORT")),
        }
        Ok(if tls {
            Remote::Grpcs(rest.to_owned())
        } else {
            Remote::Grpc(rest.to_owned())
        })
    }

    /// The address as a URI, for messages.
    pub fn describe(&self) -> String {
        match self {
            Remote::Unix(p) => format!("unix://{}", p.display()),
            Remote::Grpc(a) => format!("grpc://{a}"),
            Remote::Grpcs(a) => format!("grpcs://{a}"),
        }
    }

    /// How to get a daemon there.
    fn hint(&self) -> String {
        match self {
            Remote::Unix(p) if *p == crate::config::default_socket() => format!(
                "hermeticd is not running. Start it with `hermeticd` (it listens on \
                 unix://{} by default; as a service: `systemctl start hermeticd`), \
                 point at another daemon with --remote, or run without a daemon: \
                 `hermetic run --local ...`",
                p.display()
            ),
            Remote::Unix(p) => format!(
                "hermeticd is not running there. Start it with \
                 `hermeticd --listen unix://{}`, point at another daemon with --remote, \
                 or run without a daemon: `hermetic run --local ...`",
                p.display()
            ),
            _ => format!(
                "check that hermeticd runs there and listens on that address \
                 (`hermeticd --listen tcp://HOST:PORT`), or run without a daemon: \
                 `hermetic run --local ...`; it was tried as {}",
                self.describe()
            ),
        }
    }

    /// Connects, with these TLS files for `grpcs://` (refused for the
    /// other forms, which have no TLS).
    pub async fn connect_with(&self, files: &TlsFiles) -> Result<Channel> {
        if files.any() && !matches!(self, Remote::Grpcs(_)) {
            return Err(Error::InvalidJob(format!(
                "--tls-ca, --tls-cert and --tls-key are for a grpcs:// remote, not {}",
                self.describe()
            )));
        }
        let unreachable = |cause: String| Error::Unreachable {
            address: self.describe(),
            cause,
            hint: self.hint(),
        };
        let timeout = Duration::from_secs(10);
        match self {
            Remote::Unix(path) => {
                if !path.exists() {
                    return Err(unreachable("the socket does not exist".into()));
                }
                let path = path.clone();
                Endpoint::from_static("http://localhost")
                    .connect_timeout(timeout)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }))
                    .await
                    .map_err(|e| unreachable(source_chain(&e)))
            }
            Remote::Grpc(addr) => Endpoint::try_from(format!("http://{addr}"))
                .map_err(|e| Error::InvalidJob(format!("--remote: {e}")))?
                .connect_timeout(timeout)
                .connect()
                .await
                .map_err(|e| unreachable(source_chain(&e))),
            Remote::Grpcs(addr) => {
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                let tls = files.config(host)?;
                Endpoint::try_from(format!("https://{addr}"))
                    .map_err(|e| Error::InvalidJob(format!("--remote: {e}")))?
                    .tls_config(tls)
                    .map_err(|e| Error::InvalidJob(format!("--remote: {e}")))?
                    .connect_timeout(timeout)
                    .connect()
                    .await
                    .map_err(|e| unreachable(source_chain(&e)))
            }
        }
    }
}

/// An error with its causes, `a: b: c`.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            Remote::parse("unix:///run/x.sock").unwrap(),
            Remote::Unix("/run/x.sock".into())
        );
        assert_eq!(
            Remote::parse("grpc://127.0.0.1:8980").unwrap(),
            Remote::Grpc("127.0.0.1:8980".into())
        );
        assert_eq!(
            Remote::parse("grpcs://build.example:443").unwrap(),
            Remote::Grpcs("build.example:443".into())
        );
        for bad in [
            "unix://rel",
            "http://x:1",
            "grpc://nohost",
            "grpc://:1",
            "grpc://h:x",
        ] {
            assert!(Remote::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn tls_files_are_checked_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let grpcs = Remote::parse("grpcs://127.0.0.1:1").unwrap();
        let cases = [
            (
                TlsFiles {
                    ca: Some(dir.path().join("missing.pem")),
                    ..Default::default()
                },
                "--tls-ca",
            ),
            (
                TlsFiles {
                    ca: Some(junk.clone()),
                    ..Default::default()
                },
                "not a PEM file",
            ),
            (
                TlsFiles {
                    cert: Some(junk.clone()),
                    ..Default::default()
                },
                "--tls-cert (settings: tls_cert) needs --tls-key",
            ),
        ];
        for (files, want) in cases {
            let e = grpcs.connect_with(&files).await.unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let plain = Remote::parse("grpc://127.0.0.1:1").unwrap();
        let e = plain
            .connect_with(&TlsFiles {
                ca: Some(junk),
                ..Default::default()
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("grpcs://"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_socket_says_how_to_start_the_daemon() {
        let e = Remote::Unix("/nonexistent/hermeticd.sock".into())
            .connect_with(&TlsFiles::default())
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("Start it with `hermeticd --listen unix:///nonexistent"),
            "{text}"
        );
        assert_eq!(e.exit_code(), crate::error::code::INFRA);
    }
}
