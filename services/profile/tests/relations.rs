//! Contact links, consent and the change feed over real gRPC and PostgreSQL.

mod support;

use futures::StreamExt;
use rapport_proto::rapport::profile::v1::*;
use support::*;
use tonic::Code;

fn link(person: &str, org: &str, role: ContactRole) -> ContactLink {
    ContactLink {
        person_customer_id: person.into(),
        organization_customer_id: org.into(),
        role: role as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn contacts_link_unlink_and_list() {
    let env = start().await;
    let mut c = env.client.clone();
    let ana = create(&mut c, person("Ana", "", "ana@x.com")).await;
    let bea = create(&mut c, person("Bea", "", "bea@x.com")).await;
    let acme = create(&mut c, organization("Acme")).await;
    let globex = create(&mut c, organization("Globex")).await;

    let mut l = link(&ana.customer_id, &acme.customer_id, ContactRole::Buyer);
    l.job_title = "Head of Procurement".into();
    l.primary = true;
    l.start_date = Some(CalendarDate {
        year: 2020,
        month: 1,
        day: 15,
    });
    let first = c
        .link_contact(LinkContactRequest {
            link: Some(l.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let stored = first.link.unwrap();
    assert!(stored.primary);
    // Same person, organisation and role: an update, not a second link.
    l.job_title = "CPO".into();
    let second = c
        .link_contact(LinkContactRequest {
            link: Some(l.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!second.created);
    assert_eq!(
        second.link.as_ref().unwrap().contact_link_id,
        stored.contact_link_id
    );
    assert_eq!(second.link.unwrap().job_title, "CPO");
    // Making Bea primary clears Ana's flag.
    let mut lb = link(
        &bea.customer_id,
        &acme.customer_id,
        ContactRole::DecisionMaker,
    );
    lb.primary = true;
    c.link_contact(LinkContactRequest { link: Some(lb) })
        .await
        .unwrap();
    // Ana is also a (former) user of Globex.
    let mut ended = link(&ana.customer_id, &globex.customer_id, ContactRole::User);
    ended.start_date = Some(CalendarDate {
        year: 2018,
        month: 1,
        day: 1,
    });
    ended.end_date = Some(CalendarDate {
        year: 2019,
        month: 12,
        day: 31,
    });
    c.link_contact(LinkContactRequest { link: Some(ended) })
        .await
        .unwrap();

    let contacts = c
        .list_contacts(ListContactsRequest {
            organization_customer_id: acme.customer_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(contacts.links.len(), 2);
    assert_eq!(contacts.links[0].person_customer_id, ana.customer_id);
    assert!(!contacts.links[0].primary);
    assert!(contacts.links[1].primary);
    let buyers = c
        .list_contacts(ListContactsRequest {
            organization_customer_id: acme.customer_id.clone(),
            role: ContactRole::Buyer as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(buyers.links.len(), 1);
    assert!(buyers.next_page_token.is_empty());
    let orgs = c
        .list_organizations(ListOrganizationsRequest {
            person_customer_id: ana.customer_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(orgs.links.len(), 1, "the ended link is hidden");
    let all = c
        .list_organizations(ListOrganizationsRequest {
            person_customer_id: ana.customer_id.clone(),
            include_ended: true,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.links.len(), 1);
    let rest = c
        .list_organizations(ListOrganizationsRequest {
            person_customer_id: ana.customer_id.clone(),
            include_ended: true,
            page_size: 1,
            page_token: all.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.links[0].organization_customer_id, globex.customer_id);

    // Errors.
    let e = c
        .link_contact(LinkContactRequest {
            link: Some(link(
                &acme.customer_id,
                &globex.customer_id,
                ContactRole::Buyer,
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let mut bad = link("x", &acme.customer_id, ContactRole::Unspecified);
    bad.start_date = Some(CalendarDate {
        year: 2020,
        month: 2,
        day: 30,
    });
    bad.job_title = "x".repeat(201);
    let e = c
        .link_contact(LinkContactRequest { link: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&e),
        vec![
            "link.person_customer_id",
            "link.role",
            "link.job_title",
            "link.start_date"
        ]
    );
    let mut backwards = link(&ana.customer_id, &acme.customer_id, ContactRole::User);
    backwards.start_date = Some(CalendarDate {
        year: 2020,
        month: 1,
        day: 2,
    });
    backwards.end_date = Some(CalendarDate {
        year: 2020,
        month: 1,
        day: 1,
    });
    let e = c
        .link_contact(LinkContactRequest {
            link: Some(backwards),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["link.end_date"]);
    let e = c
        .list_contacts(ListContactsRequest {
            organization_customer_id: ana.customer_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let removed = c
        .unlink_contact(UnlinkContactRequest {
            person_customer_id: ana.customer_id.clone(),
            organization_customer_id: acme.customer_id.clone(),
            role: ContactRole::Buyer as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        removed.link.unwrap().contact_link_id,
        stored.contact_link_id
    );
    let e = c
        .unlink_contact(UnlinkContactRequest {
            person_customer_id: ana.customer_id.clone(),
            organization_customer_id: acme.customer_id.clone(),
            role: ContactRole::Buyer as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let types = env.event_types().await;
    assert_eq!(types.iter().filter(|t| *t == "ContactLinked").count(), 4);
    assert_eq!(types.last().unwrap(), "ContactUnlinked");
}

fn set(
    id: &str,
    channel: ConsentChannel,
    purpose: ConsentPurpose,
    status: ConsentStatus,
) -> SetConsentRequest {
    SetConsentRequest {
        customer_id: id.into(),
        channel: channel as i32,
        purpose: purpose as i32,
        status: status as i32,
        source: "web-signup-form".into(),
        ..Default::default()
    }
}

fn check(id: &str, channel: ConsentChannel, purpose: ConsentPurpose) -> CheckConsentRequest {
    CheckConsentRequest {
        customer_id: id.into(),
        channel: channel as i32,
        purpose: purpose as i32,
    }
}

#[tokio::test]
async fn consent_is_recorded_checked_and_kept_as_history() {
    let env = start().await;
    let mut c = env.client.clone();
    let ana = create(&mut c, person("Ana", "", "ana@x.com")).await;
    let id = ana.customer_id.clone();
    use ConsentChannel as Ch;
    use ConsentPurpose as Pu;
    use ConsentStatus as St;

    // Defaults: service allowed, marketing needs an opt-in.
    let r = c
        .check_consent(check(&id, Ch::Sms, Pu::Service))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);
    assert_eq!(
        r.reason,
        ConsentCheckReason::NoRecordAllowedByDefault as i32
    );
    let r = c
        .check_consent(check(&id, Ch::Email, Pu::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    assert_eq!(r.reason, ConsentCheckReason::NoRecordOptInRequired as i32);

    let g = c
        .set_consent(set(&id, Ch::Email, Pu::Marketing, St::Granted))
        .await
        .unwrap()
        .into_inner();
    assert!(g.changed);
    let same = c
        .set_consent(set(&id, Ch::Email, Pu::Marketing, St::Granted))
        .await
        .unwrap()
        .into_inner();
    assert!(!same.changed);
    let r = c
        .check_consent(check(&id, Ch::Email, Pu::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);
    assert_eq!(r.reason, ConsentCheckReason::Granted as i32);
    assert!(r.explanation.starts_with("Granted via web-signup-form on "));

    // A later blanket withdrawal (channel ANY) overrides the channel's grant.
    let w = c
        .set_consent(set(&id, Ch::Any, Pu::Marketing, St::Withdrawn))
        .await
        .unwrap()
        .into_inner();
    assert!(w.changed);
    let r = c
        .check_consent(check(&id, Ch::Email, Pu::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    assert_eq!(r.reason, ConsentCheckReason::Withdrawn as i32);
    assert_eq!(r.deciding_record.unwrap().channel, Ch::Any as i32);

    // A back-dated record does not take over.
    let mut old = set(&id, Ch::Sms, Pu::Research, St::Granted);
    old.effective_time = Some(prost_types::Timestamp {
        seconds: 1_600_000_000,
        nanos: 0,
    });
    c.set_consent(old).await.unwrap();
    let mut older = set(&id, Ch::Sms, Pu::Research, St::Denied);
    older.effective_time = Some(prost_types::Timestamp {
        seconds: 1_500_000_000,
        nanos: 0,
    });
    let r = c.set_consent(older).await.unwrap().into_inner();
    assert!(!r.changed);
    let r = c
        .check_consent(check(&id, Ch::Sms, Pu::Research))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed);

    // The customer shows the records in force.
    let now = get(&mut c, &id).await.unwrap().customer.unwrap();
    assert_eq!(now.consents.len(), 3);

    // History: newest effective time first, filtered, paged.
    let all = c
        .list_consent_history(ListConsentHistoryRequest {
            customer_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.records.len(), 5);
    assert!(all.records.windows(2).all(|w| {
        let a = w[0].effective_time.as_ref().unwrap();
        let b = w[1].effective_time.as_ref().unwrap();
        (a.seconds, a.nanos) >= (b.seconds, b.nanos)
    }));
    let sms = c
        .list_consent_history(ListConsentHistoryRequest {
            customer_id: id.clone(),
            channel: Ch::Sms as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sms.records.len(), 1);
    let sms2 = c
        .list_consent_history(ListConsentHistoryRequest {
            customer_id: id.clone(),
            channel: Ch::Sms as i32,
            page_size: 1,
            page_token: sms.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sms2.records[0].status, St::Denied as i32);
    assert!(sms2.next_page_token.is_empty());

    // Idempotent with a request id.
    let mut keyed = set(&id, Ch::Post, Pu::Marketing, St::Denied);
    keyed.request_id = "k1".into();
    let a = c.set_consent(keyed.clone()).await.unwrap().into_inner();
    let b = c.set_consent(keyed).await.unwrap().into_inner();
    assert_eq!(a, b);

    // Invalid requests.
    let mut bad = set("nope", Ch::Unspecified, Pu::Unspecified, St::Unspecified);
    bad.source = "rapport:merge".into();
    bad.effective_time = Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    });
    let e = c.set_consent(bad).await.unwrap_err();
    assert_eq!(
        violations(&e),
        vec![
            "customer_id",
            "channel",
            "purpose",
            "status",
            "source",
            "effective_time"
        ]
    );

    // A deleted customer may never be contacted, but a withdrawal is recordable.
    c.delete_customer(DeleteCustomerRequest {
        customer_id: id.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    let r = c
        .check_consent(check(&id, Ch::Email, Pu::Service))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    assert_eq!(r.reason, ConsentCheckReason::CustomerDeleted as i32);
    c.set_consent(set(&id, Ch::Email, Pu::Service, St::Withdrawn))
        .await
        .unwrap();
    let changed = env
        .scalar("SELECT count(*) FROM profile.outbox WHERE event_type = 'ConsentChanged'")
        .await;
    assert_eq!(changed, 5);
    let e = c
        .check_consent(check(
            &uuid::Uuid::new_v4().to_string(),
            Ch::Email,
            Pu::Service,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn watch_changes_streams_the_backlog_then_live_events() {
    let env = start().await;
    let mut c = env.client.clone();
    let ana = create(&mut c, person("Ana", "", "ana@x.com")).await;
    c.delete_customer(DeleteCustomerRequest {
        customer_id: ana.customer_id.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();

    // Tenant-bound callers may not read every tenant's feed.
    let e = c
        .watch_changes(WatchChangesRequest { after_sequence: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut internal = env.client_for(None);
    let e = internal
        .watch_changes(WatchChangesRequest { after_sequence: -1 })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["after_sequence"]);

    let mut stream = internal
        .watch_changes(WatchChangesRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap().event.unwrap();
    assert_eq!(first.event_type, "CustomerCreated");
    assert_eq!(first.tenant_id, env.tenant.to_string());
    assert_eq!(first.aggregate_id, ana.customer_id);
    let second = stream.next().await.unwrap().unwrap().event.unwrap();
    assert_eq!(second.event_type, "CustomerDeleted");
    assert!(second.sequence > first.sequence);
    // Live.
    c.undelete_customer(UndeleteCustomerRequest {
        customer_id: ana.customer_id.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    let third = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(third.event_type, "CustomerUndeleted");
    let payload = rapport_kit::convert::struct_to_json(third.payload.as_ref().unwrap());
    assert_eq!(payload["customer"]["state"], "CUSTOMER_STATE_ACTIVE");
}
