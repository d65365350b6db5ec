//! The gRPC services. Handlers are thin: parse the request, call an inner
//! function returning [`crate::error::Error`], convert with `?`.

pub mod ac_service;
pub mod bytestream_service;
pub mod capabilities_service;
pub mod cas_service;
pub mod execution_service;
pub mod operations_service;
pub mod resource_name;
pub mod status_service;
pub mod write_pipeline;

use std::collections::HashSet;
use std::sync::Arc;

use crate::action_cache::ActionCache;
use crate::cas::Store;
use crate::config::Config;
use crate::digest::DigestFunction;
use crate::error::{Error, Result};
use crate::exec::engine::Engine;

/// What every service shares.
#[derive(Debug)]
pub struct Context {
    /// The configuration in force.
    pub config: Config,
    /// The served instance names.
    pub instances: HashSet<String>,
    /// The CAS.
    pub store: Arc<Store>,
    /// The action cache.
    pub action_cache: Arc<ActionCache>,
    /// The execution engine.
    pub engine: Arc<Engine>,
}

impl Context {
    /// Rejects an instance name this server does not serve.
    pub fn check_instance(&self, name: &str) -> Result<()> {
        if self.instances.contains(name) {
            return Ok(());
        }
        let mut known: Vec<String> = self.instances.iter().map(|n| format!("{n:?}")).collect();
        known.sort();
        Err(Error::UnknownInstance {
            name: name.to_owned(),
            known: known.join(", "),
        })
    }

    /// Checks the instance and resolves the request's digest function.
    pub fn request(&self, instance: &str, digest_function: i32) -> Result<DigestFunction> {
        self.check_instance(instance)?;
        DigestFunction::from_proto(digest_function)
    }
}
