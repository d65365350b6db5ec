//! `hermetic status`: daemon health, capabilities, the sandbox features in
//! force on its host, the queue, images, profiles and the store.

use std::collections::BTreeMap;
use std::io::Write;

use bazel_remote_apis::build::bazel::remote::execution::v2::ServerCapabilities;
use hermetic_proto::v1::GetStatusResponse;
use indicatif::HumanBytes;
use serde_json::json;

use crate::error::{Error, Result};
use crate::run::Globals;

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn function_names(values: &[i32]) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            bazel_remote_apis::build::bazel::remote::execution::v2::digest_function::Value::try_from(*v)
                .map(|f| f.as_str_name().to_ascii_lowercase())
                .unwrap_or_else(|_| format!("#{v}"))
        })
        .collect()
}

fn semver(v: &Option<bazel_remote_apis::build::bazel::semver::SemVer>) -> String {
    v.as_ref()
        .map_or_else(|| "?".into(), |v| format!("{}.{}", v.major, v.minor))
}

/// The status as JSON.
fn to_json(address: &str, caps: &ServerCapabilities, s: &GetStatusResponse) -> serde_json::Value {
    let sandbox = s.sandbox.clone().unwrap_or_default();
    let queue = s.queue.unwrap_or_default();
    let store = s.store.unwrap_or_default();
    let cache = caps.cache_capabilities.clone().unwrap_or_default();
    json!({
        "address": address,
        "version": s.version,
        "worker": s.worker,
        "serving": s.serving,
        "uptime_seconds": s.uptime_seconds,
        "api": {
            "low": semver(&caps.low_api_version),
            "high": semver(&caps.high_api_version),
            "digest_functions": function_names(&cache.digest_functions),
            "max_batch_total_size_bytes": cache.max_batch_total_size_bytes,
            "exec_enabled": caps.execution_capabilities.as_ref().is_some_and(|e| e.exec_enabled),
            "client_cache_updates": cache.action_cache_update_capabilities.is_some_and(|u| u.update_enabled),
        },
        "sandbox": {
            "detected": sandbox.detected,
            "error": sandbox.error,
            "helper": sandbox.helper,
            "kernel": sandbox.kernel,
            "root": sandbox.root,
            "user_namespaces": sandbox.user_namespaces,
            "landlock_abi": sandbox.landlock_abi,
            "seccomp": sandbox.seccomp,
            "cgroup_version": sandbox.cgroup_version,
            "cgroup_controllers": sandbox.cgroup_controllers,
            "cgroup_reason": sandbox.cgroup_reason,
            "overlayfs": sandbox.overlayfs,
        },
        "queue": {"queued": queue.queued, "active": queue.active, "jobs": queue.jobs,
                  "max_queued": queue.max_queued},
        "images": s.images,
        "default_image": s.default_image,
        "profiles": s.profiles.iter().map(|p| json!({"name": p.name, "digest": p.digest})).collect::<Vec<_>>(),
        "default_profile": s.default_profile,
        "platform_properties": s.platform_properties,
        "instance_names": s.instance_names,
        "store": {"bytes": store.bytes, "max_bytes": store.max_bytes},
    })
}

/// Human-readable lines.
fn render(
    address: &str,
    caps: &ServerCapabilities,
    s: &GetStatusResponse,
    aliases: &BTreeMap<String, Vec<String>>,
) -> String {
    let sb = s.sandbox.clone().unwrap_or_default();
    let q = s.queue.unwrap_or_default();
    let store = s.store.unwrap_or_default();
    let cache = caps.cache_capabilities.clone().unwrap_or_default();
    let mut o = String::new();
    let mut line = |k: &str, v: String| o.push_str(&format!("{k:<17}{v}\n"));
    line(
        "daemon",
        format!(
            "{address}: hermeticd {} on {}, up {}s, {}",
            s.version,
            s.worker,
            s.uptime_seconds,
            if s.serving {
                "serving"
            } else {
                "shutting down"
            }
        ),
    );
    line(
        "api",
        format!(
            "REAPI {}..{}, digest functions {}, batches up to {}",
            semver(&caps.low_api_version),
            semver(&caps.high_api_version),
            function_names(&cache.digest_functions).join(", "),
            HumanBytes(cache.max_batch_total_size_bytes.max(0) as u64)
        ),
    );
    if sb.detected {
        line("sandbox helper", sb.helper.clone());
        line("  kernel", sb.kernel.clone());
        line(
            "  ids",
            if sb.root {
                "root: sandbox ids map to an unprivileged host range".into()
            } else {
                "rootless: the sandbox runs as the daemon's own user".into()
            },
        );
        line(
            "  namespaces",
            format!(
                "user {} (with mount, pid, net, ipc, uts, cgroup)",
                yes(sb.user_namespaces)
            ),
        );
        line(
            "  landlock",
            if sb.landlock_abi > 0 {
                format!("ABI {}", sb.landlock_abi)
            } else {
                format!("unavailable ({})", sb.landlock_abi)
            },
        );
        line("  seccomp", yes(sb.seccomp).into());
        line(
            "  cgroup",
            if sb.cgroup_version.is_empty() {
                format!("unusable: {}", sb.cgroup_reason)
            } else {
                format!(
                    "{} ({})",
                    sb.cgroup_version,
                    sb.cgroup_controllers.join(", ")
                )
            },
        );
        line("  overlayfs", yes(sb.overlayfs).into());
    } else {
        line("sandbox", format!("features unknown: {}", sb.error));
    }
    line(
        "queue",
        format!(
            "{} waiting, {} active, {} run at once, capacity {}",
            q.queued, q.active, q.jobs, q.max_queued
        ),
    );
    let mark = |name: &str, default: &str| {
        if name == default {
            format!("{name} (default)")
        } else {
            name.to_owned()
        }
    };
    if s.images.is_empty() {
        line("images", "none".into());
    }
    for digest in &s.images {
        let names = aliases
            .get(digest)
            .map(|a| a.join(", "))
            .unwrap_or_default();
        line(
            "image",
            format!("{} {names}", mark(digest, &s.default_image)),
        );
    }
    for p in &s.profiles {
        line(
            "profile",
            format!("{} {}", mark(&p.name, &s.default_profile), p.digest),
        );
    }
    line(
        "store",
        format!(
            "{} of {}",
            HumanBytes(store.bytes),
            HumanBytes(store.max_bytes)
        ),
    );
    o
}

/// Image digest -> aliases, from `hermetic.v1.Images/List` (empty when the
/// daemon does not serve it).
async fn image_aliases(remote: &crate::remote::Remote) -> BTreeMap<String, Vec<String>> {
    let list = hermetic_proto::ImagesClient::new(remote.channel())
        .list(hermetic_proto::v1::ListImagesRequest {})
        .await;
    list.map(|r| {
        r.into_inner()
            .images
            .into_iter()
            .map(|i| (i.digest, i.aliases))
            .collect()
    })
    .unwrap_or_default()
}

/// Runs `hermetic status`.
pub async fn status(g: &Globals) -> Result<u8> {
    let mut remote = g.connect(None).await?;
    let caps = remote.capabilities(None).await?;
    let aliases = image_aliases(&remote).await;
    let s = remote.status().await.map_err(|e| match e {
        Error::Rpc {
            status_code: tonic::Code::Unimplemented,
            ..
        } => Error::Infra("this daemon does not serve hermetic.v1.Status (not hermeticd?)".into()),
        e => e,
    })?;
    let address = g
        .remote
        .clone()
        .or_else(|| g.settings.remote.clone())
        .unwrap_or_else(|| format!("unix://{}", crate::config::default_socket().display()));
    let text = if g.json {
        serde_json::to_string_pretty(&to_json(&address, &caps, &s))
            .map_err(|e| Error::Infra(format!("status does not serialize: {e}")))?
            + "\n"
    } else {
        render(&address, &caps, &s, &aliases)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(Error::io("write", "stdout"))?;
    Ok(0)
}
