//! One trace follows a call from the gateway into the service that serves it
//! and on into the services that follow its change feed: `rapport dev`
//! exports its spans over OTLP to a receiver run by this test; the gateway's
//! span and the profile service's span of one call share a trace, the
//! service's span a child of the gateway's, and the interaction service's
//! consumer of the profile feed applies the resulting event in that trace.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use support::{DevStack, grpcurl_ok};

#[derive(Debug, Clone)]
struct Span {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    component: String,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let component = s
                        .attributes
                        .iter()
                        .find(|a| a.key == "component")
                        .and_then(|a| a.value.as_ref())
                        .and_then(|v| match &v.value {
                            Some(Value::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    spans.push(Span {
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent_span_id: s.parent_span_id,
                        name: s.name,
                        component,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[test]
fn one_trace_spans_the_gateway_the_service_and_a_feed_consumer() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let otlp = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(receiver.clone());
    runtime.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });

    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{otlp}");
    let stack = DevStack::start(
        &dir.path().join("data"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("RAPPORT_LOG", "info"),
        ],
    );
    let key = std::fs::read_to_string(dir.path().join("data/dev-api-key")).unwrap();
    let auth = format!("authorization: Bearer {}", key.trim());
    let method = "/rapport.profile.v1.ProfileService/CreateCustomer";
    grpcurl_ok(&[
        "-H",
        &auth,
        "-d",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON", "display_name": "Traced Customer"}}"#,
        &stack.addr(0),
        &method[1..],
    ]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let (gateway, profile) = loop {
        let spans = receiver.0.lock().unwrap().clone();
        let gateway = spans
            .iter()
            .find(|s| s.component == "gateway" && s.name == method)
            .cloned();
        let profile = gateway.as_ref().and_then(|g| {
            spans
                .iter()
                .find(|s| s.component == "profile" && s.name == method && s.trace_id == g.trace_id)
                .cloned()
        });
        if let (Some(g), Some(p)) = (gateway, profile) {
            break (g, p);
        }
        assert!(
            Instant::now() < deadline,
            "no trace spanning gateway and profile; spans: {spans:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(gateway.trace_id, profile.trace_id);
    assert!(
        !profile.parent_span_id.is_empty(),
        "the service's span has a parent"
    );
    let spans = receiver.0.lock().unwrap().clone();
    let in_trace: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == gateway.trace_id)
        .collect();
    assert!(
        in_trace.iter().any(|s| s.span_id == profile.parent_span_id),
        "the profile span's parent is a span of the gateway's trace: {in_trace:#?}"
    );

    // The CustomerCreated event reaches the interaction service's consumer of
    // the profile feed, which applies it in the same trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let applied = loop {
        let spans = receiver.0.lock().unwrap().clone();
        if let Some(s) = spans.iter().find(|s| {
            s.name == "feed.apply" && s.component == "interaction" && s.trace_id == gateway.trace_id
        }) {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no feed.apply span of the interaction service in the call's trace; spans: {spans:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !applied.parent_span_id.is_empty(),
        "the consumer's span continues the call's trace"
    );
    stack.stop();
}
