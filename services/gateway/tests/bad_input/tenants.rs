//! Creating, reading, listing and updating tenants.

use super::*;

#[tokio::test]
async fn create_tenant_refuses_bad_input_and_keeps_hostile_names() {
    let s = setup().await;
    let mut op = admin(&s, &s.operator_key).await;
    let before = tenant_count(&mut op).await;
    let base = pb::CreateTenantRequest {
        tenant: Some(pb::Tenant {
            display_name: "Acme".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let with = |f: &dyn Fn(&mut pb::Tenant)| {
        let mut r = base.clone();
        f(r.tenant.as_mut().expect("tenant"));
        r
    };
    let limits = |rps: i32, burst: i32| {
        Some(pb::RateLimit {
            requests_per_second: rps,
            burst,
        })
    };
    let mut cases: Vec<(Vec<&str>, pb::CreateTenantRequest)> = vec![
        (
            vec!["tenant.display_name"],
            pb::CreateTenantRequest::default(),
        ),
        (
            vec!["tenant.display_name"],
            with(&|t| t.display_name = String::new()),
        ),
        (
            vec!["tenant.display_name"],
            with(&|t| t.display_name = " \t\n ".into()),
        ),
        (
            vec!["tenant.display_name"],
            with(&|t| t.display_name = "n".repeat(201)),
        ),
        (
            vec!["tenant.display_name"],
            with(&|t| t.display_name = "Acme\0".into()),
        ),
        (
            vec!["tenant.time_zone"],
            with(&|t| t.time_zone = "Mars/Olympus_Mons".into()),
        ),
        (
            vec!["tenant.time_zone"],
            with(&|t| t.time_zone = "+02:00".into()),
        ),
        (
            vec!["tenant.time_zone"],
            with(&|t| t.time_zone = TEXT.into()),
        ),
        (
            vec!["tenant.rate_limit.requests_per_second"],
            with(&|t| t.rate_limit = limits(-1, 0)),
        ),
        (
            vec!["tenant.rate_limit.requests_per_second"],
            with(&|t| t.rate_limit = limits(100_001, 0)),
        ),
        (
            vec!["tenant.rate_limit.requests_per_second"],
            with(&|t| t.rate_limit = limits(i32::MIN, 0)),
        ),
        (
            vec!["tenant.rate_limit.burst"],
            with(&|t| t.rate_limit = limits(0, -1)),
        ),
        (
            vec!["tenant.rate_limit.burst"],
            with(&|t| t.rate_limit = limits(0, 1_000_001)),
        ),
        (
            vec!["tenant.max_concurrent_streams"],
            with(&|t| t.max_concurrent_streams = -1),
        ),
        (
            vec!["tenant.max_concurrent_streams"],
            with(&|t| t.max_concurrent_streams = 10_001),
        ),
        (
            vec!["tenant.tenant_rate_limit.requests_per_second"],
            with(&|t| t.tenant_rate_limit = limits(1_000_001, 0)),
        ),
        (
            vec!["tenant.tenant_rate_limit.requests_per_second"],
            with(&|t| t.tenant_rate_limit = limits(-1, 0)),
        ),
        (
            vec!["tenant.tenant_rate_limit.burst"],
            with(&|t| t.tenant_rate_limit = limits(0, 10_000_001)),
        ),
        (
            vec!["tenant.tenant_max_concurrent_streams"],
            with(&|t| t.tenant_max_concurrent_streams = 100_001),
        ),
        (
            vec!["tenant.tenant_max_concurrent_streams"],
            with(&|t| t.tenant_max_concurrent_streams = i32::MIN),
        ),
        (
            vec![
                "tenant.display_name",
                "tenant.rate_limit.requests_per_second",
                "tenant.rate_limit.burst",
                "tenant.max_concurrent_streams",
                "tenant.tenant_rate_limit.requests_per_second",
                "tenant.tenant_rate_limit.burst",
                "tenant.tenant_max_concurrent_streams",
                "request_id",
            ],
            pb::CreateTenantRequest {
                tenant: Some(pb::Tenant {
                    display_name: String::new(),
                    rate_limit: limits(i32::MAX, i32::MAX),
                    max_concurrent_streams: i32::MAX,
                    tenant_rate_limit: limits(i32::MAX, i32::MAX),
                    tenant_max_concurrent_streams: i32::MAX,
                    ..Default::default()
                }),
                request_id: "r".repeat(129),
            },
        ),
        (
            vec!["request_id"],
            pb::CreateTenantRequest {
                request_id: "r".repeat(129),
                ..base.clone()
            },
        ),
        (
            vec!["request_id"],
            pb::CreateTenantRequest {
                request_id: "req\0".into(),
                ..base.clone()
            },
        ),
    ];
    // A request id reused for other content.
    let first = op
        .create_tenant(pb::CreateTenantRequest {
            request_id: "acme-1".into(),
            ..base.clone()
        })
        .await
        .expect_answer("first")
        .tenant
        .expect("tenant");
    let before = before + 1;
    cases.push((
        vec!["request_id"],
        pb::CreateTenantRequest {
            request_id: "acme-1".into(),
            ..with(&|t| t.display_name = "Other".into())
        },
    ));
    for (expected, r) in cases {
        let case = format!("{expected:?}: {r:?}");
        assert_violations(op.create_tenant(r).await, &expected, &case);
        assert_eq!(tenant_count(&mut op).await, before, "{case}");
    }
    assert_eq!(get_tenant(&mut op, &first.tenant_id).await, first);

    // Tenant admins cannot create tenants, however good the request.
    let (_, tenant_admin) = new_key(&mut op, &first.tenant_id, &["admin"]).await;
    assert_code(
        admin(&s, &tenant_admin)
            .await
            .create_tenant(base.clone())
            .await,
        Code::PermissionDenied,
        "tenant admin",
    );
    assert_eq!(tenant_count(&mut op).await, before);

    // Hostile names and request ids are kept; output-only fields ignored.
    let hostile = pb::CreateTenantRequest {
        tenant: Some(pb::Tenant {
            tenant_id: "../x".into(),
            display_name: TEXT.into(),
            is_operator: true,
            etag: "forged".into(),
            create_time: Some(at(i64::MAX / 2, -1)),
            ..Default::default()
        }),
        request_id: TEXT.into(),
    };
    let created = op
        .create_tenant(hostile.clone())
        .await
        .expect_answer("hostile tenant")
        .tenant
        .expect("tenant");
    assert_eq!(created.display_name, TEXT);
    assert!(!created.is_operator);
    assert!(Uuid::parse_str(&created.tenant_id).is_ok());
    assert_eq!(get_tenant(&mut op, &created.tenant_id).await, created);
    let retry = op
        .create_tenant(hostile)
        .await
        .expect_answer("retry")
        .tenant;
    assert_eq!(retry.as_ref(), Some(&created));
    assert_eq!(tenant_count(&mut op).await, before + 1);
}

#[tokio::test]
async fn tenants_are_read_and_listed_only_with_good_ids_sizes_and_tokens() {
    let s = setup().await;
    let mut op = admin(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    let globex = new_tenant(&mut op, "Globex").await;
    let (_, acme_key) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    let mut acme_admin = admin(&s, &acme_key).await;
    for id in MALFORMED_IDS {
        for c in [&mut op, &mut acme_admin] {
            assert_violations(
                c.get_tenant(pb::GetTenantRequest {
                    tenant_id: id.into(),
                })
                .await,
                &["tenant_id"],
                id,
            );
        }
    }
    let unknown = Uuid::new_v4().to_string();
    assert_code(
        op.get_tenant(pb::GetTenantRequest {
            tenant_id: unknown.clone(),
        })
        .await,
        Code::NotFound,
        "operator, unknown tenant",
    );
    for other in [unknown.clone(), globex.tenant_id.clone()] {
        assert_code(
            acme_admin
                .get_tenant(pb::GetTenantRequest { tenant_id: other })
                .await,
            Code::PermissionDenied,
            "tenant admin, another tenant",
        );
    }
    assert_eq!(get_tenant(&mut acme_admin, "").await, acme);

    // Page sizes and tokens.
    let first = op
        .list_tenants(pb::ListTenantsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect_answer("first page");
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    for size in [-1, i32::MIN] {
        assert_violations(
            op.list_tenants(pb::ListTenantsRequest {
                page_size: size,
                page_token: String::new(),
            })
            .await,
            &["page_size"],
            &size.to_string(),
        );
    }
    let keys_token = {
        for _ in 0..2 {
            new_key(&mut op, &acme.tenant_id, &["profile:read"]).await;
        }
        op.list_api_keys(pb::ListApiKeysRequest {
            tenant_id: acme.tenant_id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect_answer("keys page")
        .next_page_token
    };
    assert!(!keys_token.is_empty());
    let mut bad_tokens = forged_tokens(&token);
    bad_tokens.push(keys_token);
    for bad in bad_tokens {
        assert_violations(
            op.list_tenants(pb::ListTenantsRequest {
                page_size: 1,
                page_token: bad.clone(),
            })
            .await,
            &["page_token"],
            &bad.chars().take(100).collect::<String>(),
        );
    }
    // The operator's token is not a tenant admin's.
    assert_violations(
        acme_admin
            .list_tenants(pb::ListTenantsRequest {
                page_size: 1,
                page_token: token.clone(),
            })
            .await,
        &["page_token"],
        "operator's token used by a tenant admin",
    );
    let mut seen = first.tenants;
    let mut next = token;
    while !next.is_empty() {
        let page = op
            .list_tenants(pb::ListTenantsRequest {
                page_size: 1,
                page_token: next,
            })
            .await
            .expect_answer("next page");
        seen.extend(page.tenants);
        next = page.next_page_token;
    }
    assert_eq!(seen.len(), 3, "operator, Acme, Globex");
    let all = op
        .list_tenants(pb::ListTenantsRequest {
            page_size: i32::MAX,
            page_token: String::new(),
        })
        .await
        .expect_answer("huge page");
    assert_eq!(all.tenants, seen);
    let own = acme_admin
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .expect_answer("own list");
    assert_eq!(own.tenants, vec![acme]);
}

#[tokio::test]
async fn update_tenant_refuses_bad_input_and_changes_nothing() {
    let s = setup().await;
    let mut op = admin(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    let globex = new_tenant(&mut op, "Globex").await;
    let (_, globex_key) = new_key(&mut op, &globex.tenant_id, &["admin"]).await;
    let (_, acme_key) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    let update = |paths: &[&str], f: &dyn Fn(&mut pb::Tenant)| {
        let mut tenant = pb::Tenant {
            tenant_id: acme.tenant_id.clone(),
            ..Default::default()
        };
        f(&mut tenant);
        pb::UpdateTenantRequest {
            tenant: Some(tenant),
            update_mask: mask(paths),
        }
    };
    let limits = |rps: i32, burst: i32| {
        Some(pb::RateLimit {
            requests_per_second: rps,
            burst,
        })
    };
    let mut cases: Vec<(Vec<&str>, pb::UpdateTenantRequest)> = vec![
        (
            vec!["update_mask"],
            update(&[], &|t| t.display_name = "x".into()),
        ),
        (
            vec!["update_mask"],
            pb::UpdateTenantRequest {
                update_mask: None,
                ..update(&["display_name"], &|t| t.display_name = "x".into())
            },
        ),
        (vec!["update_mask"], update(&["tenant_id"], &|_| {})),
        (
            vec!["update_mask"],
            update(&["is_operator"], &|t| t.is_operator = true),
        ),
        (vec!["update_mask"], update(&["etag"], &|_| {})),
        (vec!["update_mask"], update(&["create_time"], &|_| {})),
        (vec!["update_mask"], update(&["Display_Name"], &|_| {})),
        (vec!["update_mask"], update(&[TEXT], &|_| {})),
        (vec!["update_mask"], update(&["display_name\0"], &|_| {})),
        (
            vec!["tenant.display_name"],
            update(&["display_name"], &|_| {}),
        ),
        (
            vec!["tenant.display_name"],
            update(&["display_name"], &|t| t.display_name = "  ".into()),
        ),
        (
            vec!["tenant.display_name"],
            update(&["display_name"], &|t| t.display_name = "n".repeat(201)),
        ),
        (
            vec!["tenant.display_name"],
            update(&["display_name"], &|t| t.display_name = "Ac\0me".into()),
        ),
        (
            vec!["tenant.time_zone"],
            update(&["time_zone"], &|t| t.time_zone = "Europe/Nowhere".into()),
        ),
        (
            vec!["tenant.time_zone"],
            update(&["time_zone"], &|t| t.time_zone = "utc\0".into()),
        ),
        (
            vec!["tenant.rate_limit.requests_per_second"],
            update(&["rate_limit"], &|t| t.rate_limit = limits(-1, 0)),
        ),
        (
            vec!["tenant.rate_limit.requests_per_second"],
            update(&["rate_limit.requests_per_second"], &|t| {
                t.rate_limit = limits(100_001, -5)
            }),
        ),
        (
            vec!["tenant.rate_limit.burst"],
            update(&["rate_limit.burst"], &|t| {
                t.rate_limit = limits(-5, 1_000_001)
            }),
        ),
        (
            vec![
                "tenant.rate_limit.requests_per_second",
                "tenant.rate_limit.burst",
            ],
            update(&["rate_limit"], &|t| {
                t.rate_limit = limits(i32::MIN, i32::MIN)
            }),
        ),
        (
            vec!["tenant.max_concurrent_streams"],
            update(&["max_concurrent_streams"], &|t| {
                t.max_concurrent_streams = -1
            }),
        ),
        (
            vec!["tenant.max_concurrent_streams"],
            update(&["max_concurrent_streams"], &|t| {
                t.max_concurrent_streams = 10_001
            }),
        ),
        (
            vec![
                "tenant.tenant_rate_limit.requests_per_second",
                "tenant.tenant_rate_limit.burst",
            ],
            update(&["tenant_rate_limit"], &|t| {
                t.tenant_rate_limit = limits(-1, 10_000_001)
            }),
        ),
        (
            vec!["tenant.tenant_rate_limit.burst"],
            update(&["tenant_rate_limit.burst"], &|t| {
                t.tenant_rate_limit = limits(-1, -1)
            }),
        ),
        (
            vec!["tenant.tenant_max_concurrent_streams"],
            update(&["tenant_max_concurrent_streams"], &|t| {
                t.tenant_max_concurrent_streams = 100_001
            }),
        ),
        (
            vec!["update_mask"],
            update(&["tenant_rate_limit."], &|_| {}),
        ),
        (vec!["update_mask"], update(&["rate_limit.tenant"], &|_| {})),
        (
            vec!["tenant.etag"],
            update(&["display_name"], &|t| {
                t.display_name = "x".into();
                t.etag = "abc".into();
            }),
        ),
        (
            vec!["tenant.etag"],
            update(&["display_name"], &|t| {
                t.display_name = "x".into();
                t.etag = TEXT.into();
            }),
        ),
    ];
    for id in MALFORMED_IDS {
        cases.push((
            vec!["tenant.tenant_id"],
            update(&["display_name"], &|t| {
                t.tenant_id = id.into();
                t.display_name = "x".into();
            }),
        ));
    }
    for (expected, r) in cases {
        let case = format!("{expected:?}: {r:?}");
        assert_violations(op.update_tenant(r).await, &expected, &case);
        assert_eq!(get_tenant(&mut op, &acme.tenant_id).await, acme, "{case}");
    }
    let rename = update(&["display_name"], &|t| t.display_name = "Taken over".into());
    let refused: Vec<(Code, String, pb::UpdateTenantRequest)> = vec![
        (
            Code::NotFound,
            s.operator_key.clone(),
            update(&["display_name"], &|t| {
                t.tenant_id = Uuid::new_v4().to_string();
                t.display_name = "x".into();
            }),
        ),
        (Code::PermissionDenied, globex_key.clone(), rename.clone()),
        (
            Code::PermissionDenied,
            globex_key,
            update(&["display_name"], &|t| {
                t.tenant_id = Uuid::new_v4().to_string();
                t.display_name = "x".into();
            }),
        ),
        (
            Code::PermissionDenied,
            acme_key.clone(),
            update(&["rate_limit"], &|t| t.rate_limit = limits(1, 1)),
        ),
        (
            Code::PermissionDenied,
            acme_key,
            update(&["max_concurrent_streams"], &|t| {
                t.max_concurrent_streams = 1
            }),
        ),
        (
            Code::Aborted,
            s.operator_key.clone(),
            update(&["display_name"], &|t| {
                t.display_name = "x".into();
                t.etag = "\"999\"".into();
            }),
        ),
    ];
    for (code, key, r) in refused {
        let case = format!("{code:?}: {r:?}");
        assert_code(admin(&s, &key).await.update_tenant(r).await, code, &case);
        assert_eq!(get_tenant(&mut op, &acme.tenant_id).await, acme, "{case}");
    }
    assert_eq!(
        get_tenant(&mut op, &s.operator_tenant.to_string())
            .await
            .display_name,
        "operator"
    );

    // A hostile name is kept byte for byte.
    let renamed = op
        .update_tenant(update(&["display_name"], &|t| {
            t.display_name = TEXT.into();
            t.etag = acme.etag.clone();
        }))
        .await
        .expect_answer("rename")
        .tenant
        .expect("tenant");
    assert_eq!(renamed.display_name, TEXT);
    assert_eq!(get_tenant(&mut op, &acme.tenant_id).await, renamed);
}
