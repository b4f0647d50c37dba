//! ListInteractions (filters, order, keyset pages, tokens) and
//! UpdateServiceRequest (the life cycle, etags, the feed).

mod common;

use common::*;
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::{
    Channel, GetInteractionRequest, InteractionType, ListInteractionsRequest, ServiceRequestStatus,
    TimelineOrder, UpdateServiceRequestRequest,
};
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn timelines_filter_order_and_page() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let other = Uuid::new_v4();
    let mut expected_ids = Vec::new();
    for d in 1..=9u32 {
        let mut i = match d % 3 {
            0 => purchase(customer, at(2024, 4, d, 12), d as i64),
            1 => contact(customer, InteractionType::Call, at(2024, 4, d, 12)),
            _ => contact(customer, InteractionType::WebVisit, at(2024, 4, d, 12)),
        };
        i.channel = if d % 2 == 0 {
            Channel::Web
        } else {
            Channel::Phone
        } as i32;
        expected_ids.push(record(&s, tenant, i).await.interaction_id);
    }
    let mut custom = contact(customer, InteractionType::Custom, at(2024, 4, 10, 0));
    custom.custom_type = "acme.webinar_attended".into();
    try_record(&mut c, tenant, custom).await.unwrap();
    // Someone else's interaction, and the same customer id in another tenant.
    try_record(&mut c, tenant, purchase(other, at(2024, 4, 5, 0), 1))
        .await
        .unwrap();
    try_record(
        &mut c,
        Uuid::new_v4(),
        purchase(customer, at(2024, 4, 5, 0), 1),
    )
    .await
    .unwrap();

    // Newest first, pages of 4: 10 interactions = 4 + 4 + 2.
    let list = |page_token: String, order: TimelineOrder| ListInteractionsRequest {
        customer_id: customer.to_string(),
        order: order as i32,
        page_size: 4,
        page_token,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_interactions(req(tenant, list(token.clone(), TimelineOrder::NewestFirst)))
            .await
            .answer();
        pages += 1;
        assert_eq!(page.customer_id, customer.to_string());
        seen.extend(page.interactions.into_iter().map(|i| i.interaction_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 10);
    let newest_nine: Vec<String> = expected_ids.iter().rev().cloned().collect();
    assert_eq!(&seen[1..], &newest_nine[..]);

    // Oldest first.
    let page = c
        .list_interactions(req(tenant, list(String::new(), TimelineOrder::OldestFirst)))
        .await
        .answer();
    let first4: Vec<String> = page
        .interactions
        .iter()
        .map(|i| i.interaction_id.clone())
        .collect();
    assert_eq!(first4, expected_ids[..4]);

    // A token is bound to its filters and its tenant.
    let mut other_order = list(page.next_page_token.clone(), TimelineOrder::NewestFirst);
    other_order.page_size = 4;
    c.list_interactions(req(tenant, other_order))
        .await
        .refused(Code::InvalidArgument);
    c.list_interactions(req(
        Uuid::new_v4(),
        list(page.next_page_token.clone(), TimelineOrder::OldestFirst),
    ))
    .await
    .refused(Code::InvalidArgument);

    // Filters: purchases on the web channel between the 2nd and the 7th.
    let r = c
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                types: vec![
                    InteractionType::Purchase as i32,
                    InteractionType::Call as i32,
                ],
                channels: vec![Channel::Web as i32],
                start_time: Some(ts(at(2024, 4, 2, 0))),
                end_time: Some(ts(at(2024, 4, 7, 0))),
                ..Default::default()
            },
        ))
        .await
        .answer();
    // Day 4 is a call on the web, day 6 a purchase on the web.
    let days: Vec<i64> = r
        .interactions
        .iter()
        .map(|i| {
            (i.occur_time.as_ref().unwrap().seconds - at(2024, 4, 1, 12).timestamp()) / 86_400 + 1
        })
        .collect();
    assert_eq!(days, [6, 4]);
    // Custom types narrow CUSTOM interactions only.
    let r = c
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                types: vec![InteractionType::Custom as i32],
                custom_types: vec!["acme.other".into()],
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert!(r.interactions.is_empty());

    // Invalid filters, one violation each.
    let err = c
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: "nope".into(),
                types: vec![0],
                channels: vec![0],
                start_time: Some(ts(at(2024, 4, 7, 0))),
                end_time: Some(ts(at(2024, 4, 2, 0))),
                page_size: -1,
                page_token: "garbage".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        [
            "customer_id",
            "types[0]",
            "channels[0]",
            "end_time",
            "page_size",
            "page_token"
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn service_requests_follow_their_life_cycle() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let recorded = record(
        &s,
        tenant,
        contact(customer, InteractionType::ServiceRequest, at(2024, 5, 1, 9)),
    )
    .await;
    assert_eq!(
        recorded.service_request_status,
        ServiceRequestStatus::Open as i32
    );
    let id = recorded.interaction_id.clone();
    let update = |status: ServiceRequestStatus, etag: &str| UpdateServiceRequestRequest {
        interaction_id: id.clone(),
        status: status as i32,
        etag: etag.into(),
        agent_id: String::new(),
    };

    // OPEN -> RESOLVED is not allowed.
    let err = c
        .update_service_request(req(tenant, update(ServiceRequestStatus::Resolved, "")))
        .await
        .refused(Code::FailedPrecondition);
    assert!(
        err.message().contains("SERVICE_REQUEST_STATUS_OPEN"),
        "{}",
        err.message()
    );

    // OPEN -> IN_PROGRESS with the current etag, assigning an agent.
    let mut first = update(ServiceRequestStatus::InProgress, &recorded.etag);
    first.agent_id = "agent-7".into();
    let r = c
        .update_service_request(req(tenant, first))
        .await
        .answer()
        .interaction
        .unwrap();
    assert_eq!(
        r.service_request_status,
        ServiceRequestStatus::InProgress as i32
    );
    assert_eq!(r.agent_id, "agent-7");
    assert_ne!(r.etag, recorded.etag);
    // The old etag is stale now.
    c.update_service_request(req(
        tenant,
        update(ServiceRequestStatus::Resolved, &recorded.etag),
    ))
    .await
    .refused(Code::Aborted);
    // IN_PROGRESS -> RESOLVED sets the resolve time; repeating it changes nothing.
    let resolved = c
        .update_service_request(req(tenant, update(ServiceRequestStatus::Resolved, "")))
        .await
        .answer()
        .interaction
        .unwrap();
    assert!(resolved.resolve_time.is_some());
    let again = c
        .update_service_request(req(tenant, update(ServiceRequestStatus::Resolved, "")))
        .await
        .answer()
        .interaction
        .unwrap();
    assert_eq!(again, resolved);
    // RESOLVED -> CLOSED -> OPEN (reopen clears the resolve time).
    c.update_service_request(req(tenant, update(ServiceRequestStatus::Closed, "")))
        .await
        .unwrap();
    let reopened = c
        .update_service_request(req(tenant, update(ServiceRequestStatus::Open, "")))
        .await
        .answer()
        .interaction
        .unwrap();
    assert!(reopened.resolve_time.is_none());
    // CLOSED is only left by reopening; OPEN -> CLOSED is illegal.
    c.update_service_request(req(tenant, update(ServiceRequestStatus::Closed, "")))
        .await
        .refused(Code::FailedPrecondition);

    // Four real changes, four events.
    assert_eq!(
        s.count("SELECT count(*) FROM outbox WHERE event_type = 'ServiceRequestUpdated'")
            .await,
        4
    );
    // Every field of each change, in order.
    let events = typed_events(&s.pool, "ServiceRequestUpdated").await;
    let changes: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::ServiceRequestUpdated(u) => u,
            other => panic!("{other:?}"),
        })
        .collect();
    let statuses: Vec<(i32, i32)> = changes
        .iter()
        .map(|u| (u.previous_status, u.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (
                ServiceRequestStatus::Open as i32,
                ServiceRequestStatus::InProgress as i32
            ),
            (
                ServiceRequestStatus::InProgress as i32,
                ServiceRequestStatus::Resolved as i32
            ),
            (
                ServiceRequestStatus::Resolved as i32,
                ServiceRequestStatus::Closed as i32
            ),
            (
                ServiceRequestStatus::Closed as i32,
                ServiceRequestStatus::Open as i32
            ),
        ]
    );
    for u in &changes {
        assert_eq!(u.interaction_id, id);
        assert_eq!(u.customer_id, recorded.customer_id);
        assert_eq!(u.r#type, InteractionType::ServiceRequest as i32);
        assert_eq!(u.occur_time, recorded.occur_time);
        assert_eq!(u.agent_id, "agent-7");
        assert!(u.update_time.is_some());
    }
    assert_eq!(changes[0].resolve_time, None);
    assert_eq!(changes[1].resolve_time, resolved.resolve_time);
    assert_eq!(changes[3].resolve_time, None);
    assert_eq!(changes[3].update_time, reopened.update_time);

    // Not a service request; another tenant's; bad input.
    let call = record(
        &s,
        tenant,
        contact(customer, InteractionType::Call, at(2024, 5, 1, 9)),
    )
    .await;
    let mut not_sr = update(ServiceRequestStatus::InProgress, "");
    not_sr.interaction_id = call.interaction_id;
    c.update_service_request(req(tenant, not_sr))
        .await
        .refused(Code::FailedPrecondition);
    c.update_service_request(req(
        Uuid::new_v4(),
        update(ServiceRequestStatus::InProgress, ""),
    ))
    .await
    .refused(Code::NotFound);
    let err = c
        .update_service_request(req(
            tenant,
            UpdateServiceRequestRequest {
                interaction_id: "x".into(),
                status: 0,
                etag: String::new(),
                agent_id: "a".repeat(129),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["interaction_id", "status", "agent_id"]
    );
    c.get_interaction(req(
        tenant,
        GetInteractionRequest {
            interaction_id: "x".into(),
        },
    ))
    .await
    .refused(Code::InvalidArgument);
    s.stop().await;
}
