//! RecordInteractions: bad fields, unknown customers, hostile text, streams with bad items.

use super::*;

#[tokio::test]
async fn record_interaction_refuses_every_bad_field_and_writes_nothing() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    create_campaign(&s, tenant, campaign("Spring")).await;
    let before = footprint(&s, tenant).await;

    assert_violations(
        c.record_interaction(req(tenant, RecordInteractionRequest { interaction: None }))
            .await,
        &["interaction"],
        "no interaction",
    );
    assert_violations(
        c.record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(Interaction::default()),
            },
        ))
        .await,
        &[
            "interaction.customer",
            "interaction.type",
            "interaction.occur_time",
        ],
        "empty interaction",
    );
    for (field, bad) in bad_interactions(customer) {
        let case = short(format!("{field}: {bad:?}"));
        let expected = format!("interaction.{field}");
        assert_violations(
            c.record_interaction(req(
                tenant,
                RecordInteractionRequest {
                    interaction: Some(bad),
                },
            ))
            .await,
            &[expected.as_str()],
            &case,
        );
        assert_eq!(footprint(&s, tenant).await, before, "{case} wrote nothing");
    }

    // Well-formed ids of campaigns that do not exist, or exist in another
    // tenant, are NOT_FOUND.
    let other_tenant = Uuid::new_v4();
    let theirs = create_campaign(&s, other_tenant, campaign("Theirs")).await;
    for id in [Uuid::new_v4().to_string(), theirs.campaign_id.clone()] {
        let mut i = contact(customer, InteractionType::CampaignSent, at(2024, 5, 1, 0));
        i.campaign_id = id.clone();
        assert_code(
            c.record_interaction(req(
                tenant,
                RecordInteractionRequest {
                    interaction: Some(i),
                },
            ))
            .await,
            Code::NotFound,
            &format!("campaign {id}"),
        );
    }
    assert_eq!(footprint(&s, tenant).await, before);

    // The same idempotency key with other content is ALREADY_EXISTS and
    // leaves the first recording as it was.
    let mut first = purchase(customer, at(2024, 5, 1, 10), 12);
    first.idempotency_key = HOSTILE_KEY.into();
    let stored = record(&s, tenant, first.clone()).await;
    assert_eq!(stored.idempotency_key, HOSTILE_KEY);
    let after_first = footprint(&s, tenant).await;
    let mut changed = first.clone();
    changed.amount = Some(eur(13));
    assert_code(
        c.record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(changed),
            },
        ))
        .await,
        Code::AlreadyExists,
        "reused key",
    );
    assert_eq!(footprint(&s, tenant).await, after_first);
    let again = c
        .get_interaction(req(
            tenant,
            GetInteractionRequest {
                interaction_id: stored.interaction_id.clone(),
            },
        ))
        .await
        .expect_answer("read back")
        .interaction
        .expect("interaction");
    assert_eq!(again, stored);
    // The other tenant's campaign is untouched.
    assert_eq!(footprint(&s, other_tenant).await, [0, 0, 1, 1]);
    s.stop().await;
}

#[tokio::test]
async fn unknown_customers_and_bad_identifiers_are_refused_with_the_profile_service() {
    let s = start_with_profile().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let before = footprint(&s, tenant).await;
    let unknown = purchase(Uuid::new_v4(), at(2024, 5, 1, 10), 12);
    assert_code(
        c.record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(unknown),
            },
        ))
        .await,
        Code::NotFound,
        "unknown customer",
    );
    let mut nul = purchase(Uuid::new_v4(), at(2024, 5, 1, 10), 12);
    nul.customer = email_ref(&["ann@example.com\0"]);
    assert_violations(
        c.record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(nul),
            },
        ))
        .await,
        &["interaction.customer.identifiers.identifiers[0].value"],
        "NUL in an identifier",
    );
    let mut not_email = purchase(Uuid::new_v4(), at(2024, 5, 1, 10), 12);
    not_email.customer = email_ref(&[MULTILINE_TEXT]);
    let err = c
        .record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(not_email),
            },
        ))
        .await
        .expect_err("not an e-mail address");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        violated_fields(&err)
            .iter()
            .all(|f| f.starts_with("interaction.customer.identifiers")),
        "{err:?}"
    );
    assert_eq!(footprint(&s, tenant).await, before);
    s.stop().await;
}

#[tokio::test]
async fn hostile_text_is_kept_byte_for_byte() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let mut p = purchase(customer, at(2024, 5, 1, 10), 12);
    p.agent_id = MULTILINE_TEXT.into();
    p.line_items = vec![LineItem {
        sku: MULTILINE_TEXT.into(),
        name: MULTILINE_TEXT.into(),
        category: MULTILINE_TEXT.into(),
        quantity: 1.25,
        unit_price: Some(eur(12)),
    }];
    p.attributes = attrs(&[(MULTILINE_TEXT, MULTILINE_TEXT), ("plain", "x")]);
    p.idempotency_key = HOSTILE_KEY.into();
    let mut survey = contact(customer, InteractionType::SurveyResponse, at(2024, 5, 2, 0));
    survey.survey = Some(Survey {
        csat: Some(1),
        nps: Some(0),
        comment: MULTILINE_TEXT.into(),
    });
    let stored_p = record(&s, tenant, p.clone()).await;
    let stored_s = record(&s, tenant, survey).await;
    for stored in [&stored_p, &stored_s] {
        let got = c
            .get_interaction(req(
                tenant,
                GetInteractionRequest {
                    interaction_id: stored.interaction_id.clone(),
                },
            ))
            .await
            .expect_answer("read back")
            .interaction
            .expect("interaction");
        assert_eq!(&got, stored);
    }
    assert_eq!(stored_p.agent_id, MULTILINE_TEXT);
    assert_eq!(stored_p.line_items, p.line_items);
    assert_eq!(stored_p.attributes, p.attributes);
    assert_eq!(stored_p.idempotency_key, HOSTILE_KEY);
    assert_eq!(
        stored_s.survey.as_ref().map(|x| x.comment.as_str()),
        Some(MULTILINE_TEXT)
    );
    let listed = c
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                order: TimelineOrder::OldestFirst as i32,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("timeline");
    assert_eq!(listed.interactions, vec![stored_p.clone(), stored_s]);
    // A retry with the same hostile content is a duplicate, not a conflict.
    let retry = c
        .record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(p),
            },
        ))
        .await
        .expect_answer("retry");
    assert!(!retry.created);
    assert_eq!(retry.interaction, Some(stored_p));
    s.stop().await;
}

pub(crate) fn stream_of(
    messages: Vec<Vec<Interaction>>,
) -> impl futures::Stream<Item = RecordInteractionsRequest> {
    futures::stream::iter(
        messages
            .into_iter()
            .map(|interactions| RecordInteractionsRequest { interactions }),
    )
}

#[tokio::test]
async fn a_stream_rejects_bad_items_by_index_and_records_the_good_ones() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let other_tenant = Uuid::new_v4();
    let theirs = create_campaign(&s, other_tenant, campaign("Theirs")).await;
    let good = |n: u32| {
        let mut i = purchase(customer, at(2024, 1, 1 + n, 0), i64::from(n));
        i.idempotency_key = format!("k{n}");
        i
    };
    let bad = |n: u32, f: &dyn Fn(&mut Interaction)| {
        let mut i = good(n);
        f(&mut i);
        i
    };
    let mut hostile = good(8);
    hostile.agent_id = MULTILINE_TEXT.into();
    let messages = vec![
        vec![
            good(0),
            bad(1, &|i| i.agent_id = "\0".into()),
            good(2),
            bad(3, &|i| {
                let mut l = line("s");
                l.quantity = f64::NAN;
                i.line_items = vec![l];
            }),
        ],
        vec![],
        vec![
            bad(4, &|i| i.r#type = 999),
            good(5),
            bad(6, &|i| {
                i.r#type = InteractionType::CampaignClicked as i32;
                i.campaign_id = theirs.campaign_id.clone();
            }),
            bad(7, &|i| i.attributes = attrs(&[("x", "\0")])),
            hostile.clone(),
            bad(9, &|i| i.occur_time = Some(hostile::at(1_700_000_000, -1))),
            bad(10, &|i| {
                i.r#type = InteractionType::SurveyResponse as i32;
                i.amount = None;
                i.survey = Some(Survey {
                    comment: "\0".into(),
                    csat: Some(3),
                    nps: None,
                })
            }),
        ],
    ];
    let r = c
        .record_interactions(req(tenant, stream_of(messages.clone())))
        .await
        .expect_answer("the stream is answered");
    let rejected: Vec<(i64, i32, String, Vec<String>)> = r
        .rejections
        .iter()
        .map(|x| {
            (
                x.index,
                x.reason,
                x.idempotency_key.clone(),
                x.field_violations.iter().map(|f| f.field.clone()).collect(),
            )
        })
        .collect();
    let invalid = RejectionReason::Invalid as i32;
    assert_eq!(
        rejected,
        vec![
            (1, invalid, "k1".into(), vec!["agent_id".to_string()]),
            (
                3,
                invalid,
                "k3".into(),
                vec!["line_items[0].quantity".into()]
            ),
            (4, invalid, "k4".into(), vec!["type".into()]),
            (
                6,
                RejectionReason::CampaignNotFound as i32,
                "k6".into(),
                vec![]
            ),
            (7, invalid, "k7".into(), vec!["attributes".into()]),
            (9, invalid, "k9".into(), vec!["occur_time".into()]),
            (10, invalid, "k10".into(), vec!["survey.comment".into()]),
        ]
    );
    assert_eq!(
        (r.accepted_count, r.duplicate_count, r.rejected_count),
        (4, 0, 7)
    );
    let listed = c
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                order: TimelineOrder::OldestFirst as i32,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("timeline")
        .interactions;
    let keys: Vec<&str> = listed.iter().map(|i| i.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["k0", "k2", "k5", "k8"]);
    assert_eq!(listed[3].agent_id, MULTILINE_TEXT);
    let after = footprint(&s, tenant).await;
    assert_eq!(after, [4, 4, 0, 4]);

    // Sent again: the good ones are duplicates, the bad ones rejected again.
    let again = c
        .record_interactions(req(tenant, stream_of(messages)))
        .await
        .expect_answer("the stream is answered");
    assert_eq!(
        (
            again.accepted_count,
            again.duplicate_count,
            again.rejected_count
        ),
        (0, 4, 7)
    );
    assert_eq!(footprint(&s, tenant).await, after);

    // More than 1,000 interactions in one message fail the call; nothing of
    // that message is written.
    let big: Vec<Interaction> = (0..1001)
        .map(|n| purchase(customer, at(2024, 2, 1, 0), n))
        .collect();
    assert_violations(
        c.record_interactions(req(tenant, stream_of(vec![big])))
            .await,
        &["interactions"],
        "1,001 interactions in a message",
    );
    assert_eq!(footprint(&s, tenant).await, after);
    assert_eq!(footprint(&s, other_tenant).await, [0, 0, 1, 1]);
    s.stop().await;
}
