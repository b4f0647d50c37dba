//! API keys, and Customer360 across tenants.

use super::*;

#[tokio::test]
async fn create_api_key_refuses_bad_input_and_creates_nothing() {
    let s = setup().await;
    let mut op = admin(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    let globex = new_tenant(&mut op, "Globex").await;
    let (_, acme_key) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    let base = pb::CreateApiKeyRequest {
        tenant_id: acme.tenant_id.clone(),
        display_name: "checkout".into(),
        scopes: vec!["interaction:write".into()],
        expire_time: None,
        request_id: String::new(),
    };
    let with = |f: &dyn Fn(&mut pb::CreateApiKeyRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let mut cases: Vec<(Vec<&str>, pb::CreateApiKeyRequest)> = vec![
        (
            vec!["display_name"],
            with(&|r| r.display_name = String::new()),
        ),
        (
            vec!["display_name"],
            with(&|r| r.display_name = " \t ".into()),
        ),
        (
            vec!["display_name"],
            with(&|r| r.display_name = "n".repeat(201)),
        ),
        (
            vec!["display_name"],
            with(&|r| r.display_name = "check\0out".into()),
        ),
        (vec!["scopes"], with(&|r| r.scopes = vec![])),
        (
            vec!["scopes"],
            with(&|r| r.scopes = vec!["profile:read".into(); 21]),
        ),
        (
            vec!["scopes[1]"],
            with(&|r| r.scopes = vec!["profile:read".into(), "root".into()]),
        ),
        (
            vec!["expire_time"],
            with(&|r| r.expire_time = Some(at(1, 0))),
        ),
        (
            vec!["expire_time"],
            with(&|r| r.expire_time = Some(at(-62_135_596_800, 0))),
        ),
        (
            vec!["request_id"],
            with(&|r| r.request_id = "r".repeat(129)),
        ),
        (vec!["request_id"], with(&|r| r.request_id = "req\0".into())),
        (
            vec!["display_name", "scopes", "expire_time", "request_id"],
            pb::CreateApiKeyRequest {
                tenant_id: acme.tenant_id.clone(),
                expire_time: Some(at(0, -1)),
                request_id: "\0".into(),
                ..Default::default()
            },
        ),
    ];
    for scope in [
        "",
        "admin:*",
        "PROFILE:READ",
        "profile:read\0",
        "profile:read ",
        "*",
        "profile",
        TEXT,
    ] {
        cases.push((vec!["scopes[0]"], with(&|r| r.scopes = vec![scope.into()])));
    }
    for bad in invalid_times() {
        cases.push((vec!["expire_time"], with(&|r| r.expire_time = Some(bad))));
    }
    for id in MALFORMED_IDS {
        cases.push((vec!["tenant_id"], with(&|r| r.tenant_id = id.into())));
    }
    let first = op
        .create_api_key(with(&|r| r.request_id = "checkout-1".into()))
        .await
        .expect_answer("first key");
    assert!(!first.secret.is_empty());
    cases.push((
        vec!["request_id"],
        with(&|r| {
            r.request_id = "checkout-1".into();
            r.scopes = vec!["interaction:read".into()];
        }),
    ));
    let before = keys_of(&mut op, &acme.tenant_id).await;
    for (expected, r) in cases {
        let case = format!("{expected:?}: {r:?}");
        assert_violations(op.create_api_key(r).await, &expected, &case);
        assert_eq!(keys_of(&mut op, &acme.tenant_id).await, before, "{case}");
    }
    let refused: Vec<(Code, String, pb::CreateApiKeyRequest)> = vec![
        (
            Code::NotFound,
            s.operator_key.clone(),
            with(&|r| r.tenant_id = Uuid::new_v4().to_string()),
        ),
        (
            Code::PermissionDenied,
            acme_key.clone(),
            with(&|r| r.tenant_id = globex.tenant_id.clone()),
        ),
        (
            Code::PermissionDenied,
            acme_key,
            with(&|r| r.tenant_id = Uuid::new_v4().to_string()),
        ),
    ];
    for (code, key, r) in refused {
        let case = format!("{code:?}: {r:?}");
        assert_code(admin(&s, &key).await.create_api_key(r).await, code, &case);
        assert_eq!(keys_of(&mut op, &acme.tenant_id).await, before, "{case}");
        assert!(
            keys_of(&mut op, &globex.tenant_id).await.is_empty(),
            "{case}"
        );
    }

    // Hostile names and request ids, and the far future, are fine.
    let hostile = with(&|r| {
        r.display_name = TEXT.into();
        r.request_id = TEXT.into();
        r.expire_time = Some(at(YEAR_9999_END, 0));
        r.scopes = vec!["profile:*".into(), "admin".into(), "profile:*".into()];
    });
    let created = op
        .create_api_key(hostile.clone())
        .await
        .expect_answer("hostile key");
    let key = created.api_key.expect("key");
    assert_eq!(key.display_name, TEXT);
    assert_eq!(key.expire_time, Some(at(YEAR_9999_END, 0)));
    assert_eq!(key.state, pb::ApiKeyState::Active as i32);
    let mut sorted = key.scopes.clone();
    sorted.sort();
    assert_eq!(sorted, ["admin", "profile:*"]);
    let got = op
        .get_api_key(pb::GetApiKeyRequest {
            api_key_id: key.api_key_id.clone(),
        })
        .await
        .expect_answer("read back")
        .api_key
        .expect("key");
    assert_eq!(got.display_name, TEXT);
    let retry = op.create_api_key(hostile).await.expect_answer("retry");
    assert!(retry.secret.is_empty());
    assert_eq!(
        retry.api_key.map(|k| k.api_key_id),
        Some(key.api_key_id.clone())
    );
    // The new key works.
    get_tenant(&mut admin(&s, &created.secret).await, "").await;
}

#[tokio::test]
async fn api_keys_are_read_listed_and_revoked_only_in_their_tenant() {
    let s = setup().await;
    let mut op = admin(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    let globex = new_tenant(&mut op, "Globex").await;
    let (acme_key, acme_secret) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    let (_, globex_secret) = new_key(&mut op, &globex.tenant_id, &["admin"]).await;
    for _ in 0..2 {
        new_key(&mut op, &acme.tenant_id, &["profile:read"]).await;
    }
    let mut globex_admin = admin(&s, &globex_secret).await;
    let acme_keys = keys_of(&mut op, &acme.tenant_id).await;
    assert_eq!(acme_keys.len(), 3);

    for id in MALFORMED_IDS.into_iter().chain([""]) {
        assert_violations(
            op.get_api_key(pb::GetApiKeyRequest {
                api_key_id: id.into(),
            })
            .await,
            &["api_key_id"],
            id,
        );
        assert_violations(
            op.revoke_api_key(pb::RevokeApiKeyRequest {
                api_key_id: id.into(),
            })
            .await,
            &["api_key_id"],
            id,
        );
    }
    for id in MALFORMED_IDS {
        assert_violations(
            op.list_api_keys(pb::ListApiKeysRequest {
                tenant_id: id.into(),
                ..Default::default()
            })
            .await,
            &["tenant_id"],
            id,
        );
    }
    // Unknown ids, and another tenant's key, are NOT_FOUND.
    for (mut c, id) in [
        (op.clone(), Uuid::new_v4().to_string()),
        (globex_admin.clone(), Uuid::new_v4().to_string()),
        (globex_admin.clone(), acme_key.api_key_id.clone()),
    ] {
        assert_code(
            c.get_api_key(pb::GetApiKeyRequest {
                api_key_id: id.clone(),
            })
            .await,
            Code::NotFound,
            &id,
        );
        assert_code(
            c.revoke_api_key(pb::RevokeApiKeyRequest {
                api_key_id: id.clone(),
            })
            .await,
            Code::NotFound,
            &id,
        );
    }
    assert_code(
        op.list_api_keys(pb::ListApiKeysRequest {
            tenant_id: Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "operator, unknown tenant",
    );
    assert_code(
        globex_admin
            .list_api_keys(pb::ListApiKeysRequest {
                tenant_id: acme.tenant_id.clone(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "tenant admin, another tenant",
    );
    assert_eq!(keys_of(&mut op, &acme.tenant_id).await, acme_keys);
    // Acme's admin key still works after Globex tried to revoke it.
    tokio::time::sleep(rapport_gateway::auth::CACHE_TTL).await;
    get_tenant(&mut admin(&s, &acme_secret).await, "").await;

    // Page sizes and tokens.
    let base = pb::ListApiKeysRequest {
        tenant_id: acme.tenant_id.clone(),
        page_size: 1,
        page_token: String::new(),
        include_revoked: false,
    };
    for size in [-1, i32::MIN] {
        assert_violations(
            op.list_api_keys(pb::ListApiKeysRequest {
                page_size: size,
                ..base.clone()
            })
            .await,
            &["page_size"],
            &size.to_string(),
        );
    }
    let token = op
        .list_api_keys(base.clone())
        .await
        .expect_answer("first page")
        .next_page_token;
    assert!(!token.is_empty());
    let tenants_token = op
        .list_tenants(pb::ListTenantsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect_answer("tenants page")
        .next_page_token;
    let mut bad: Vec<pb::ListApiKeysRequest> = forged_tokens(&token)
        .into_iter()
        .chain([tenants_token])
        .map(|page_token| pb::ListApiKeysRequest {
            page_token,
            ..base.clone()
        })
        .collect();
    bad.push(pb::ListApiKeysRequest {
        page_token: token.clone(),
        include_revoked: true,
        ..base.clone()
    });
    bad.push(pb::ListApiKeysRequest {
        page_token: token.clone(),
        tenant_id: globex.tenant_id.clone(),
        ..base.clone()
    });
    for r in bad {
        let case = r.page_token.chars().take(100).collect::<String>();
        assert_violations(op.list_api_keys(r).await, &["page_token"], &case);
    }
    // Another admin of the same tenant cannot replay the operator's token.
    assert_violations(
        admin(&s, &acme_secret)
            .await
            .list_api_keys(pb::ListApiKeysRequest {
                tenant_id: String::new(),
                page_token: token.clone(),
                ..base.clone()
            })
            .await,
        &["page_token"],
        "operator's token used by a tenant admin",
    );
    let second = op
        .list_api_keys(pb::ListApiKeysRequest {
            page_token: token,
            ..base.clone()
        })
        .await
        .expect_answer("second page");
    assert_eq!(second.api_keys.len(), 1);
    let all = op
        .list_api_keys(pb::ListApiKeysRequest {
            page_size: i32::MAX,
            ..base
        })
        .await
        .expect_answer("huge page");
    assert_eq!(all.api_keys.len(), 3);
}

#[tokio::test]
async fn customer360_refuses_bad_ids_and_hides_other_tenants() {
    let s = setup().await;
    let mut op = admin(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    let globex = new_tenant(&mut op, "Globex").await;
    let (_, acme_secret) = new_key(&mut op, &acme.tenant_id, &["profile:*"]).await;
    let (_, globex_secret) = new_key(&mut op, &globex.tenant_id, &["profile:*"]).await;
    let channel = rapport_testkit::channel(&s.gateway).await;
    let auth = |secret: &str| Authorization(Some(format!("Bearer {secret}")));
    let customer = ProfileServiceClient::with_interceptor(channel.clone(), auth(&acme_secret))
        .create_customer(ppb::CreateCustomerRequest {
            customer: Some(ppb::Customer {
                kind: ppb::CustomerKind::Person as i32,
                display_name: TEXT.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_answer("customer created")
        .customer
        .expect("customer");
    let mut acme_c360 =
        Customer360ServiceClient::with_interceptor(channel.clone(), auth(&acme_secret));
    let globex_c360 = Customer360ServiceClient::with_interceptor(channel, auth(&globex_secret));
    let ask = |customer_id: &str, max_interactions: i32| pb::GetCustomer360Request {
        customer_id: customer_id.into(),
        max_interactions,
    };
    for id in MALFORMED_IDS.into_iter().chain(["", TEXT, "\0"]) {
        assert_violations(
            acme_c360.get_customer360(ask(id, 0)).await,
            &["customer_id"],
            id,
        );
    }
    for n in [-1, i32::MIN] {
        assert_violations(
            acme_c360
                .get_customer360(ask(&customer.customer_id, n))
                .await,
            &["max_interactions"],
            &n.to_string(),
        );
    }
    assert_violations(
        acme_c360.get_customer360(ask("", -1)).await,
        &["customer_id", "max_interactions"],
        "both",
    );
    for (mut c, id) in [
        (acme_c360.clone(), Uuid::new_v4().to_string()),
        (globex_c360.clone(), Uuid::new_v4().to_string()),
        (globex_c360.clone(), customer.customer_id.clone()),
    ] {
        assert_code(c.get_customer360(ask(&id, 0)).await, Code::NotFound, &id);
    }

    // ExportCustomerData: bad ids, every read scope needed, other tenants'
    // customers not found, and a missing service a retryable UNAVAILABLE.
    let export = |customer_id: &str| pb::ExportCustomerDataRequest {
        customer_id: customer_id.into(),
    };
    for id in MALFORMED_IDS.into_iter().chain(["", TEXT, "\0"]) {
        assert_violations(
            acme_c360.export_customer_data(export(id)).await,
            &["customer_id"],
            id,
        );
    }
    let denied = assert_code(
        acme_c360
            .export_customer_data(export(&customer.customer_id))
            .await,
        Code::PermissionDenied,
        "profile scopes only",
    );
    assert!(denied.message().contains("interaction:read"), "{denied:?}");
    let every_read = [
        "profile:read",
        "interaction:read",
        "segmentation:read",
        "valuation:read",
        "engagement:read",
    ];
    let (_, acme_reader) = new_key(&mut op, &acme.tenant_id, &every_read).await;
    let (_, globex_reader) = new_key(&mut op, &globex.tenant_id, &every_read).await;
    let channel = rapport_testkit::channel(&s.gateway).await;
    let mut acme_export =
        Customer360ServiceClient::with_interceptor(channel.clone(), auth(&acme_reader));
    let mut globex_export =
        Customer360ServiceClient::with_interceptor(channel, auth(&globex_reader));
    for id in [Uuid::new_v4().to_string(), customer.customer_id.clone()] {
        assert_code(
            globex_export.export_customer_data(export(&id)).await,
            Code::NotFound,
            &id,
        );
    }
    let unavailable = assert_code(
        acme_export
            .export_customer_data(export(&customer.customer_id))
            .await,
        Code::Unavailable,
        "no interaction service behind this gateway",
    );
    assert!(
        unavailable.message().contains("interaction"),
        "{unavailable:?}"
    );
    for n in [0, 1, i32::MAX] {
        let answer = acme_c360
            .get_customer360(ask(&customer.customer_id, n))
            .await
            .expect_answer("own customer");
        assert_eq!(answer.customer_id, customer.customer_id);
        let profile = answer.profile.expect("profile part");
        assert_eq!(profile.display_name, TEXT);
        assert_eq!(answer.part_statuses.len(), 7);
        assert_eq!(answer.part_statuses[0].code_name, "OK");
        assert!(!answer.complete, "no other backend is configured");
        assert!(
            answer
                .part_statuses
                .iter()
                .all(|p| p.code_name != "INTERNAL"),
            "{:?}",
            answer.part_statuses
        );
    }
}
