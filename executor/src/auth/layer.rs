//! The authorization layer: a tower layer around every gRPC route that
//! reads the connection's peer (put into the request's extensions by
//! tonic, see [`super::peer`]), turns it into a [`Principal`], checks the
//! method against the [`Policy`] and either passes the request on, with
//! the principal in its extensions for the handlers, or answers
//! UNAUTHENTICATED / PERMISSION_DENIED itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::transport::server::TlsConnectInfo;
use tower::{Layer, Service};
use tracing::warn;

use tonic::body::Body;

use super::peer::PeerInfo;
use super::{Policy, Principal, tls};
use crate::sched::upload::{CountedBody, UPLOAD_METHODS, UploadQuota};

/// Called on every refused call (metrics).
pub type DenialHook = Arc<dyn Fn(&Principal, &str) + Send + Sync>;

/// Wraps services with [`Authorize`].
#[derive(Clone)]
pub struct AuthLayer {
    policy: Arc<Policy>,
    on_denial: Option<DenialHook>,
    uploads: Option<Arc<UploadQuota>>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// A layer enforcing `policy`; `on_denial` sees every refusal.
    pub fn new(policy: Arc<Policy>, on_denial: Option<DenialHook>) -> Self {
        AuthLayer {
            policy,
            on_denial,
            uploads: None,
        }
    }

    /// Also charges the request bytes of uploads to their principal.
    pub fn with_upload_quota(mut self, quota: Option<Arc<UploadQuota>>) -> Self {
        self.uploads = quota;
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    layer: AuthLayer,
}

/// Who sent a request, from its extensions. With TLS, tonic inserts both
/// the TLS information and the inner stream's, so TLS is looked at first.
fn principal(ext: &http::Extensions) -> Result<Principal, String> {
    if let Some(info) = ext.get::<TlsConnectInfo<PeerInfo>>() {
        let certs = info
            .peer_certs()
            .ok_or("the TLS client sent no certificate")?;
        let leaf = certs.first().ok_or("the TLS client sent no certificate")?;
        return tls::principal_of(leaf.as_ref());
    }
    if let Some(peer) = ext.get::<PeerInfo>() {
        return match peer {
            PeerInfo::Known(p) => Ok(p.clone()),
            PeerInfo::Unknown(why) => Err(why.clone()),
            PeerInfo::Tls => Err("TLS connection information is missing".into()),
        };
    }
    Err("the connection's peer is unknown".into())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Authorize<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let refusal = match principal(req.extensions()) {
            Err(why) => {
                warn!(method = %method, reason = %why, "unauthenticated call refused");
                tonic::Status::unauthenticated(format!("cannot identify the caller: {why}"))
            }
            Ok(p) => match self.layer.policy.authorize(&p, &method) {
                Ok(()) => {
                    if let Some(quota) = &self.layer.uploads
                        && UPLOAD_METHODS.contains(&method.as_str())
                    {
                        let (quota, who) = (quota.clone(), p.to_string());
                        req = req.map(|b| Body::new(CountedBody::new(b, quota, who)));
                    }
                    let roles = self.layer.policy.roles_of(&p);
                    req.extensions_mut().insert(super::Caller {
                        principal: p.clone(),
                        roles,
                    });
                    req.extensions_mut().insert(p);
                    let fut = self.inner.call(req);
                    return Box::pin(fut);
                }
                Err(denial) => {
                    warn!(principal = %denial.principal, method = %denial.method, needed = %denial.needed, "permission denied");
                    if let Some(hook) = &self.layer.on_denial {
                        hook(&p, &method);
                    }
                    tonic::Status::permission_denied(denial.to_string())
                }
            },
        };
        Box::pin(async move { Ok(refusal.into_http()) })
    }
}
