//! The bad-input matrix of the gateway's own services, AdminService and
//! Customer360Service, over real gRPC and PostgreSQL (with the real profile
//! service behind the gateway): every method is sent missing, oversized,
//! malformed, out-of-range and hostile input and must answer the documented
//! code (a field violation naming the field for INVALID_ARGUMENT), never
//! INTERNAL, and change nothing when it refuses. Hostile free text is kept
//! byte for byte; a NUL byte, which PostgreSQL cannot store in text, is
//! INVALID_ARGUMENT.

use prost_types::FieldMask;
use rapport_proto::rapport::gateway::v1 as pb;
use rapport_proto::rapport::gateway::v1::admin_service_client::AdminServiceClient;
use rapport_proto::rapport::gateway::v1::customer360_service_client::Customer360ServiceClient;
use rapport_proto::rapport::profile::v1 as ppb;
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_testkit::hostile::{
    MALFORMED_IDS, TEXT, YEAR_9999_END, assert_code, assert_violations, at, forged_tokens,
    invalid_times,
};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

/// Sets the `authorization` metadata to exactly this value, or none.
#[derive(Clone)]
struct Authorization(Option<String>);

impl tonic::service::Interceptor for Authorization {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut()
                .insert("authorization", v.parse().expect("ascii authorization"));
        }
        Ok(req)
    }
}

type Admin = AdminServiceClient<InterceptedService<Channel, Authorization>>;

struct Setup {
    gateway: rapport_testkit::Running,
    _profile: rapport_testkit::Running,
    operator_key: String,
    operator_tenant: Uuid,
}

/// The gateway with the real profile service behind it (the other backends
/// are not configured), and an operator key with room for many calls.
async fn setup() -> Setup {
    let db = rapport_testkit::database().await;
    for (spec, migrator) in [
        (rapport_gateway::SCHEMA, &rapport_gateway::MIGRATOR),
        (rapport_profile::SCHEMA, &rapport_profile::MIGRATOR),
    ] {
        rapport_kit::db::migrate(&db.url, spec, migrator)
            .await
            .expect("migrations");
    }
    let base = rapport_kit::config::ServiceConfig {
        database_url: db.url.clone(),
        internal_token: Some("internal-credential-for-tests-0123".into()),
        ..Default::default()
    };
    let profile_config = base.clone();
    let profile = rapport_testkit::serve(move |listener, shutdown| async move {
        let _ = rapport_kit::server::run_service(
            "profile",
            rapport_profile::SCHEMA,
            &profile_config,
            listener,
            shutdown,
            rapport_profile::register,
        )
        .await;
    })
    .await;
    let gateway_config = rapport_kit::config::ServiceConfig {
        profile_url: Some(profile.endpoint()),
        ..base
    };
    let gateway = rapport_testkit::serve(move |listener, shutdown| async move {
        let _ = rapport_kit::server::run_service(
            "gateway",
            rapport_gateway::SCHEMA,
            &gateway_config,
            listener,
            shutdown,
            rapport_gateway::register,
        )
        .await;
    })
    .await;
    let pool = rapport_kit::db::connect(&db.url, rapport_gateway::SCHEMA, 2)
        .await
        .expect("gateway schema");
    let creds = rapport_gateway::create_operator_key(&pool, "operator")
        .await
        .expect("operator key");
    rapport_gateway::store::set_rate_limit(&pool, creds.tenant_id, 100_000, 1_000_000)
        .await
        .expect("room for many calls");
    rapport_gateway::store::set_tenant_budget(&pool, creds.tenant_id, 100_000, 1_000_000, 1_000)
        .await
        .expect("room for many calls");
    Setup {
        gateway,
        _profile: profile,
        operator_key: creds.api_key,
        operator_tenant: creds.tenant_id,
    }
}

async fn admin_with(s: &Setup, authorization: Option<String>) -> Admin {
    AdminServiceClient::with_interceptor(
        rapport_testkit::channel(&s.gateway).await,
        Authorization(authorization),
    )
}

async fn admin(s: &Setup, key: &str) -> Admin {
    admin_with(s, Some(format!("Bearer {key}"))).await
}

/// A tenant with room for many calls.
async fn new_tenant(op: &mut Admin, name: &str) -> pb::Tenant {
    op.create_tenant(pb::CreateTenantRequest {
        tenant: Some(pb::Tenant {
            display_name: name.into(),
            rate_limit: Some(pb::RateLimit {
                requests_per_second: 100_000,
                burst: 1_000_000,
            }),
            ..Default::default()
        }),
        request_id: String::new(),
    })
    .await
    .expect("tenant created")
    .into_inner()
    .tenant
    .expect("tenant")
}

async fn new_key(op: &mut Admin, tenant: &str, scopes: &[&str]) -> (pb::ApiKey, String) {
    let r = op
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.into(),
            display_name: "k".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("key created")
        .into_inner();
    (r.api_key.expect("key"), r.secret)
}

async fn get_tenant(c: &mut Admin, id: &str) -> pb::Tenant {
    c.get_tenant(pb::GetTenantRequest {
        tenant_id: id.into(),
    })
    .await
    .expect("tenant read back")
    .into_inner()
    .tenant
    .expect("tenant")
}

async fn tenant_count(op: &mut Admin) -> usize {
    op.list_tenants(pb::ListTenantsRequest {
        page_size: 1000,
        page_token: String::new(),
    })
    .await
    .expect("tenants listed")
    .into_inner()
    .tenants
    .len()
}

async fn keys_of(op: &mut Admin, tenant: &str) -> Vec<pb::ApiKey> {
    let mut keys = op
        .list_api_keys(pb::ListApiKeysRequest {
            tenant_id: tenant.into(),
            page_size: 1000,
            page_token: String::new(),
            include_revoked: true,
        })
        .await
        .expect("keys listed")
        .into_inner()
        .api_keys;
    // `last_used_time` moves as keys are used; the rest must not.
    for k in &mut keys {
        k.last_used_time = None;
    }
    keys
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn every_method_refuses_missing_malformed_and_unscoped_keys() {
    let s = setup().await;
    let mut op = admin(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    let (_, reader) = new_key(&mut op, &acme.tenant_id, &["profile:read"]).await;
    let (_, admin_only) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    let before = (
        tenant_count(&mut op).await,
        keys_of(&mut op, &acme.tenant_id).await,
    );
    let id = Uuid::new_v4().to_string();
    let unauthenticated = [
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Basic dXNlcjpwYXNz".into()),
        Some("Bearer rpk_deadbeef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        Some("Bearer ' OR 1=1 --".into()),
        Some(format!("Bearer {}x", s.operator_key)),
    ];
    let mut callers: Vec<(Option<String>, Code)> = unauthenticated
        .into_iter()
        .map(|a| (a, Code::Unauthenticated))
        .collect();
    callers.push((Some(format!("Bearer {reader}")), Code::PermissionDenied));
    for (authorization, code) in callers {
        let case = format!("{authorization:?}");
        let mut c = admin_with(&s, authorization.clone()).await;
        assert_code(
            c.create_tenant(pb::CreateTenantRequest {
                tenant: Some(pb::Tenant {
                    display_name: "x".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await,
            code,
            &case,
        );
        assert_code(
            c.get_tenant(pb::GetTenantRequest::default()).await,
            code,
            &case,
        );
        assert_code(
            c.list_tenants(pb::ListTenantsRequest::default()).await,
            code,
            &case,
        );
        assert_code(
            c.update_tenant(pb::UpdateTenantRequest {
                tenant: Some(pb::Tenant {
                    display_name: "x".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await,
            code,
            &case,
        );
        assert_code(
            c.create_api_key(pb::CreateApiKeyRequest {
                display_name: "x".into(),
                scopes: vec!["admin".into()],
                ..Default::default()
            })
            .await,
            code,
            &case,
        );
        assert_code(
            c.get_api_key(pb::GetApiKeyRequest {
                api_key_id: id.clone(),
            })
            .await,
            code,
            &case,
        );
        assert_code(
            c.list_api_keys(pb::ListApiKeysRequest::default()).await,
            code,
            &case,
        );
        assert_code(
            c.revoke_api_key(pb::RevokeApiKeyRequest {
                api_key_id: id.clone(),
            })
            .await,
            code,
            &case,
        );
        let mut c360 = Customer360ServiceClient::with_interceptor(
            rapport_testkit::channel(&s.gateway).await,
            Authorization(authorization),
        );
        if code == Code::Unauthenticated {
            assert_code(
                c360.get_customer360(pb::GetCustomer360Request {
                    customer_id: id.clone(),
                    max_interactions: 0,
                })
                .await,
                code,
                &case,
            );
        }
    }
    // Customer 360 needs profile:read, which an admin key does not imply.
    let mut c360 = Customer360ServiceClient::with_interceptor(
        rapport_testkit::channel(&s.gateway).await,
        Authorization(Some(format!("Bearer {admin_only}"))),
    );
    let err = c360
        .get_customer360(pb::GetCustomer360Request {
            customer_id: "not-a-uuid".into(),
            max_interactions: -1,
        })
        .await
        .expect_err("no profile:read");
    assert_eq!(
        (err.code(), err.message()),
        (Code::PermissionDenied, "missing scope profile:read")
    );
    let after = (
        tenant_count(&mut op).await,
        keys_of(&mut op, &acme.tenant_id).await,
    );
    assert_eq!(after, before, "nothing was created or revoked");
}

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
        .expect("first")
        .into_inner()
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
        .expect("hostile tenant")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(created.display_name, TEXT);
    assert!(!created.is_operator);
    assert!(Uuid::parse_str(&created.tenant_id).is_ok());
    assert_eq!(get_tenant(&mut op, &created.tenant_id).await, created);
    let retry = op
        .create_tenant(hostile)
        .await
        .expect("retry")
        .into_inner()
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
        .expect("first page")
        .into_inner();
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
        .expect("keys page")
        .into_inner()
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
            .expect("next page")
            .into_inner();
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
        .expect("huge page")
        .into_inner();
    assert_eq!(all.tenants, seen);
    let own = acme_admin
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .expect("own list")
        .into_inner();
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
        .expect("rename")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(renamed.display_name, TEXT);
    assert_eq!(get_tenant(&mut op, &acme.tenant_id).await, renamed);
}

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
        .expect("first key")
        .into_inner();
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
        .expect("hostile key")
        .into_inner();
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
        .expect("read back")
        .into_inner()
        .api_key
        .expect("key");
    assert_eq!(got.display_name, TEXT);
    let retry = op
        .create_api_key(hostile)
        .await
        .expect("retry")
        .into_inner();
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
        .expect("first page")
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());
    let tenants_token = op
        .list_tenants(pb::ListTenantsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("tenants page")
        .into_inner()
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
        .expect("second page")
        .into_inner();
    assert_eq!(second.api_keys.len(), 1);
    let all = op
        .list_api_keys(pb::ListApiKeysRequest {
            page_size: i32::MAX,
            ..base
        })
        .await
        .expect("huge page")
        .into_inner();
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
        .expect("customer created")
        .into_inner()
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
    for n in [0, 1, i32::MAX] {
        let answer = acme_c360
            .get_customer360(ask(&customer.customer_id, n))
            .await
            .expect("own customer")
            .into_inner();
        assert_eq!(answer.customer_id, customer.customer_id);
        let profile = answer.profile.expect("profile part");
        assert_eq!(profile.display_name, TEXT);
        assert_eq!(answer.part_statuses.len(), 6);
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
