//! SetCostModel, GetCostModel and ListCostModels refuse bad input.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cost_model_refuses_every_bad_field_and_stores_nothing() {
    let s = start(false).await;
    let mut v = s.valuation();
    let t = Uuid::new_v4();
    let first = set(&s, t, setting(cost_model())).await;
    assert_eq!(first.description, TEXT, "hostile text comes back as sent");
    let before = versions(&s, t).await;
    assert_eq!(before, vec![first]);

    let model = |f: &dyn Fn(&mut CostModel)| setting(changed(cost_model(), f));
    let request = |f: &dyn Fn(&mut SetCostModelRequest)| changed(setting(cost_model()), f);
    let mut cases: Vec<Case<SetCostModelRequest>> = vec![(
        "no cost model".into(),
        request(&|r| r.cost_model = None),
        paths(&["cost_model"]),
    )];

    // The request id: too long (in characters), NUL, huge.
    for (what, id) in [
        ("129 characters", "k".repeat(129)),
        ("129 four-byte characters", "😀".repeat(129)),
        ("a NUL inside", "a\0b".into()),
        ("a NUL", "\0".into()),
        ("huge", huge()),
    ] {
        cases.push((
            format!("request_id: {what}"),
            request(&|r| r.request_id = id.clone()),
            paths(&["request_id"]),
        ));
    }
    cases.push((
        "request_id: huge and a NUL".into(),
        request(&|r| r.request_id = format!("{}\0", huge())),
        paths(&["request_id", "request_id"]),
    ));
    cases.push((
        "request_id with a NUL and no cost model".into(),
        request(&|r| {
            r.request_id = "\0".into();
            r.cost_model = None;
        }),
        paths(&["request_id", "cost_model"]),
    ));

    // Output-only fields.
    for version in [1, 2, -1, i32::MAX, i32::MIN] {
        cases.push((
            format!("version {version} (output only)"),
            model(&|m| m.version = version),
            paths(&["cost_model.version"]),
        ));
    }
    for etag in ["cost-model-v1", "\0", TEXT] {
        cases.push((
            format!("etag {etag:?} (output only)"),
            model(&|m| m.etag = etag.into()),
            paths(&["cost_model.etag"]),
        ));
    }
    for time in [
        Some(Timestamp::default()),
        at(Utc::now().timestamp(), 0),
        at(0, -1),
    ] {
        cases.push((
            format!("create_time {time:?} (output only)"),
            model(&|m| m.create_time = time),
            paths(&["cost_model.create_time"]),
        ));
    }
    cases.push((
        "every output-only field".into(),
        model(&|m| {
            m.version = 1;
            m.etag = "cost-model-v1".into();
            m.create_time = Some(Timestamp::default());
        }),
        paths(&[
            "cost_model.version",
            "cost_model.etag",
            "cost_model.create_time",
        ]),
    ));

    // The currency: required, an ISO 4217 code. The amounts, in EUR, are
    // not compared with a currency that is not one.
    for currency in [
        "".to_string(),
        "eur".into(),
        "EURO".into(),
        "E".into(),
        "ZZZ".into(),
        "E\0R".into(),
        "\0".into(),
        "€".into(),
        " EUR".into(),
        TEXT.into(),
        huge(),
    ] {
        let shown: String = format!("{currency:?}").chars().take(20).collect();
        cases.push((
            format!("currency_code {shown}"),
            model(&|m| m.currency_code = currency.clone()),
            paths(&["cost_model.currency_code"]),
        ));
    }

    // The effective time: invalid Timestamps, year 10000, before 1970.
    let mut times = broken_times();
    times.extend([
        at(YEAR_9999_END + 1, 0),
        at(-1, 0),
        at(-1, 999_999_999),
        at(-86_400 * 365, 0),
        at(YEAR_1, 0),
    ]);
    for time in times {
        cases.push((
            format!("effective_time {time:?}"),
            model(&|m| m.effective_time = time),
            paths(&["cost_model.effective_time"]),
        ));
    }

    // Contact rates: a type that is no contact, an unknown type or channel,
    // a second rate for a (type, channel), a bad cost.
    for kind in [
        InteractionType::Unspecified as i32,
        InteractionType::Purchase as i32,
        InteractionType::Return as i32,
        InteractionType::ServiceRequest as i32,
        InteractionType::Complaint as i32,
        InteractionType::CampaignOpened as i32,
        InteractionType::CampaignClicked as i32,
        InteractionType::CampaignConverted as i32,
        InteractionType::SurveyResponse as i32,
        InteractionType::WebVisit as i32,
        InteractionType::Custom as i32,
        18,
        999,
        -1,
        i32::MAX,
        i32::MIN,
    ] {
        cases.push((
            format!("a contact rate of type {kind}"),
            model(&|m| m.contact_rates[1].r#type = kind),
            paths(&["cost_model.contact_rates[1].type"]),
        ));
    }
    for channel in [8, 999, -1, i32::MAX, i32::MIN] {
        cases.push((
            format!("a contact rate on channel {channel}"),
            model(&|m| m.contact_rates[1].channel = channel),
            paths(&["cost_model.contact_rates[1].channel"]),
        ));
    }
    cases.push((
        "a second rate for CALL on every channel, at another price".into(),
        model(&|m| {
            m.contact_rates
                .push(rate(InteractionType::Call, Channel::Unspecified, eur(9, 0)))
        }),
        paths(&["cost_model.contact_rates[3]"]),
    ));
    cases.push((
        "the field sales visit rate twice, the same price".into(),
        model(&|m| m.contact_rates.insert(2, m.contact_rates[1].clone())),
        paths(&["cost_model.contact_rates[2]"]),
    ));
    cases.push((
        "a sales visit rate changed into a second CALL rate".into(),
        model(&|m| {
            m.contact_rates[1].r#type = InteractionType::Call as i32;
            m.contact_rates[1].channel = Channel::Unspecified as i32;
        }),
        paths(&["cost_model.contact_rates[1]"]),
    ));
    for (what, amount) in bad_amounts() {
        cases.push((
            format!("a contact rate's cost {what}"),
            model(&|m| m.contact_rates[1].cost = Some(amount.clone())),
            paths(&["cost_model.contact_rates[1].cost"]),
        ));
    }

    // Every other amount: malformed, negative, another currency.
    for (name, slot) in AMOUNTS {
        for (what, amount) in bad_amounts() {
            cases.push((
                format!("{name} {what}"),
                model(&|m| *slot(m) = Some(amount.clone())),
                paths(&[&format!("cost_model.{name}")]),
            ));
        }
    }

    // The period of the fixed cost.
    for days in [0, -1, 3661, i32::MAX, i32::MIN] {
        cases.push((
            format!("fixed_cost_period_days {days} with a fixed cost"),
            model(&|m| m.fixed_cost_period_days = days),
            paths(&["cost_model.fixed_cost_period_days"]),
        ));
    }
    for (what, fixed) in [("no fixed cost", None), ("a zero fixed cost", eur(0, 0))] {
        for days in [30, 1, -1, 3661] {
            cases.push((
                format!("fixed_cost_period_days {days} with {what}"),
                model(&|m| {
                    m.fixed_cost = fixed.clone();
                    m.fixed_cost_period_days = days;
                }),
                paths(&["cost_model.fixed_cost_period_days"]),
            ));
        }
    }
    cases.push((
        "a negative fixed cost and a period out of range".into(),
        model(&|m| {
            m.fixed_cost = eur(-12, 0);
            m.fixed_cost_period_days = 3661;
        }),
        paths(&["cost_model.fixed_cost", "cost_model.fixed_cost_period_days"]),
    ));

    // The default margin rate.
    for bps in [-1, 10_001, i32::MAX, i32::MIN] {
        cases.push((
            format!("default_margin_rate_bps {bps}"),
            model(&|m| m.default_margin_rate_bps = bps),
            paths(&["cost_model.default_margin_rate_bps"]),
        ));
    }

    // The description: over 1,000 characters, NUL.
    for (what, text) in [
        ("1,001 characters", "d".repeat(1001)),
        ("1,001 four-byte characters", "😀".repeat(1001)),
        ("huge", huge()),
        ("a NUL", "\0".into()),
        ("hostile text and a NUL", format!("{TEXT}\0")),
    ] {
        cases.push((
            format!("description: {what}"),
            model(&|m| m.description = text.clone()),
            paths(&["cost_model.description"]),
        ));
    }
    cases.push((
        "description: huge and a NUL".into(),
        model(&|m| m.description = format!("\0{}", huge())),
        paths(&["cost_model.description", "cost_model.description"]),
    ));

    // Everything wrong at once: every problem named, in order.
    cases.push((
        "every field wrong".into(),
        changed(
            model(&|m| {
                m.version = 3;
                m.currency_code = "eur".into();
                m.effective_time = at(-1, 0);
                m.contact_rates[0].r#type = InteractionType::Purchase as i32;
                m.contact_rates[1].channel = 99;
                m.contact_rates[2].cost = Some(money("EUR", 1, -1));
                m.service_request_cost = eur(-1, 0);
                m.fixed_cost = eur(0, -5);
                m.default_margin_rate_bps = -1;
                m.description = "\0".into();
            }),
            |r| r.request_id = "\0".into(),
        ),
        paths(&[
            "request_id",
            "cost_model.version",
            "cost_model.currency_code",
            "cost_model.effective_time",
            "cost_model.contact_rates[0].type",
            "cost_model.contact_rates[1].channel",
            "cost_model.contact_rates[2].cost",
            "cost_model.service_request_cost",
            "cost_model.fixed_cost",
            "cost_model.default_margin_rate_bps",
            "cost_model.description",
        ]),
    ));

    for (case, r, expected) in cases {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_violations(v.set_cost_model(req(t, r)).await, &expected, &case);
        assert_eq!(
            versions(&s, t).await,
            before,
            "{case}: a version was stored"
        );
    }

    // More than 200 rates: there are only 48 (type, channel) pairs, so 201
    // rates repeat some; the count comes first, then the repeats among the
    // first 200 (as many as the detail holds).
    let kinds = [
        InteractionType::SalesVisit,
        InteractionType::Call,
        InteractionType::Email,
        InteractionType::Meeting,
        InteractionType::Chat,
        InteractionType::CampaignSent,
    ];
    let pairs: Vec<(InteractionType, i32)> = kinds
        .iter()
        .flat_map(|k| (0..8).map(move |c| (*k, c)))
        .collect();
    assert_eq!(pairs.len(), 48);
    let mut every_pair = cost_model();
    every_pair.contact_rates = pairs
        .iter()
        .map(|(k, c)| ContactRate {
            r#type: *k as i32,
            channel: *c,
            cost: eur(1, 0),
        })
        .collect();
    let mut too_many = every_pair.clone();
    too_many.contact_rates = (0..201)
        .map(|i| every_pair.contact_rates[i % 48].clone())
        .collect();
    let e = v
        .set_cost_model(req(t, setting(too_many)))
        .await
        .refused(Code::InvalidArgument);
    let got = violated_fields(&e);
    let expected: Vec<String> = std::iter::once("cost_model.contact_rates".to_string())
        .chain((48..200).map(|i| format!("cost_model.contact_rates[{i}]")))
        .collect();
    assert!(got.len() > 10, "{got:?}");
    assert_eq!(got[..], expected[..got.len()], "{e:?}");
    assert_eq!(versions(&s, t).await, before);

    // The boundaries are accepted: every (type, channel) pair, 1,000
    // four-byte characters, a 128-character hostile key, the extreme
    // amounts, periods and margins, effective from 1970 and up to 9999, an
    // effective time to the nanosecond (kept to the microsecond). Each
    // answer is the version as every later read shows it.
    let now = Utc::now().timestamp();
    let boundary = [
        setting(changed(every_pair, |m| {
            m.effective_time = at(0, 0);
            m.description = "😀".repeat(1000);
            m.fixed_cost = Some(money("", i64::MAX, 999_999_999));
            m.fixed_cost_period_days = 3660;
            m.default_margin_rate_bps = 10_000;
        })),
        changed(
            setting(changed(cost_model(), |m| {
                m.effective_time = at(YEAR_9999_END, 999_999_999);
                m.contact_rates.clear();
                m.service_request_cost = eur(0, 0);
                m.complaint_cost = Some(money("", 0, 1));
                m.fixed_cost = None;
                m.fixed_cost_period_days = 0;
                m.default_margin_rate_bps = 0;
                m.description = String::new();
            })),
            |r| r.request_id = format!("{TEXT}{}", "k".repeat(128 - TEXT.chars().count())),
        ),
        changed(setting(cost_model()), |r| {
            r.etag = "cost-model-v3".into();
            let m = r.cost_model.as_mut().unwrap();
            m.effective_time = at(now, 123_456_789);
            m.fixed_cost_period_days = 1;
        }),
    ];
    let mut answers = Vec::new();
    for r in boundary {
        answers.push(set(&s, t, r).await);
    }
    answers.reverse();
    let after = versions(&s, t).await;
    assert_eq!(after[..3], answers[..]);
    assert_eq!(after[3..], before[..]);
    assert_eq!(
        after.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    assert_eq!(after[0].effective_time, at(now, 123_456_000));
    assert_eq!(after[1].effective_time, at(YEAR_9999_END, 999_999_000));
    assert_eq!(after[2].contact_rates.len(), 48);
    assert_eq!(
        after[2].fixed_cost,
        Some(money("EUR", i64::MAX, 999_999_999))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_model_reads_listing_and_etags_refuse_bad_input() {
    let s = start(false).await;
    let mut v = s.valuation();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    // No cost model yet: NOT_FOUND however asked; an etag is stale.
    for r in [
        GetCostModelRequest::default(),
        GetCostModelRequest {
            version: 1,
            as_of: None,
        },
        GetCostModelRequest {
            version: 0,
            as_of: at(0, 0),
        },
    ] {
        failed(v.get_cost_model(req(a, r)).await, Code::NotFound);
    }
    for etag in ["cost-model-v1", "\0", TEXT] {
        failed(
            v.set_cost_model(req(
                a,
                changed(setting(cost_model()), |r| r.etag = etag.into()),
            ))
            .await,
            Code::Aborted,
        );
    }
    assert!(versions(&s, a).await.is_empty());

    let v1 = set(&s, a, setting(cost_model())).await;
    let v2 = set(
        &s,
        a,
        changed(setting(cost_model()), |r| r.etag = v1.etag.clone()),
    )
    .await;
    let keyed = changed(setting(cost_model()), |r| r.request_id = TEXT.into());
    let v3 = set(&s, a, keyed.clone()).await;
    assert_eq!(
        (v1.version, v2.version, v3.version),
        (1, 2, 3),
        "{v1:?} {v2:?} {v3:?}"
    );
    for _ in 0..2 {
        set(&s, b, setting(cost_model())).await;
    }
    let before = versions(&s, a).await;
    assert_eq!(before.len(), 3);

    // A stale or made-up etag: ABORTED; another currency: FAILED_PRECONDITION;
    // the key again with other content: ALREADY_EXISTS. Nothing stored.
    for etag in [v1.etag.clone(), v2.etag.clone(), "cost-model-v4".into()]
        .into_iter()
        .chain(["\0".into(), TEXT.into(), huge()])
    {
        failed(
            v.set_cost_model(req(
                a,
                changed(setting(cost_model()), |r| r.etag = etag.clone()),
            ))
            .await,
            Code::Aborted,
        );
    }
    let mut dollars = cost_model();
    dollars.currency_code = "USD".into();
    dollars.contact_rates.clear();
    for (_, slot) in AMOUNTS {
        *slot(&mut dollars) = None;
    }
    dollars.fixed_cost_period_days = 0;
    failed(
        v.set_cost_model(req(a, setting(dollars))).await,
        Code::FailedPrecondition,
    );
    let mut other = keyed.clone();
    other.cost_model.as_mut().unwrap().default_margin_rate_bps = 0;
    failed(v.set_cost_model(req(a, other)).await, Code::AlreadyExists);
    assert_eq!(set(&s, a, keyed).await, v3, "the retry answers the first");
    assert_eq!(versions(&s, a).await, before);

    // GetCostModel.
    let mut cases: Vec<Case<GetCostModelRequest>> = Vec::new();
    for (version, as_of) in [(1, at(0, 0)), (3, at(Utc::now().timestamp(), 0))] {
        cases.push((
            format!("version {version} and as_of {as_of:?}"),
            GetCostModelRequest { as_of, version },
            paths(&["as_of"]),
        ));
    }
    for (version, as_of) in [(-1, None), (i32::MIN, None), (-1, at(0, 0))] {
        cases.push((
            format!("version {version}, as_of {as_of:?}"),
            GetCostModelRequest { as_of, version },
            paths(&["version"]),
        ));
    }
    for as_of in broken_times() {
        cases.push((
            format!("as_of {as_of:?}"),
            GetCostModelRequest { as_of, version: 0 },
            paths(&["as_of"]),
        ));
    }
    cases.push((
        "a negative version and a broken as_of".into(),
        GetCostModelRequest {
            as_of: at(0, -1),
            version: -1,
        },
        paths(&["version", "as_of"]),
    ));
    refuse_all(cases, |r| {
        let mut v = v.clone();
        async move { v.get_cost_model(req(a, r)).await }
    })
    .await;
    failed(
        v.get_cost_model(req(
            a,
            GetCostModelRequest {
                as_of: None,
                version: 4,
            },
        ))
        .await,
        Code::NotFound,
    );
    // The extremes of as_of are valid: the first version also prices
    // everything before it.
    for (as_of, version) in [(YEAR_1, 1), (YEAR_9999_END, 3)] {
        let got = v
            .get_cost_model(req(
                a,
                GetCostModelRequest {
                    as_of: at(as_of, 0),
                    version: 0,
                },
            ))
            .await
            .expect_answer("the version in effect")
            .cost_model
            .expect("a version");
        assert_eq!(got.version, version);
    }

    // ListCostModels: sizes, then tokens forged, tampered, of another
    // tenant and of another method.
    let mut cases: Vec<Case<ListCostModelsRequest>> = Vec::new();
    for size in [-1, i32::MIN, 1001, i32::MAX] {
        cases.push((
            format!("page_size {size}"),
            ListCostModelsRequest {
                page_size: size,
                ..Default::default()
            },
            paths(&["page_size"]),
        ));
    }
    let first_page = |t: Uuid| {
        let mut v = v.clone();
        async move {
            v.list_cost_models(req(
                t,
                ListCostModelsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect_answer("a first page")
            .next_page_token
        }
    };
    let genuine = first_page(a).await;
    let of_b = first_page(b).await;
    let models_token = {
        for _ in 0..2 {
            v.fit_model(req(a, inline_fit(ModelKind::BgNbd)))
                .await
                .expect_answer("a fit");
        }
        v.list_models(req(
            a,
            ListModelsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("a page of models")
        .next_page_token
    };
    for token in [&genuine, &of_b, &models_token] {
        assert!(!token.is_empty());
    }
    let mut tokens = hostile::forged_tokens(&genuine);
    tokens.extend([of_b.clone(), models_token.clone(), huge()]);
    for token in tokens {
        let shown: String = format!("{token:?}").chars().take(60).collect();
        cases.push((
            format!("page_token {shown}"),
            ListCostModelsRequest {
                page_size: 1,
                page_token: token,
            },
            paths(&["page_token"]),
        ));
    }
    refuse_all(cases, |r| {
        let mut v = v.clone();
        async move { v.list_cost_models(req(a, r)).await }
    })
    .await;
    // A's genuine token in B's hands.
    assert_violations(
        v.list_cost_models(req(
            b,
            ListCostModelsRequest {
                page_size: 1,
                page_token: genuine.clone(),
            },
        ))
        .await,
        &["page_token"],
        "A's token read by B",
    );
    let second = v
        .list_cost_models(req(
            a,
            ListCostModelsRequest {
                page_size: 1,
                page_token: genuine,
            },
        ))
        .await
        .expect_answer("the genuine token pages on");
    assert_eq!(second.cost_models, vec![before[1].clone()]);

    // Nothing changed for either tenant.
    assert_eq!(versions(&s, a).await, before);
    assert_eq!(versions(&s, b).await.len(), 2);
}
