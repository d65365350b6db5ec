//! `hermetic.v1.Images` over a real daemon (gRPC on its Unix socket and
//! TCP): import from a CAS blob (deterministic across state directories,
//! durable across a restart), what normalization reports, refusals with
//! clear statuses and nothing half-imported left, actions pinning images by
//! digest (aliases and untrusted images refused), and Remove refused while
//! a cached action result refers to the image. Actions run through the fake
//! helper (`tests/support/fake-sandbox.py`): this file tests the daemon's
//! image handling; `client/tests/images.rs` runs the real sandbox.

mod common;

use std::path::Path;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::TestServer;
use common::actions::{execute, put_action, put_tree, sh};
use common::fake::{configure, python_available};
use hermetic_proto::ImagesClient;
use hermetic_proto::v1::{
    ImportImageRequest, InspectImageRequest, ListImagesRequest, RemoveImageRequest, SetTrustRequest,
};
use hermeticd::digest::{BlobKey, DigestFunction, key_of};
use tonic::Code;
use tonic::transport::Channel;

/// A rootfs tarball: a shell stand-in, a setuid file, a device node.
fn rootfs_tar(marker: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_uid(1000);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("bin/", tar::EntryType::Directory, 0o755, b"");
    add("bin/sh", tar::EntryType::Regular, 0o755, b"#!fake shell\n");
    add("bin/su", tar::EntryType::Regular, 0o4755, b"setuid\n");
    add("dev/", tar::EntryType::Directory, 0o755, b"");
    add("dev/null", tar::EntryType::Char, 0o666, b"");
    add("marker", tar::EntryType::Regular, 0o644, marker.as_bytes());
    b.into_inner().unwrap()
}

async fn put_blob(channel: &Channel, data: &[u8]) -> BlobKey {
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    common::upload(&mut cas, DigestFunction::Blake3, &[data]).await[0]
}

fn import_request(key: &BlobKey, alias: &str, trust: bool) -> ImportImageRequest {
    ImportImageRequest {
        digest_function: "blake3".into(),
        blob_hash: key.hex(),
        blob_size: key.size as i64,
        alias: alias.into(),
        trust,
        ..Default::default()
    }
}

fn store_listing(server: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.dir.path().join("state/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    names.sort();
    names
}

fn no_images(c: &mut hermeticd::config::Config, _: &Path) {
    c.profiles_dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_is_deterministic_reported_and_durable() {
    let tarball = rootfs_tarball();
    let a = TestServer::start(no_images).await;
    let b = TestServer::start(no_images).await;
    let mut digests = Vec::new();
    for server in [&a, &b] {
        let channel = server.unix_channel().await;
        let key = put_blob(&channel, &tarball).await;
        let resp = ImagesClient::new(channel)
            .import(import_request(&key, "tiny", true))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.new);
        let image = resp.image.unwrap();
        assert!(image.trusted);
        assert_eq!(image.trust.as_ref().unwrap().by, "unix uid 0");
        assert_eq!(image.aliases, ["tiny"]);
        assert_eq!(image.files, 3);
        let n = image.normalized.clone().unwrap();
        assert_eq!(n.setid_stripped, 1, "{n:?}");
        assert_eq!(n.devices_dropped, 1, "{n:?}");
        assert!(n.setid_stripped_paths[0].ends_with("bin/su"), "{n:?}");
        digests.push((image.digest, image.digest_sha256));
    }
    assert_eq!(digests[0], digests[1], "two fresh state dirs agree");

    // Durable: after a restart the alias and the trust record remain, and
    // the rootfs is the normalized one.
    let config = a.daemon.ctx.config.clone();
    let dir = a.stop().await;
    let a = TestServer::start_in(dir, config).await;
    let mut images = ImagesClient::new(a.tcp_channel().await);
    let image = images
        .inspect(InspectImageRequest {
            image: "tiny".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(image.digest, digests[0].0);
    assert!(image.trusted);
    assert!(image.trust.unwrap().by.starts_with("unix uid"));
    let rootfs = a
        .dir
        .path()
        .join("state/images")
        .join(&image.digest["hermetic-image:blake3:".len()..])
        .join("rootfs");
    use std::os::unix::fs::PermissionsExt;
    let su = std::fs::metadata(rootfs.join("bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o755);
    assert!(!rootfs.join("dev/null").exists());
    let list = images
        .list(ListImagesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.images.len(), 1);
    a.stop().await;
    b.stop().await;
}

fn rootfs_tarball() -> Vec<u8> {
    rootfs_tar("one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_leave_nothing() {
    let server = TestServer::start(no_images).await;
    let channel = server.tcp_channel().await;
    let mut images = ImagesClient::new(channel.clone());
    let before = store_listing(&server);

    // Not uploaded.
    let absent = key_of(DigestFunction::Blake3, b"never uploaded");
    let e = images
        .import(import_request(&absent, "", false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&absent.hex()), "{e:?}");

    // Corrupt: a truncated gzip stream, and plain garbage.
    let mut gz = flate2_like_gzip(&rootfs_tar("x"));
    gz.truncate(gz.len() / 2);
    for data in [gz, b"garbage, not an archive".to_vec()] {
        let key = put_blob(&channel, &data).await;
        let e = images
            .import(import_request(&key, "bad", true))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("cannot import"), "{e:?}");
    }
    assert_eq!(store_listing(&server), before, "nothing half-imported");

    // A bad alias is refused before any work.
    let key = put_blob(&channel, &rootfs_tar("y")).await;
    let e = images
        .import(import_request(&key, "blake3:looks-like-a-digest", false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Unknown images.
    let unknown = format!("hermetic-image:blake3:{}", "ab".repeat(32));
    for e in [
        images
            .inspect(InspectImageRequest {
                image: unknown.clone(),
            })
            .await
            .unwrap_err(),
        images
            .set_trust(SetTrustRequest {
                image: "nobody".into(),
                trusted: true,
            })
            .await
            .unwrap_err(),
        images
            .remove(RemoveImageRequest {
                image: unknown.clone(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }
    let e = images
        .inspect(InspectImageRequest {
            image: "sha256:0123".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    server.stop().await;
}

/// gzip through the system tool (the executor has no gzip crate).
fn flate2_like_gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_pin_trusted_images_and_removal_respects_the_cache() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut images = ImagesClient::new(channel.clone());
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let root = put_tree(&mut cas, f, &[]).await;

    let key = put_blob(&channel, &rootfs_tar("pinned")).await;
    let image = images
        .import(import_request(&key, "pinned", false))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    let on = |value: &str, script: &str| {
        let mut spec = sh(script);
        spec.platform = vec![("container-image".into(), value.into())];
        spec
    };

    // By alias: refused, the digest form is required.
    let action = put_action(&mut cas, f, &on("pinned", "true"), root).await;
    let e = execute(&mut exec, f, action, false).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not an image digest"), "{e:?}");

    // Untrusted: refused with the command that trusts it.
    let action = put_action(&mut cas, f, &on(&image.digest, "echo hi"), root).await;
    let e = execute(&mut exec, f, action, false).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains(&format!("hermetic image trust {}", image.digest)),
        "{e:?}"
    );

    // Trusted: runs (the sha256 form names the same image) and is cached.
    images
        .set_trust(SetTrustRequest {
            image: image.digest.clone(),
            trusted: true,
        })
        .await
        .unwrap();
    let sha_form = format!(
        "hermetic-image:{}",
        image.digest_sha256.split('/').next().unwrap()
    );
    for form in [&image.digest, &sha_form] {
        let action = put_action(&mut cas, f, &on(form, "echo hi"), root).await;
        let (_, resp) = execute(&mut exec, f, action, false).await.unwrap();
        assert_eq!(resp.status.unwrap().code, 0);
        assert_eq!(resp.result.unwrap().exit_code, 0);
    }

    // Untrusted again: even the cached result is refused.
    let cached = put_action(&mut cas, f, &on(&image.digest, "echo hi"), root).await;
    images
        .set_trust(SetTrustRequest {
            image: image.digest.clone(),
            trusted: false,
        })
        .await
        .unwrap();
    let e = execute(&mut exec, f, cached, false).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not trusted"), "{e:?}");
    images
        .set_trust(SetTrustRequest {
            image: image.digest.clone(),
            trusted: true,
        })
        .await
        .unwrap();
    let (_, resp) = execute(&mut exec, f, cached, false).await.unwrap();
    assert!(resp.cached_result);

    // Removal: refused while those cached results exist, and for the
    // daemon's default image; another, unused image goes.
    let e = images
        .remove(RemoveImageRequest {
            image: "pinned".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("2 cached action result"), "{e:?}");
    let e = images
        .remove(RemoveImageRequest {
            image: "busybox".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("default image"), "{e:?}");
    let unused = put_blob(&channel, &rootfs_tar("unused")).await;
    let unused = images
        .import(import_request(&unused, "unused", false))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    let removed = images
        .remove(RemoveImageRequest {
            image: unused.digest.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.aliases_removed, ["unused"]);
    let hexes: Vec<String> = store_listing(&server);
    assert!(!hexes.contains(&unused.digest["hermetic-image:blake3:".len()..].to_owned()));
    // Both are admin entries of the transparency log, naming the caller.
    let admin: Vec<(String, String, serde_json::Value)> =
        server.daemon.ctx.engine.provenance().with(|a| {
            (0..a.log().size())
                .filter_map(|i| {
                    match hermetic_attest::LogEntry::parse(&a.log().entry(i).unwrap()) {
                        Ok(hermetic_attest::LogEntry::Admin {
                            action,
                            principal,
                            details,
                            ..
                        }) => Some((action, principal, details)),
                        _ => None,
                    }
                })
                .collect()
        });
    for action in ["image.import", "image.rm"] {
        let found = admin
            .iter()
            .find(|(a, _, d)| a == action && d["image"] == unused.digest.as_str());
        let (_, principal, _) = found.unwrap_or_else(|| panic!("no {action} entry: {admin:?}"));
        assert!(principal.starts_with("unix:uid="), "{principal}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_images_service() {
    use prost::Message;
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start(no_images).await;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "hermetic.v1.Images".into(),
        )),
    };
    let mut stream = ServerReflectionClient::new(server.unix_channel().await)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = resp.message_response else {
        panic!("unexpected {resp:?}")
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
        .unwrap();
    assert_eq!(file.package(), "hermetic.v1");
    let service = file.service.iter().find(|s| s.name() == "Images").unwrap();
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["Import", "List", "Inspect", "Remove", "SetTrust"]);
    server.stop().await;
}
