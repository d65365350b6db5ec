//! CAS, ByteStream, Capabilities and ActionCache over real sockets.

mod common;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Directory, DirectoryNode,
    FindMissingBlobsRequest, GetActionResultRequest, GetCapabilitiesRequest, GetTreeRequest,
    UpdateActionResultRequest, WaitExecutionRequest, action_cache_client::ActionCacheClient,
    batch_update_blobs_request, capabilities_client::CapabilitiesClient,
    content_addressable_storage_client::ContentAddressableStorageClient, digest_function,
    execution_client::ExecutionClient,
};
use bazel_remote_apis::google::bytestream::{
    QueryWriteStatusRequest, ReadRequest, WriteRequest, byte_stream_client::ByteStreamClient,
};
use common::{TestServer, digest, upload};
use hermeticd::digest::{DigestFunction, key_of};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_over_unix_and_tcp() {
    let server = TestServer::start(|_, _| {}).await;
    for channel in [server.unix_channel().await, server.tcp_channel().await] {
        let caps = CapabilitiesClient::new(channel)
            .get_capabilities(GetCapabilitiesRequest::default())
            .await
            .unwrap()
            .into_inner();
        let low = caps.low_api_version.unwrap();
        let high = caps.high_api_version.unwrap();
        assert_eq!((low.major, low.minor), (2, 0));
        assert!(high.major == 2 && high.minor >= 3);
        let cache = caps.cache_capabilities.unwrap();
        assert!(
            cache
                .digest_functions
                .contains(&(digest_function::Value::Sha256 as i32))
        );
        assert!(
            cache
                .digest_functions
                .contains(&(digest_function::Value::Blake3 as i32))
        );
        assert!(
            !cache
                .action_cache_update_capabilities
                .unwrap()
                .update_enabled
        );
        assert!(caps.execution_capabilities.unwrap().exec_enabled);
    }
    let err = CapabilitiesClient::new(server.tcp_channel().await)
        .get_capabilities(GetCapabilitiesRequest {
            instance_name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("nope"), "{}", err.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_with_both_digest_functions() {
    let server = TestServer::start(|_, _| {}).await;
    let mut cas = ContentAddressableStorageClient::new(server.unix_channel().await);
    for f in DigestFunction::ALL {
        let keys = upload(&mut cas, f, &[b"alpha", b"beta"]).await;
        let absent = key_of(f, b"gamma");
        let missing = cas
            .find_missing_blobs(FindMissingBlobsRequest {
                instance_name: String::new(),
                blob_digests: vec![keys[0].to_proto(), absent.to_proto(), f.empty().to_proto()],
                digest_function: f.to_proto(),
            })
            .await
            .unwrap()
            .into_inner()
            .missing_blob_digests;
        assert_eq!(missing, vec![absent.to_proto()], "{f}");
        let read = cas
            .batch_read_blobs(BatchReadBlobsRequest {
                instance_name: String::new(),
                digests: vec![keys[1].to_proto(), absent.to_proto(), f.empty().to_proto()],
                acceptable_compressors: vec![],
                digest_function: f.to_proto(),
            })
            .await
            .unwrap()
            .into_inner()
            .responses;
        assert_eq!(read[0].data, b"beta");
        assert_eq!(read[1].status.as_ref().unwrap().code, Code::NotFound as i32);
        assert_eq!(read[2].status.as_ref().unwrap().code, 0);
        assert!(read[2].data.is_empty());
    }
    // A SHA-256 digest is not found under BLAKE3.
    let sha = key_of(DigestFunction::Sha256, b"alpha");
    let missing = cas
        .find_missing_blobs(FindMissingBlobsRequest {
            instance_name: String::new(),
            blob_digests: vec![sha.to_proto()],
            digest_function: DigestFunction::Blake3.to_proto(),
        })
        .await
        .unwrap()
        .into_inner()
        .missing_blob_digests;
    assert_eq!(missing.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_store_nothing() {
    let server = TestServer::start(|c, _| {
        c.instance_names = Some(vec![String::new(), "team/a".into()]);
    })
    .await;
    let mut cas = ContentAddressableStorageClient::new(server.tcp_channel().await);
    let claimed = key_of(DigestFunction::Sha256, b"the real data");
    let resp = cas
        .batch_update_blobs(BatchUpdateBlobsRequest {
            instance_name: "team/a".into(),
            requests: vec![batch_update_blobs_request::Request {
                digest: digest(&claimed),
                data: b"other data".to_vec(),
                compressor: 0,
            }],
            digest_function: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.responses[0].status.as_ref().unwrap().code,
        Code::InvalidArgument as i32
    );
    let missing = cas
        .find_missing_blobs(FindMissingBlobsRequest {
            instance_name: "team/a".into(),
            blob_digests: vec![claimed.to_proto()],
            digest_function: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(missing.missing_blob_digests.len(), 1);

    // Unknown instance, unknown digest function, malformed digest.
    let find = |instance: &str, function: i32, hash: &str| FindMissingBlobsRequest {
        instance_name: instance.into(),
        blob_digests: vec![
            bazel_remote_apis::build::bazel::remote::execution::v2::Digest {
                hash: hash.into(),
                size_bytes: 1,
            },
        ],
        digest_function: function,
    };
    let good = claimed.hex();
    for (req, what) in [
        (find("team/b", 0, &good), "unknown instance"),
        (find("", digest_function::Value::Md5 as i32, &good), "md5"),
        (find("", 0, "abc"), "short hash"),
    ] {
        let err = cas.find_missing_blobs(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }

    // Oversized batch.
    let big = vec![0u8; 5 << 20];
    let big_key = key_of(DigestFunction::Sha256, &big);
    let err = ContentAddressableStorageClient::new(server.tcp_channel().await)
        .max_encoding_message_size(16 << 20)
        .batch_update_blobs(BatchUpdateBlobsRequest {
            instance_name: String::new(),
            requests: vec![batch_update_blobs_request::Request {
                digest: digest(&big_key),
                data: big,
                compressor: 0,
            }],
            digest_function: 0,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
        ),
        "{err:?}"
    );
    server.stop().await;
}

/// A batch large enough to be stored on several threads answers in request
/// order, each blob on its own: bad ones refused, the others stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_answer_in_order() {
    let server = TestServer::start(|_, _| {}).await;
    let mut cas = ContentAddressableStorageClient::new(server.unix_channel().await);
    let f = DigestFunction::Sha256;
    let blobs: Vec<Vec<u8>> = (0..700).map(|i| format!("blob {i}").into_bytes()).collect();
    let bad = |i: usize| i % 97 == 13;
    let requests = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| batch_update_blobs_request::Request {
            // Every 97th claims another blob's digest.
            digest: digest(&key_of(f, if bad(i) { b"not this" } else { b })),
            data: b.clone(),
            compressor: 0,
        })
        .collect();
    let resp = cas
        .batch_update_blobs(BatchUpdateBlobsRequest {
            instance_name: String::new(),
            requests,
            digest_function: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.responses.len(), blobs.len());
    for (i, r) in resp.responses.iter().enumerate() {
        let want = if bad(i) {
            key_of(f, b"not this")
        } else {
            key_of(f, &blobs[i])
        };
        assert_eq!(r.digest, digest(&want), "response {i} out of order");
        let code = r.status.as_ref().unwrap().code;
        if bad(i) {
            assert_eq!(code, Code::InvalidArgument as i32, "blob {i}");
        } else {
            assert_eq!(code, 0, "blob {i}");
        }
    }
    let missing = cas
        .find_missing_blobs(FindMissingBlobsRequest {
            instance_name: String::new(),
            blob_digests: blobs.iter().map(|b| key_of(f, b).to_proto()).collect(),
            digest_function: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut expected: Vec<_> = (0..blobs.len())
        .filter(|&i| bad(i))
        .map(|i| key_of(f, &blobs[i]).hex())
        .collect();
    let mut got: Vec<_> = missing
        .missing_blob_digests
        .iter()
        .map(|d| d.hash.clone())
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    server.stop().await;
}

fn write_req(name: &str, offset: i64, data: &[u8], finish: bool) -> WriteRequest {
    WriteRequest {
        resource_name: name.into(),
        write_offset: offset,
        finish_write: finish,
        data: data.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytestream_read_write_resume() {
    let server = TestServer::start(|_, _| {}).await;
    let mut bs = ByteStreamClient::new(server.unix_channel().await);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for f in DigestFunction::ALL {
        let key = key_of(f, &data);
        let seg = match f {
            DigestFunction::Sha256 => String::new(),
            DigestFunction::Blake3 => "blake3/".into(),
        };
        let name = format!(
            "uploads/{}/blobs/{seg}{}/{}",
            uuid::Uuid::new_v4(),
            key.hex(),
            key.size
        );
        // First attempt: half the data, no finish_write; the stream ends.
        let half = data.len() / 2;
        let first = vec![write_req(&name, 0, &data[..half], false)];
        let err = bs.write(tokio_stream::iter(first)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let status = bs
            .query_write_status(QueryWriteStatusRequest {
                resource_name: name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.committed_size, half as i64);
        assert!(!status.complete);
        // Resume.
        let rest = vec![
            write_req(&name, half as i64, &data[half..half + 1000], false),
            write_req("", (half + 1000) as i64, &data[half + 1000..], true),
        ];
        let resp = bs
            .write(tokio_stream::iter(rest))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.committed_size, data.len() as i64);
        let status = bs
            .query_write_status(QueryWriteStatusRequest {
                resource_name: name,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(status.complete);
        // Read with offset and limit, with and without the function segment.
        let read_name = format!("blobs/{seg}{}/{}", key.hex(), key.size);
        let mut stream = bs
            .read(ReadRequest {
                resource_name: read_name.clone(),
                read_offset: 1_000_000,
                read_limit: 1_500_000,
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            got.extend(chunk.unwrap().data);
        }
        assert_eq!(got, &data[1_000_000..2_500_000]);
        let err = bs
            .read(ReadRequest {
                resource_name: read_name,
                read_offset: data.len() as i64 + 1,
                read_limit: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange);
    }

    // A write whose data does not match its digest stores nothing.
    let key = key_of(DigestFunction::Sha256, b"expected");
    let name = format!("uploads/x/blobs/{}/{}", key.hex(), key.size);
    let err = bs
        .write(tokio_stream::iter(vec![write_req(
            &name,
            0,
            b"unexpect",
            true,
        )]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = bs
        .read(ReadRequest {
            resource_name: format!("blobs/{}/{}", key.hex(), key.size),
            read_offset: 0,
            read_limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Malformed resource names.
    for bad in [
        "blobs/abc/1".to_owned(),
        format!("blobs/{}", key.hex()),
        format!("blobs/md5/{}/8", key.hex()),
        format!("nope/{}/8", key.hex()),
        format!("unknown-instance/blobs/{}/8", key.hex()),
    ] {
        let err = bs
            .read(ReadRequest {
                resource_name: bad.clone(),
                read_offset: 0,
                read_limit: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
    }
    let err = bs
        .write(tokio_stream::iter(vec![write_req(
            "uploads/u/objects/x/1",
            0,
            b"x",
            true,
        )]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_cache_is_closed_to_clients_by_default() {
    let server = TestServer::start(|_, _| {}).await;
    let channel = server.tcp_channel().await;
    let mut ac = ActionCacheClient::new(channel.clone());
    let action = key_of(DigestFunction::Sha256, b"some action");
    let err = ac
        .update_action_result(UpdateActionResultRequest {
            instance_name: String::new(),
            action_digest: digest(&action),
            action_result: Some(ActionResult::default()),
            results_cache_policy: None,
            digest_function: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = ac
        .get_action_result(GetActionResultRequest {
            action_digest: digest(&action),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = ExecutionClient::new(channel)
        .wait_execution(WaitExecutionRequest {
            name: "operations/does-not-exist".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_cache_by_policy_serves_only_complete_results() {
    let server = TestServer::start(|c, _| c.action_cache.allow_client_updates = true).await;
    let channel = server.tcp_channel().await;
    let mut ac = ActionCacheClient::new(channel.clone());
    let mut cas = ContentAddressableStorageClient::new(channel);
    let f = DigestFunction::Blake3;
    let out = upload(&mut cas, f, &[b"output"]).await[0];
    let action = key_of(f, b"action");
    let result = ActionResult {
        output_files: vec![
            bazel_remote_apis::build::bazel::remote::execution::v2::OutputFile {
                path: "out".into(),
                digest: digest(&out),
                ..Default::default()
            },
        ],
        stdout_digest: digest(&f.empty()),
        ..Default::default()
    };
    ac.update_action_result(UpdateActionResultRequest {
        action_digest: digest(&action),
        action_result: Some(result.clone()),
        digest_function: f.to_proto(),
        ..Default::default()
    })
    .await
    .unwrap();
    let got = ac
        .get_action_result(GetActionResultRequest {
            action_digest: digest(&action),
            digest_function: f.to_proto(),
            inline_output_files: vec!["out".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.output_files[0].contents, b"output");
    // A result naming a blob that is not stored is refused.
    let mut dangling = result;
    dangling.output_files[0].digest = digest(&key_of(f, b"never uploaded"));
    let err = ac
        .update_action_result(UpdateActionResultRequest {
            action_digest: digest(&key_of(f, b"action 2")),
            action_result: Some(dangling),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tree_pages_through_every_directory() {
    let server = TestServer::start(|_, _| {}).await;
    let mut cas = ContentAddressableStorageClient::new(server.tcp_channel().await);
    let f = DigestFunction::Sha256;
    // A chain of 5 directories.
    let mut child: Option<Directory> = None;
    let mut all = Vec::new();
    for i in 0..5 {
        let mut d = Directory::default();
        if let Some(c) = child.take() {
            let data = c.encode_to_vec();
            let k = upload(&mut cas, f, &[&data]).await[0];
            d.directories.push(DirectoryNode {
                name: format!("d{i}"),
                digest: digest(&k),
            });
        }
        all.push(d.clone());
        child = Some(d);
    }
    let root = child.unwrap();
    let root_key = upload(&mut cas, f, &[&root.encode_to_vec()]).await[0];
    let mut stream = cas
        .get_tree(GetTreeRequest {
            root_digest: digest(&root_key),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut pages = Vec::new();
    while let Some(p) = stream.next().await {
        pages.push(p.unwrap());
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].directories[0], root);
    assert_eq!(pages[0].next_page_token, "2");
    assert!(pages[2].next_page_token.is_empty());
    let resumed = cas
        .get_tree(GetTreeRequest {
            root_digest: digest(&root_key),
            page_size: 10,
            page_token: "4".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.directories.len(), 1);
    let err = cas
        .get_tree(GetTreeRequest {
            root_digest: digest(&key_of(f, b"absent")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
}
