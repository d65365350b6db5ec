//! `hermetic image`: import, list, inspect, remove and (un)trust base
//! images through the daemon's `hermetic.v1.Images` service, and the
//! resolution of `--image ALIAS|DIGEST` to the pinned digest an action
//! carries.
//!
//! Import uploads the archive into the daemon's CAS (ByteStream, only if
//! missing) and then names its digest, so it works the same against a
//! remote daemon. A directory (an OCI layout, or a root filesystem) is
//! archived into a temporary tarball first.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use hermetic_proto::v1::{
    Image, ImportImageRequest, InspectImageRequest, ListImagesRequest, RemoveImageRequest,
    SetTrustRequest,
};
use indicatif::HumanBytes;
use serde_json::json;

use crate::action::{Blob, Source};
use crate::digests::Function;
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::run::Globals;

/// `hermetic image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an image: an OCI layout (directory or tar, `docker save`
    /// output), an older docker archive, or a rootfs tarball (plain, gzip,
    /// zstd) or directory
    Import {
        /// The archive or directory
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// An alias to point at the image
        #[arg(long, value_name = "ALIAS")]
        name: Option<String>,
        /// Mark the image trusted (actions may then run on it)
        #[arg(long)]
        trust: bool,
        /// Platform to pick from a multi-platform index, os/arch[/variant]
        /// [default: the daemon's host]
        #[arg(long, value_name = "OS/ARCH")]
        platform: Option<String>,
        /// Which image to pick when the archive holds several (ref name or tag)
        #[arg(long, value_name = "REF")]
        reference: Option<String>,
    },
    /// List the daemon's images
    Ls,
    /// Show an image: digests, source manifest, size, aliases, trust, what
    /// import normalized
    Inspect {
        /// An alias or a digest (hermetic-image:blake3:HEX, sha256:HEX/SIZE, ...)
        #[arg(value_name = "DIGEST|ALIAS")]
        image: String,
    },
    /// Remove an image (refused while cached results or running actions use it)
    Rm {
        /// An alias or a digest
        #[arg(value_name = "DIGEST|ALIAS")]
        image: String,
    },
    /// Mark an image trusted
    Trust {
        /// An alias or a digest
        #[arg(value_name = "DIGEST|ALIAS")]
        image: String,
    },
    /// Mark an image untrusted (actions naming it are refused)
    Untrust {
        /// An alias or a digest
        #[arg(value_name = "DIGEST|ALIAS")]
        image: String,
    },
}

fn images(remote: &Remote) -> hermetic_proto::ImagesClient<tonic::transport::Channel> {
    hermetic_proto::ImagesClient::new(remote.channel())
}

/// The pinned digest (`hermetic-image:blake3:HEX`) of an alias or digest
/// form, as the daemon's image store knows it.
pub async fn resolve(remote: &Remote, name: &str) -> Result<String> {
    let image = images(remote)
        .inspect(InspectImageRequest {
            image: name.to_owned(),
        })
        .await
        .map_err(|s| image_error(name, s))?
        .into_inner();
    Ok(image.digest)
}

/// An unknown image is an invalid job, naming it.
fn image_error(name: &str, s: tonic::Status) -> Error {
    match s.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => {
            Error::InvalidJob(format!("image {name:?}: {}", s.message()))
        }
        _ => Error::rpc(format!("image {name:?}"))(s),
    }
}

/// Runs `hermetic image ...`; returns the exit code.
pub async fn image(g: &Globals, cmd: &ImageCommand) -> Result<u8> {
    let remote = g.connect(None).await?;
    let shown = match cmd {
        ImageCommand::Import {
            path,
            name,
            trust,
            platform,
            reference,
        } => {
            let resp = import(g, &remote, path, name, *trust, platform, reference).await?;
            let image = resp.image.unwrap_or_default();
            if g.json {
                let mut v = image_json(&image);
                v["new"] = json!(resp.new);
                v
            } else {
                println!(
                    "{} {}",
                    if resp.new {
                        "imported"
                    } else {
                        "already stored:"
                    },
                    image.digest
                );
                print_image(&image);
                return Ok(0);
            }
        }
        ImageCommand::Ls => {
            let list = images(&remote)
                .list(ListImagesRequest {})
                .await
                .map_err(Error::rpc("hermetic.v1.Images/List"))?
                .into_inner()
                .images;
            if g.json {
                json!(list.iter().map(image_json).collect::<Vec<_>>())
            } else {
                if list.is_empty() {
                    println!(
                        "no images; import one with `hermetic image import PATH --name ALIAS`"
                    );
                }
                for i in &list {
                    println!(
                        "{}  {:>10}  {:<9}  {}",
                        i.digest,
                        HumanBytes(i.total_bytes).to_string(),
                        if i.trusted { "trusted" } else { "untrusted" },
                        i.aliases.join(", ")
                    );
                }
                return Ok(0);
            }
        }
        ImageCommand::Inspect { image } => {
            let i = images(&remote)
                .inspect(InspectImageRequest {
                    image: image.clone(),
                })
                .await
                .map_err(|s| image_error(image, s))?
                .into_inner();
            if g.json {
                image_json(&i)
            } else {
                println!("{}", i.digest);
                print_image(&i);
                return Ok(0);
            }
        }
        ImageCommand::Rm { image } => {
            let r = images(&remote)
                .remove(RemoveImageRequest {
                    image: image.clone(),
                })
                .await
                .map_err(|s| image_error(image, s))?
                .into_inner();
            if g.json {
                json!({"removed": r.digest, "aliases_removed": r.aliases_removed})
            } else {
                println!("removed {}", r.digest);
                if !r.aliases_removed.is_empty() {
                    println!("  aliases removed: {}", r.aliases_removed.join(", "));
                }
                return Ok(0);
            }
        }
        ImageCommand::Trust { image } | ImageCommand::Untrust { image } => {
            let trusted = matches!(cmd, ImageCommand::Trust { .. });
            let i = images(&remote)
                .set_trust(SetTrustRequest {
                    image: image.clone(),
                    trusted,
                })
                .await
                .map_err(|s| image_error(image, s))?
                .into_inner();
            if g.json {
                image_json(&i)
            } else {
                println!(
                    "{} {}",
                    if trusted { "trusted" } else { "untrusted" },
                    i.digest
                );
                return Ok(0);
            }
        }
    };
    println!("{shown}");
    Ok(0)
}

/// Uploads the archive (a directory is archived first) and imports it.
async fn import(
    g: &Globals,
    remote: &Remote,
    path: &Path,
    name: &Option<String>,
    trust: bool,
    platform: &Option<String>,
    reference: &Option<String>,
) -> Result<hermetic_proto::v1::ImportImageResponse> {
    let meta = std::fs::metadata(path).map_err(Error::io("read", path))?;
    let tmp;
    let archive = if meta.is_dir() {
        tmp = tempfile_in_tmp()?;
        let (dir, out) = (path.to_owned(), tmp.path().to_owned());
        tokio::task::spawn_blocking(move || archive_dir(&dir, &out))
            .await
            .map_err(|e| Error::Infra(format!("archiving task failed: {e}")))??;
        tmp.path().to_owned()
    } else {
        path.to_owned()
    };
    let f = Function::Blake3;
    let digest = {
        let a = archive.clone();
        tokio::task::spawn_blocking(move || f.digest_file(&a))
            .await
            .map_err(|e| Error::Infra(format!("hashing task failed: {e}")))??
    };
    let missing = remote.find_missing(f, vec![digest.clone()]).await?;
    if !missing.is_empty() {
        if !g.json {
            eprintln!(
                "uploading {} ({})",
                path.display(),
                HumanBytes(digest.size_bytes as u64)
            );
        }
        let blob = Blob {
            digest: digest.clone(),
            source: Source::File(archive.clone()),
        };
        remote.upload(f, vec![blob], &|_| {}).await?;
    }
    if !g.json {
        eprintln!("importing (the daemon unpacks, normalizes and digests the image)");
    }
    images(remote)
        .import(ImportImageRequest {
            instance_name: g.instance.clone(),
            digest_function: f.name().to_owned(),
            blob_hash: digest.hash.clone(),
            blob_size: digest.size_bytes,
            alias: name.clone().unwrap_or_default(),
            trust,
            platform: platform.clone().unwrap_or_default(),
            reference: reference.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::InvalidArgument => {
                Error::InvalidJob(format!("{}: {}", path.display(), s.message()))
            }
            _ => Error::rpc("hermetic.v1.Images/Import")(s),
        })
        .map(tonic::Response::into_inner)
}

fn tempfile_in_tmp() -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix("hermetic-image-")
        .suffix(".tar")
        .tempfile()
        .map_err(Error::io("create", std::env::temp_dir()))
}

/// Writes `dir` as an uncompressed tarball (symlinks kept as links).
fn archive_dir(dir: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).map_err(Error::io("create", out))?;
    let mut builder = tar::Builder::new(file);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    builder
        .append_dir_all(".", dir)
        .and_then(|()| builder.finish())
        .map_err(Error::io("archive", dir))
}

fn print_image(i: &Image) {
    let n = i.normalized.clone().unwrap_or_default();
    println!("  blake3:          {}", i.digest_blake3);
    println!("  sha256:          {}", i.digest_sha256);
    if !i.source_manifest_digest.is_empty() {
        println!("  source manifest: {}", i.source_manifest_digest);
    }
    println!(
        "  aliases:         {}",
        if i.aliases.is_empty() {
            "-".to_owned()
        } else {
            i.aliases.join(", ")
        }
    );
    println!(
        "  size:            {} in {} files",
        HumanBytes(i.total_bytes),
        i.files
    );
    match &i.trust {
        Some(t) => println!(
            "  trust:           {} (by {}, {})",
            if t.trusted { "trusted" } else { "untrusted" },
            t.by,
            t.at
        ),
        None => println!("  trust:           untrusted (no decision recorded)"),
    }
    if !i.source.is_empty() {
        println!(
            "  imported:        from {} by {}, {}",
            i.source, i.imported_by, i.imported_at
        );
    }
    println!(
        "  normalized:      {} setuid/setgid bits stripped, {} devices and {} fifos dropped, \
         {} owners reset, {} xattrs dropped, {} whiteouts, {} opaque dirs",
        n.setid_stripped,
        n.devices_dropped,
        n.fifos_dropped,
        n.ownership_reset,
        n.xattrs_dropped,
        n.whiteouts,
        n.opaque_dirs
    );
    for (what, count, paths) in [
        (
            "setuid/setgid stripped",
            n.setid_stripped,
            &n.setid_stripped_paths,
        ),
        (
            "devices dropped",
            n.devices_dropped,
            &n.devices_dropped_paths,
        ),
    ] {
        if count == 0 {
            continue;
        }
        let shown: Vec<&str> = paths.iter().take(5).map(String::as_str).collect();
        let more = count.saturating_sub(shown.len() as u64);
        let tail = if more > 0 {
            format!(" and {more} more (--json lists up to 100)")
        } else {
            String::new()
        };
        println!("    {what}: {}{tail}", shown.join(", "));
    }
}

/// An image as `--json` prints it.
pub fn image_json(i: &Image) -> serde_json::Value {
    let n = i.normalized.clone().unwrap_or_default();
    json!({
        "digest": i.digest,
        "digest_blake3": i.digest_blake3,
        "digest_sha256": i.digest_sha256,
        "source_manifest_digest": i.source_manifest_digest,
        "aliases": i.aliases,
        "total_bytes": i.total_bytes,
        "files": i.files,
        "trusted": i.trusted,
        "trust": i.trust.as_ref().map(|t| json!({"trusted": t.trusted, "by": t.by, "at": t.at})),
        "source": i.source,
        "imported_by": i.imported_by,
        "imported_at": i.imported_at,
        "normalized": {
            "setid_stripped": n.setid_stripped,
            "setid_stripped_paths": n.setid_stripped_paths,
            "devices_dropped": n.devices_dropped,
            "devices_dropped_paths": n.devices_dropped_paths,
            "fifos_dropped": n.fifos_dropped,
            "hardlinks": n.hardlinks,
            "ownership_reset": n.ownership_reset,
            "xattrs_dropped": n.xattrs_dropped,
            "whiteouts": n.whiteouts,
            "opaque_dirs": n.opaque_dirs,
        },
    })
}
