//! gRPC health and reflection (v1 and v1alpha), which serves the Remote
//! Execution API's descriptors from `hermetic-proto`.

mod common;

use common::TestServer;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_every_service() {
    let server = TestServer::start(|_, _| {}).await;
    let mut health = HealthClient::new(server.unix_channel().await);
    for service in [
        "",
        "build.bazel.remote.execution.v2.Execution",
        "google.bytestream.ByteStream",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_services() {
    let server = TestServer::start(|_, _| {}).await;
    let channel = server.tcp_channel().await;
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected {resp:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected {resp:?}")
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "build.bazel.remote.execution.v2.Execution"),
            "{list:?}"
        );
    }
    server.stop().await;
}

/// Asks reflection v1 for `requests` in one stream and returns the answers.
async fn reflect_v1(
    channel: tonic::transport::Channel,
    requests: Vec<tonic_reflection::pb::v1::server_reflection_request::MessageRequest>,
) -> Vec<tonic_reflection::pb::v1::server_reflection_response::MessageResponse> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    };
    let n = requests.len();
    let reqs: Vec<ServerReflectionRequest> = requests
        .into_iter()
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        })
        .collect();
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            stream
                .next()
                .await
                .unwrap()
                .unwrap()
                .message_response
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_serves_the_remote_execution_api() {
    use prost::Message;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(|_, _| {}).await;
    let answers = reflect_v1(
        server.unix_channel().await,
        vec![
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(
                "build.bazel.remote.execution.v2.Execution".into(),
            ),
            MessageRequest::FileContainingSymbol("google.bytestream.ByteStream".into()),
            MessageRequest::FileContainingSymbol("google.longrunning.Operations".into()),
            MessageRequest::FileByFilename("google/rpc/error_details.proto".into()),
        ],
    )
    .await;
    let MessageResponse::ListServicesResponse(list) = &answers[0] else {
        panic!("unexpected {:?}", answers[0])
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in [
        "build.bazel.remote.execution.v2.Capabilities",
        "build.bazel.remote.execution.v2.ContentAddressableStorage",
        "build.bazel.remote.execution.v2.ActionCache",
        "build.bazel.remote.execution.v2.Execution",
        "google.bytestream.ByteStream",
        "google.longrunning.Operations",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&service), "{service} not in {names:?}");
    }
    // Each symbol resolves to its file; the file declares the service with
    // its methods and streaming shape.
    let files = |answer: &MessageResponse| -> Vec<prost_types::FileDescriptorProto> {
        let MessageResponse::FileDescriptorResponse(r) = answer else {
            panic!("unexpected {answer:?}")
        };
        r.file_descriptor_proto
            .iter()
            .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
            .collect()
    };
    let reapi = files(&answers[1]);
    let file = reapi
        .iter()
        .find(|f| f.name() == "build/bazel/remote/execution/v2/remote_execution.proto")
        .expect("the REAPI file");
    assert_eq!(file.package(), "build.bazel.remote.execution.v2");
    let execution = file
        .service
        .iter()
        .find(|s| s.name() == "Execution")
        .unwrap();
    let execute = &execution.method[0];
    assert_eq!(
        (execute.name(), execute.input_type(), execute.output_type()),
        (
            "Execute",
            ".build.bazel.remote.execution.v2.ExecuteRequest",
            ".google.longrunning.Operation"
        )
    );
    assert!(execute.server_streaming() && !execute.client_streaming());
    let bytestream = files(&answers[2]);
    let file = bytestream
        .iter()
        .find(|f| f.name() == "google/bytestream/bytestream.proto")
        .expect("the ByteStream file");
    let write = file.service[0]
        .method
        .iter()
        .find(|m| m.name() == "Write")
        .unwrap();
    assert!(write.client_streaming() && !write.server_streaming());
    assert!(
        files(&answers[3])
            .iter()
            .any(|f| f.name() == "google/longrunning/operations.proto")
    );
    let details = files(&answers[4]);
    assert!(
        details[0]
            .message_type
            .iter()
            .any(|m| m.name() == "PreconditionFailure")
    );
    server.stop().await;
}
