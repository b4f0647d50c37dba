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
        .answer();
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
        .answer();
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
        .answer();
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
        .answer();
    assert_eq!(buyers.links.len(), 1);
    assert!(buyers.next_page_token.is_empty());
    let orgs = c
        .list_organizations(ListOrganizationsRequest {
            person_customer_id: ana.customer_id.clone(),
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(orgs.links.len(), 1, "the ended link is hidden");
    let all = c
        .list_organizations(ListOrganizationsRequest {
            person_customer_id: ana.customer_id.clone(),
            include_ended: true,
            page_size: 1,
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(all.links.len(), 1);
    let rest = c
        .list_organizations(ListOrganizationsRequest {
            person_customer_id: ana.customer_id.clone(),
            include_ended: true,
            page_size: 1,
            page_token: all.next_page_token.clone(),
        })
        .await
        .answer();
    assert_eq!(rest.links[0].organization_customer_id, globex.customer_id);

    // Errors.
    c.link_contact(LinkContactRequest {
        link: Some(link(
            &acme.customer_id,
            &globex.customer_id,
            ContactRole::Buyer,
        )),
    })
    .await
    .refused(Code::FailedPrecondition);
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
    c.list_contacts(ListContactsRequest {
        organization_customer_id: ana.customer_id.clone(),
        ..Default::default()
    })
    .await
    .refused(Code::FailedPrecondition);

    let removed = c
        .unlink_contact(UnlinkContactRequest {
            person_customer_id: ana.customer_id.clone(),
            organization_customer_id: acme.customer_id.clone(),
            role: ContactRole::Buyer as i32,
        })
        .await
        .answer();
    assert_eq!(
        removed.link.unwrap().contact_link_id,
        stored.contact_link_id
    );
    c.unlink_contact(UnlinkContactRequest {
        person_customer_id: ana.customer_id.clone(),
        organization_customer_id: acme.customer_id.clone(),
        role: ContactRole::Buyer as i32,
    })
    .await
    .refused(Code::NotFound);
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
        .answer();
    assert!(r.allowed);
    assert_eq!(
        r.reason,
        ConsentCheckReason::NoRecordAllowedByDefault as i32
    );
    let r = c
        .check_consent(check(&id, Ch::Email, Pu::Marketing))
        .await
        .answer();
    assert!(!r.allowed);
    assert_eq!(r.reason, ConsentCheckReason::NoRecordOptInRequired as i32);

    let g = c
        .set_consent(set(&id, Ch::Email, Pu::Marketing, St::Granted))
        .await
        .answer();
    assert!(g.changed);
    let same = c
        .set_consent(set(&id, Ch::Email, Pu::Marketing, St::Granted))
        .await
        .answer();
    assert!(!same.changed);
    let r = c
        .check_consent(check(&id, Ch::Email, Pu::Marketing))
        .await
        .answer();
    assert!(r.allowed);
    assert_eq!(r.reason, ConsentCheckReason::Granted as i32);
    assert!(r.explanation.starts_with("Granted via web-signup-form on "));

    // A later blanket withdrawal (channel ANY) overrides the channel's grant.
    let w = c
        .set_consent(set(&id, Ch::Any, Pu::Marketing, St::Withdrawn))
        .await
        .answer();
    assert!(w.changed);
    let r = c
        .check_consent(check(&id, Ch::Email, Pu::Marketing))
        .await
        .answer();
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
    let r = c.set_consent(older).await.answer();
    assert!(!r.changed);
    let r = c
        .check_consent(check(&id, Ch::Sms, Pu::Research))
        .await
        .answer();
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
        .answer();
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
        .answer();
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
        .answer();
    assert_eq!(sms2.records[0].status, St::Denied as i32);
    assert!(sms2.next_page_token.is_empty());

    // Idempotent with a request id.
    let mut keyed = set(&id, Ch::Post, Pu::Marketing, St::Denied);
    keyed.request_id = "k1".into();
    let a = c.set_consent(keyed.clone()).await.answer();
    let b = c.set_consent(keyed).await.answer();
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
        .answer();
    assert!(!r.allowed);
    assert_eq!(r.reason, ConsentCheckReason::CustomerDeleted as i32);
    c.set_consent(set(&id, Ch::Email, Pu::Service, St::Withdrawn))
        .await
        .unwrap();
    let changed = env
        .scalar("SELECT count(*) FROM profile.outbox WHERE event_type = 'ConsentChanged'")
        .await;
    assert_eq!(changed, 5);
    c.check_consent(check(
        &uuid::Uuid::new_v4().to_string(),
        Ch::Email,
        Pu::Service,
    ))
    .await
    .refused(Code::NotFound);
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

    // A call made for the tenant reads that tenant's events only: another
    // tenant's customer does not show.
    let mut other = env.client_for(Some(uuid::Uuid::new_v4()));
    create(&mut other, person("Bea", "", "bea@x.com")).await;
    let mut own = c
        .watch_changes(WatchChangesRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .answer();
    for want in ["CustomerCreated", "CustomerDeleted"] {
        let e = own.next().await.unwrap().unwrap().event.unwrap();
        assert_eq!(
            (e.event_type.as_str(), e.tenant_id.clone()),
            (want, env.tenant.to_string())
        );
    }
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), own.next()).await;
    assert!(
        more.is_err(),
        "another tenant's event reached a tenant's call: {more:?}"
    );
    let mut internal = env.client_for(None);
    let e = internal
        .watch_changes(WatchChangesRequest {
            after_sequence: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["after_sequence"]);

    let mut stream = internal
        .watch_changes(WatchChangesRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .answer();
    // Every tenant's events, each tenant's in order: skip the other's.
    let mut next_own = async || loop {
        let e = stream.next().await.unwrap().unwrap().event.unwrap();
        if e.tenant_id == env.tenant.to_string() {
            return e;
        }
    };
    let first = next_own().await;
    assert_eq!(first.event_type, "CustomerCreated");
    assert_eq!(first.aggregate_id, ana.customer_id);
    let second = next_own().await;
    assert_eq!(second.event_type, "CustomerDeleted");
    assert!(second.sequence > first.sequence);
    // Live.
    c.undelete_customer(UndeleteCustomerRequest {
        customer_id: ana.customer_id.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    let third = tokio::time::timeout(std::time::Duration::from_secs(10), next_own())
        .await
        .unwrap();
    assert_eq!(third.event_type, "CustomerUndeleted");
    let typed: ProfileEvent = rapport_kit::feed::decode(&third).expect("a ProfileEvent");
    let Some(profile_event::Event::CustomerUndeleted(u)) = typed.event else {
        panic!("CustomerUndeleted: {typed:?}");
    };
    assert_eq!(u.customer_id, ana.customer_id);
    assert_eq!(
        u.customer.map(|c| c.state),
        Some(CustomerState::Active as i32)
    );
}

/// Every profile event type, decoded from the stored feed exactly as a
/// consumer receives it, with each field checked.
#[tokio::test]
async fn every_event_type_is_typed_with_every_field() {
    let env = start().await;
    let mut c = env.client.clone();
    let ana = create(&mut c, person("Ana", "López", "ana.typed@example.com")).await;
    let twin = create(&mut c, person("Ana", "Lopez", "ana.twin@example.com")).await;
    let acme = create(&mut c, organization("Acme Typed SL")).await;

    c.set_consent(SetConsentRequest {
        customer_id: ana.customer_id.clone(),
        channel: ConsentChannel::Email as i32,
        purpose: ConsentPurpose::Marketing as i32,
        status: ConsentStatus::Granted as i32,
        source: "web-form".into(),
        evidence: "form v2".into(),
        request_id: "typed-consent".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut l = link(
        &ana.customer_id,
        &acme.customer_id,
        ContactRole::DecisionMaker,
    );
    l.job_title = "CFO".into();
    l.start_date = Some(CalendarDate {
        year: 2020,
        month: 2,
        day: 29,
    });
    l.primary = true;
    let linked = c
        .link_contact(LinkContactRequest { link: Some(l) })
        .await
        .answer();
    c.unlink_contact(UnlinkContactRequest {
        person_customer_id: ana.customer_id.clone(),
        organization_customer_id: acme.customer_id.clone(),
        role: ContactRole::DecisionMaker as i32,
    })
    .await
    .unwrap();
    let merged = c
        .merge_customers(MergeCustomersRequest {
            survivor_customer_id: ana.customer_id.clone(),
            merged_customer_id: twin.customer_id.clone(),
            survivor_etag: String::new(),
            request_id: String::new(),
        })
        .await
        .answer();
    let unmerged = c
        .unmerge_customers(UnmergeCustomersRequest {
            merged_customer_id: twin.customer_id.clone(),
            request_id: String::new(),
        })
        .await
        .answer();
    c.delete_customer(DeleteCustomerRequest {
        customer_id: acme.customer_id.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    let undeleted = c
        .undelete_customer(UndeleteCustomerRequest {
            customer_id: acme.customer_id.clone(),
            etag: String::new(),
        })
        .await
        .answer();
    c.erase_customer(EraseCustomerRequest {
        customer_id: twin.customer_id.clone(),
        request_reference: String::new(),
    })
    .await
    .unwrap();

    use profile_event::Event as Ev;
    let one = |mut v: Vec<Ev>, kind: &str| -> Ev {
        assert_eq!(v.len(), 1, "{kind}: {v:?}");
        v.remove(0)
    };
    let Ev::ConsentChanged(consent) = one(env.typed_events("ConsentChanged").await, "consent")
    else {
        panic!("ConsentChanged");
    };
    assert_eq!(consent.customer_id, ana.customer_id);
    assert!(!consent.consent_record_id.is_empty());
    assert_eq!(consent.channel, ConsentChannel::Email as i32);
    assert_eq!(consent.purpose, ConsentPurpose::Marketing as i32);
    assert_eq!(consent.status, ConsentStatus::Granted as i32);
    assert_eq!(consent.previous_status, ConsentStatus::Unspecified as i32);
    assert_eq!(consent.source, "web-form");
    assert!(consent.effective_time.is_some());

    let Ev::ContactLinked(cl) = one(env.typed_events("ContactLinked").await, "linked") else {
        panic!("ContactLinked");
    };
    assert_eq!(cl.link, linked.link);
    let got = cl.link.unwrap();
    assert_eq!(got.job_title, "CFO");
    assert_eq!(
        got.start_date.map(|d| (d.year, d.month, d.day)),
        Some((2020, 2, 29))
    );
    assert!(got.primary);
    let Ev::ContactUnlinked(cu) = one(env.typed_events("ContactUnlinked").await, "unlinked") else {
        panic!("ContactUnlinked");
    };
    assert_eq!(cu.contact_link_id, got.contact_link_id);
    assert_eq!(cu.person_customer_id, ana.customer_id);
    assert_eq!(cu.organization_customer_id, acme.customer_id);
    assert_eq!(cu.role, ContactRole::DecisionMaker as i32);

    // The merge and unmerge events were redacted by the twin's erasure (they
    // name it); the survivor's own view is checked on the responses instead.
    for kind in ["CustomerMerged", "CustomerUnmerged"] {
        let Ev::Redacted(r) = one(env.typed_events(kind).await, kind) else {
            panic!("{kind} is about the erased twin and must be redacted");
        };
        assert_eq!(r.subject_id, twin.customer_id);
    }
    assert!(merged.survivor.is_some() && unmerged.restored.is_some());

    let Ev::CustomerDeleted(d) = one(env.typed_events("CustomerDeleted").await, "deleted") else {
        panic!("CustomerDeleted");
    };
    assert_eq!(d.customer_id, acme.customer_id);
    assert!(d.delete_time.is_some());
    let Ev::CustomerUndeleted(u) = one(env.typed_events("CustomerUndeleted").await, "undeleted")
    else {
        panic!("CustomerUndeleted");
    };
    assert_eq!(u.customer_id, acme.customer_id);
    assert_eq!(u.customer, undeleted.customer);
    let Ev::CustomerErased(e) = one(env.typed_events("CustomerErased").await, "erased") else {
        panic!("CustomerErased");
    };
    assert_eq!(e.customer_id, twin.customer_id);
    assert!(e.erase_time.is_some());
}

/// A merge and an unmerge, with nobody erased: their events keep every
/// field.
#[tokio::test]
async fn merge_and_unmerge_events_carry_identifiers_and_snapshots() {
    let env = start().await;
    let mut c = env.client.clone();
    let ana = create(&mut c, person("Ana", "López", "ana.m@example.com")).await;
    let twin = create(&mut c, person("Ana", "Lopez", "ana.m2@example.com")).await;
    let merged = c
        .merge_customers(MergeCustomersRequest {
            survivor_customer_id: ana.customer_id.clone(),
            merged_customer_id: twin.customer_id.clone(),
            survivor_etag: String::new(),
            request_id: String::new(),
        })
        .await
        .answer();
    let unmerged = c
        .unmerge_customers(UnmergeCustomersRequest {
            merged_customer_id: twin.customer_id.clone(),
            request_id: String::new(),
        })
        .await
        .answer();
    use profile_event::Event as Ev;
    let events = env.typed_events("CustomerMerged").await;
    let [Ev::CustomerMerged(m)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(m.survivor_customer_id, ana.customer_id);
    assert_eq!(m.merged_customer_id, twin.customer_id);
    assert_eq!(m.merge_time, merged.merge_time);
    assert!(
        m.moved_identifiers
            .iter()
            .any(|i| i.value == "ana.m2@example.com"
                && i.kind == rapport_proto::rapport::common::v1::IdentifierKind::Email as i32),
        "{m:?}"
    );
    assert_eq!(m.survivor, merged.survivor);
    let events = env.typed_events("CustomerUnmerged").await;
    let [Ev::CustomerUnmerged(u)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(u.survivor_customer_id, ana.customer_id);
    assert_eq!(u.restored_customer_id, twin.customer_id);
    assert!(u.unmerge_time.is_some());
    assert!(
        u.restored_identifiers
            .iter()
            .any(|i| i.value == "ana.m2@example.com"),
        "{u:?}"
    );
    assert_eq!(u.customer, unmerged.restored);
    assert_eq!(u.survivor, unmerged.survivor);
}
