//! Consents.

use super::*;

pub(crate) fn consent_request(customer: &str, status: ConsentStatus) -> SetConsentRequest {
    SetConsentRequest {
        customer_id: customer.into(),
        channel: ConsentChannel::Email as i32,
        purpose: ConsentPurpose::Marketing as i32,
        status: status as i32,
        source: "web-signup-form".into(),
        evidence: String::new(),
        effective_time: None,
        request_id: String::new(),
    }
}

pub(crate) async fn history(c: &mut Client, customer: &str) -> Vec<ConsentRecord> {
    c.list_consent_history(ListConsentHistoryRequest {
        customer_id: customer.into(),
        page_size: 1000,
        ..Default::default()
    })
    .await
    .expect_answer("history")
    .records
}

#[tokio::test]
async fn set_consent_refuses_bad_input_and_appends_nothing() {
    let (env, mut a, mut b) = start_two_tenants().await;
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let id = ana.customer_id.clone();
    // A hostile source and evidence are recorded byte for byte; an effective
    // time in year 1 is a valid (if odd) past.
    let mut first = consent_request(&id, ConsentStatus::Granted);
    first.source = TEXT.into();
    first.evidence = TEXT.into();
    first.effective_time = Some(at(YEAR_1, 0));
    let record = a
        .set_consent(first)
        .await
        .expect_answer("hostile text is valid")
        .record
        .expect("record");
    assert_eq!(record.source, TEXT);
    assert_eq!(record.evidence, TEXT);
    assert_eq!(record.effective_time, Some(at(YEAR_1, 0)));
    let ana = current(&mut a, &id).await;
    let before = history(&mut a, &id).await;
    assert_eq!(before, vec![record]);
    let events = env.events().await;

    let with = |f: &dyn Fn(&mut SetConsentRequest)| {
        let mut r = consent_request(&id, ConsentStatus::Denied);
        f(&mut r);
        r
    };
    let mut cases: Vec<(SetConsentRequest, &str)> = Vec::new();
    for raw in BAD_IDS {
        cases.push((with(&|r| r.customer_id = raw.into()), "customer_id"));
    }
    for bad in [0, 7, 999, -1] {
        cases.push((with(&|r| r.channel = bad), "channel"));
    }
    for bad in [0, 5, 999, -1] {
        cases.push((with(&|r| r.purpose = bad), "purpose"));
    }
    for bad in [0, 4, 999, -1] {
        cases.push((with(&|r| r.status = bad), "status"));
    }
    for bad in [
        String::new(),
        "   ".into(),
        "x".repeat(129),
        NUL.into(),
        "rapport:merge".into(),
        "rapport:".into(),
    ] {
        cases.push((with(&|r| r.source = bad.clone()), "source"));
    }
    cases.push((with(&|r| r.evidence = "x".repeat(1001)), "evidence"));
    cases.push((with(&|r| r.evidence = NUL.into()), "evidence"));
    let mut times = invalid_times();
    let soon = now_ts();
    times.push(at(soon.seconds + 3600, 0));
    times.push(at(YEAR_9999_END, 999_999_999));
    for t in times {
        cases.push((with(&|r| r.effective_time = Some(t)), "effective_time"));
    }
    for rid in ["x".repeat(65), NUL.to_string()] {
        cases.push((with(&|r| r.request_id = rid.clone()), "request_id"));
    }
    for (r, field) in cases {
        refused(a.set_consent(r).await, field);
    }
    // A request_id reused for another decision.
    let mut keyed = consent_request(&id, ConsentStatus::Withdrawn);
    keyed.request_id = "k-1".into();
    a.set_consent(keyed.clone()).await.expect("first use");
    let after_keyed = history(&mut a, &id).await;
    let events_keyed = env.events().await;
    keyed.status = ConsentStatus::Granted as i32;
    refused(a.set_consent(keyed).await, "request_id");
    assert_eq!(history(&mut a, &id).await, after_keyed);
    assert_eq!(env.events().await, events_keyed);

    // Unknown and foreign customers: NOT_FOUND.
    failed(
        a.set_consent(consent_request(
            &Uuid::new_v4().to_string(),
            ConsentStatus::Granted,
        ))
        .await,
        Code::NotFound,
    );
    failed(
        b.set_consent(consent_request(&id, ConsentStatus::Withdrawn))
            .await,
        Code::NotFound,
    );
    assert_eq!(history(&mut a, &id).await, after_keyed);
    assert_eq!(history(&mut a, &id).await.len(), before.len() + 1);
    assert_eq!(env.events().await, events_keyed);
    assert!(events_keyed > events);
    let now = current(&mut a, &id).await;
    assert_eq!(now.consents.len(), 1);
    assert_ne!(now.etag, ana.etag, "the accepted withdrawal changed it");
}

#[tokio::test]
async fn check_consent_and_history_refuse_bad_input_and_tokens() {
    let (_env, mut a, mut b) = start_two_tenants().await;
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let bea = create(&mut b, person("Bea", "", "bea@x.com")).await;
    for (c, id) in [(&mut a, &ana.customer_id), (&mut b, &bea.customer_id)] {
        for status in [
            ConsentStatus::Granted,
            ConsentStatus::Withdrawn,
            ConsentStatus::Granted,
        ] {
            c.set_consent(consent_request(id, status))
                .await
                .expect("consent");
        }
    }
    let check = |id: &str, channel: i32, purpose: i32| CheckConsentRequest {
        customer_id: id.into(),
        channel,
        purpose,
    };
    let (email_ch, marketing) = (
        ConsentChannel::Email as i32,
        ConsentPurpose::Marketing as i32,
    );
    for raw in BAD_IDS {
        refused(
            a.check_consent(check(raw, email_ch, marketing)).await,
            "customer_id",
        );
        refused(
            a.list_consent_history(ListConsentHistoryRequest {
                customer_id: raw.into(),
                ..Default::default()
            })
            .await,
            "customer_id",
        );
    }
    for bad in [0, 7, 999, -1] {
        refused(
            a.check_consent(check(&ana.customer_id, bad, marketing))
                .await,
            "channel",
        );
    }
    for bad in [0, 5, 999, -1] {
        refused(
            a.check_consent(check(&ana.customer_id, email_ch, bad))
                .await,
            "purpose",
        );
    }
    for (mut c, id) in [
        (a.clone(), Uuid::new_v4().to_string()),
        (a.clone(), bea.customer_id.clone()),
        (b.clone(), ana.customer_id.clone()),
    ] {
        failed(
            c.check_consent(check(&id, email_ch, marketing)).await,
            Code::NotFound,
        );
        failed(
            c.list_consent_history(ListConsentHistoryRequest {
                customer_id: id,
                ..Default::default()
            })
            .await,
            Code::NotFound,
        );
    }
    let hist = |id: &str, channel: i32, purpose: i32, size: i32, token: String| {
        ListConsentHistoryRequest {
            customer_id: id.into(),
            channel,
            purpose,
            page_size: size,
            page_token: token,
        }
    };
    for (channel, purpose, field) in [
        (999, 0, "channel"),
        (-1, 0, "channel"),
        (0, 999, "purpose"),
        (0, -1, "purpose"),
    ] {
        refused(
            a.list_consent_history(hist(&ana.customer_id, channel, purpose, 0, String::new()))
                .await,
            field,
        );
    }
    refused(
        a.list_consent_history(hist(&ana.customer_id, 0, 0, -1, String::new()))
            .await,
        "page_size",
    );
    let genuine = a
        .list_consent_history(hist(&ana.customer_id, 0, 0, 1, String::new()))
        .await
        .expect_answer("page")
        .next_page_token;
    let foreign = b
        .list_consent_history(hist(&bea.customer_id, 0, 0, 1, String::new()))
        .await
        .expect_answer("page")
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    for token in tokens {
        refused(
            a.list_consent_history(hist(&ana.customer_id, 0, 0, 1, token))
                .await,
            "page_token",
        );
    }
    refused(
        a.list_consent_history(hist(&ana.customer_id, email_ch, 0, 1, genuine.clone()))
            .await,
        "page_token",
    );
    assert_eq!(
        a.list_consent_history(hist(&ana.customer_id, 0, 0, i32::MAX, genuine))
            .await
            .expect_answer("genuine")
            .records
            .len(),
        2
    );
}
