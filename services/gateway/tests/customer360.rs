//! Customer 360 with the real profile service and other backends down or
//! slow: the answer comes with the parts that arrived and a status for each
//! part that did not.

use std::time::Duration;

use rapport_proto::rapport::gateway::v1 as pb;
use rapport_proto::rapport::gateway::v1::customer360_service_client::Customer360ServiceClient;
use rapport_proto::rapport::profile::v1 as ppb;
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_testkit::{Answer, Refused};
use tonic::Code;

const GATEWAY: rapport_testkit::Service = rapport_testkit::service!(rapport_gateway);
const PROFILE: rapport_testkit::Service = rapport_testkit::service!(rapport_profile);

#[tokio::test]
async fn parts_that_do_not_arrive_are_reported_not_fatal() {
    let db = rapport_testkit::migrated(&[GATEWAY, PROFILE]).await;
    let token = "internal-credential-for-tests-0123".to_string();
    let base = rapport_kit::config::ServiceConfig {
        database_url: db.url.clone(),
        internal_token: Some(token.clone()),
        ..Default::default()
    };
    let profile = PROFILE.serve(base.clone()).await;
    // A backend that accepts connections and never answers: a slow service.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    // A backend that is down: nothing listens on this port.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway_config = rapport_kit::config::ServiceConfig {
        profile_url: Some(profile.endpoint()),
        interaction_url: Some(format!("http://{down}")),
        segmentation_url: Some(format!("http://{silent_addr}")),
        valuation_url: None,
        ..base
    };
    let gateway = GATEWAY.serve(gateway_config).await;

    let pool = GATEWAY.pool(&db, 2).await;
    let creds = rapport_gateway::ensure_dev_credentials(&pool, None, false)
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", creds.api_key).parse().unwrap();
    let channel = rapport_testkit::channel(&gateway).await;
    let b = bearer.clone();
    let mut profiles =
        ProfileServiceClient::with_interceptor(channel.clone(), move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", b.clone());
            Ok(r)
        });
    let created = profiles
        .create_customer(ppb::CreateCustomerRequest {
            customer: Some(ppb::Customer {
                kind: ppb::CustomerKind::Person as i32,
                display_name: "Ana López".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .answer()
        .customer
        .unwrap();

    let mut c360 =
        Customer360ServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
    let mut request = tonic::Request::new(pb::GetCustomer360Request {
        customer_id: created.customer_id.clone(),
        max_interactions: 0,
    });
    // The client allows 5 s; the gateway's budget is the shorter of that (less
    // 50 ms) and its 2 s default, so a slow part is cut off at about 2 s.
    request.set_timeout(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let answer = c360.get_customer360(request).await.answer();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(4500),
        "the budget bounds the call: {took:?}"
    );
    assert_eq!(answer.customer_id, created.customer_id);
    assert_eq!(answer.profile.unwrap().display_name, "Ana López");
    assert!(!answer.complete);
    let code = |part: &str| {
        answer
            .part_statuses
            .iter()
            .find(|p| p.part == part)
            .map(|p| p.code_name.clone())
            .unwrap_or_else(|| panic!("no status for {part}"))
    };
    assert_eq!(code("profile"), "OK");
    assert_eq!(
        code("interaction_summary"),
        "UNAVAILABLE",
        "a backend that is down"
    );
    assert_eq!(code("latest_interactions"), "UNAVAILABLE");
    assert_eq!(
        code("segments"),
        "DEADLINE_EXCEEDED",
        "a backend that never answers"
    );
    assert_eq!(code("classification"), "DEADLINE_EXCEEDED");
    assert_eq!(
        code("value"),
        "UNAVAILABLE",
        "no valuation service configured"
    );
    assert_eq!(
        code("next_best_actions"),
        "UNAVAILABLE",
        "no engagement service configured"
    );
    assert_eq!(answer.part_statuses.len(), 7);

    // Bad input and unknown customers fail the call itself.
    c360.get_customer360(pb::GetCustomer360Request {
        customer_id: "nope".into(),
        max_interactions: -1,
    })
    .await
    .refused(Code::InvalidArgument);
    c360.get_customer360(pb::GetCustomer360Request {
        customer_id: uuid::Uuid::new_v4().to_string(),
        max_interactions: 0,
    })
    .await
    .refused(Code::NotFound);
}
