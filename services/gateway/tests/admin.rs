//! AdminService over real gRPC and PostgreSQL: operator and tenant admins,
//! idempotent creation, etags, validation, pagination and revocation.

use std::time::Duration;

use rapport_proto::rapport::gateway::v1 as pb;
use rapport_proto::rapport::gateway::v1::admin_service_client::AdminServiceClient;
use rapport_testkit::{Answer, Refused};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const GATEWAY: rapport_testkit::Service = rapport_testkit::service!(rapport_gateway);

#[derive(Clone)]
struct Bearer(String);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {}", self.0).parse().unwrap(),
            );
        }
        Ok(req)
    }
}

type Client = AdminServiceClient<InterceptedService<Channel, Bearer>>;

struct Setup {
    gateway: rapport_testkit::Running,
    operator_key: String,
    pool: sqlx::PgPool,
}

async fn setup() -> Setup {
    let db = rapport_testkit::migrated(&[GATEWAY]).await;
    let pool = GATEWAY.pool(&db, 4).await;
    let creds = rapport_gateway::create_operator_key(&pool, "operator")
        .await
        .unwrap();
    let config = rapport_kit::config::ServiceConfig {
        database_url: db.url.clone(),
        require_internal_auth: false,
        ..Default::default()
    };
    let gateway = GATEWAY.serve(config).await;
    Setup {
        gateway,
        operator_key: creds.api_key,
        pool,
    }
}

async fn client(s: &Setup, key: &str) -> Client {
    AdminServiceClient::with_interceptor(
        rapport_testkit::channel(&s.gateway).await,
        Bearer(key.to_string()),
    )
}

async fn new_tenant(c: &mut Client, name: &str) -> pb::Tenant {
    c.create_tenant(pb::CreateTenantRequest {
        tenant: Some(pb::Tenant {
            display_name: name.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    })
    .await
    .answer()
    .tenant
    .unwrap()
}

async fn new_key(c: &mut Client, tenant: &str, scopes: &[&str]) -> (pb::ApiKey, String) {
    let r = c
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.into(),
            display_name: "k".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .answer();
    (r.api_key.unwrap(), r.secret)
}

#[tokio::test]
async fn operators_manage_every_tenant_and_tenants_only_themselves() {
    let s = setup().await;
    let mut op = client(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    assert_eq!(
        acme.rate_limit.unwrap().requests_per_second,
        100,
        "defaults are shown"
    );
    assert!(!acme.is_operator);
    let globex = new_tenant(&mut op, "Globex").await;
    let (key, secret) = new_key(&mut op, &acme.tenant_id, &["admin", "profile:*"]).await;
    assert!(secret.starts_with(&format!("{}_", key.prefix)));
    assert_eq!(key.state, pb::ApiKeyState::Active as i32);

    let mut acme_admin = client(&s, &secret).await;
    let own = acme_admin
        .get_tenant(pb::GetTenantRequest::default())
        .await
        .answer();
    assert_eq!(own.tenant.unwrap().tenant_id, acme.tenant_id);
    let listed = acme_admin
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .answer();
    assert_eq!(
        listed.tenants.len(),
        1,
        "a tenant admin sees only its own tenant"
    );
    for err in [
        acme_admin
            .get_tenant(pb::GetTenantRequest {
                tenant_id: globex.tenant_id.clone(),
            })
            .await
            .unwrap_err(),
        acme_admin
            .create_tenant(pb::CreateTenantRequest {
                tenant: Some(pb::Tenant {
                    display_name: "mine".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap_err(),
        acme_admin
            .list_api_keys(pb::ListApiKeysRequest {
                tenant_id: globex.tenant_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    let all = op
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .answer();
    assert_eq!(all.tenants.len(), 3, "operator, Acme, Globex");

    // A key without the admin scope is told which scope it lacks.
    let (_, reader) = new_key(&mut op, &acme.tenant_id, &["profile:read"]).await;
    let err = client(&s, &reader)
        .await
        .get_tenant(pb::GetTenantRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::PermissionDenied, "missing scope admin")
    );
    client(&s, "")
        .await
        .get_tenant(pb::GetTenantRequest::default())
        .await
        .refused(Code::Unauthenticated);

    // Tenant admins rename their tenant but cannot change its limits.
    acme_admin
        .update_tenant(pb::UpdateTenantRequest {
            tenant: Some(pb::Tenant {
                max_concurrent_streams: 5,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["max_concurrent_streams".into()],
            }),
        })
        .await
        .refused(Code::PermissionDenied);
    let renamed = acme_admin
        .update_tenant(pb::UpdateTenantRequest {
            tenant: Some(pb::Tenant {
                display_name: "Acme Retail".into(),
                etag: acme.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .answer()
        .tenant
        .unwrap();
    assert_eq!(renamed.display_name, "Acme Retail");
    assert_ne!(renamed.etag, acme.etag);
    // The old etag is stale now.
    op.update_tenant(pb::UpdateTenantRequest {
        tenant: Some(pb::Tenant {
            tenant_id: acme.tenant_id.clone(),
            display_name: "Lost update".into(),
            etag: acme.etag.clone(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
    })
    .await
    .refused(Code::Aborted);
}

#[tokio::test]
async fn a_keys_last_use_is_recorded_at_most_once_a_minute() {
    let s = setup().await;
    let mut op = client(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    let (key, secret) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    assert!(key.last_used_time.is_none(), "never used yet");
    let last_used = |op: &mut Client| {
        let mut op = op.clone();
        let id = key.api_key_id.clone();
        async move {
            op.get_api_key(pb::GetApiKeyRequest { api_key_id: id })
                .await
                .answer()
                .api_key
                .unwrap()
                .last_used_time
        }
    };
    let mut c = client(&s, &secret).await;
    c.get_tenant(pb::GetTenantRequest::default()).await.unwrap();
    // Written in the background, off the call's path.
    let mut first = None;
    for _ in 0..100 {
        first = last_used(&mut op).await;
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("the key's use is recorded");
    // Used again after its cache entry expired: read again, not written again.
    tokio::time::sleep(rapport_gateway::auth::CACHE_TTL + Duration::from_millis(200)).await;
    c.get_tenant(pb::GetTenantRequest::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(last_used(&mut op).await, Some(first));
}

#[tokio::test]
async fn tenant_budgets_have_defaults_and_only_operators_change_them() {
    // A tenant's budget: calls per second, burst, open streams.
    let budget = |t: &pb::Tenant| {
        let rate = t.tenant_rate_limit.unwrap_or_default();
        (
            rate.requests_per_second,
            rate.burst,
            t.tenant_max_concurrent_streams,
        )
    };
    let s = setup().await;
    let mut op = client(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    assert_eq!(budget(&acme), (1_000, 2_000, 1_000), "defaults are shown");
    assert_eq!(acme.time_zone, "UTC", "the default time zone is shown");
    let update = |paths: &[&str], tenant: pb::Tenant| pb::UpdateTenantRequest {
        tenant: Some(tenant),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    // One field of the bucket alone, then the stream ceiling.
    let changed = op
        .update_tenant(update(
            &["tenant_rate_limit.burst", "tenant_max_concurrent_streams"],
            pb::Tenant {
                tenant_id: acme.tenant_id.clone(),
                tenant_rate_limit: Some(pb::RateLimit {
                    requests_per_second: 7,
                    burst: 9,
                }),
                tenant_max_concurrent_streams: 3,
                ..Default::default()
            },
        ))
        .await
        .answer()
        .tenant
        .unwrap();
    assert_eq!(
        budget(&changed),
        (1_000, 9, 3),
        "only the selected fields change"
    );
    assert_eq!(changed.rate_limit, acme.rate_limit, "key limits untouched");
    // Zero resets the whole bucket to the defaults.
    let reset = op
        .update_tenant(update(
            &["tenant_rate_limit"],
            pb::Tenant {
                tenant_id: acme.tenant_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .tenant
        .unwrap();
    assert_eq!(budget(&reset), (1_000, 2_000, 3));

    // A tenant's own admin may not raise its budget.
    let (_, secret) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    for path in ["tenant_rate_limit", "tenant_max_concurrent_streams"] {
        let err = client(&s, &secret)
            .await
            .update_tenant(update(
                &[path],
                pb::Tenant {
                    tenant_rate_limit: Some(pb::RateLimit {
                        requests_per_second: 100_000,
                        burst: 100_000,
                    }),
                    tenant_max_concurrent_streams: 100_000,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{path}: {err:?}");
    }

    // Given when creating, the budget is stored as given.
    let created = op
        .create_tenant(pb::CreateTenantRequest {
            tenant: Some(pb::Tenant {
                display_name: "Globex".into(),
                tenant_rate_limit: Some(pb::RateLimit {
                    requests_per_second: 50,
                    burst: 0,
                }),
                tenant_max_concurrent_streams: 20,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .answer()
        .tenant
        .unwrap();
    assert_eq!(budget(&created), (50, 2_000, 20));
}

#[tokio::test]
async fn keys_are_validated_idempotent_paginated_and_revocable() {
    let s = setup().await;
    let mut op = client(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;

    let err = op
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: acme.tenant_id.clone(),
            display_name: " ".into(),
            scopes: vec!["profile:read".into(), "root".into()],
            expire_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .refused(Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|f| f.field.clone())
        .collect();
    assert_eq!(fields, ["display_name", "scopes[1]", "expire_time"]);

    // Idempotent creation: the retry returns the same key without its secret.
    let request = pb::CreateApiKeyRequest {
        tenant_id: acme.tenant_id.clone(),
        display_name: "checkout".into(),
        scopes: vec!["interaction:write".into()],
        request_id: "create-checkout-key".into(),
        ..Default::default()
    };
    let first = op.create_api_key(request.clone()).await.answer();
    let again = op.create_api_key(request.clone()).await.answer();
    assert!(!first.secret.is_empty());
    assert!(again.secret.is_empty());
    assert_eq!(
        first.api_key.unwrap().api_key_id,
        again.api_key.clone().unwrap().api_key_id
    );
    op.create_api_key(pb::CreateApiKeyRequest {
        display_name: "other".into(),
        ..request
    })
    .await
    .refused(Code::InvalidArgument);

    // Five keys, listed two by two, newest first; tampered tokens are refused.
    for _ in 0..4 {
        new_key(&mut op, &acme.tenant_id, &["profile:read"]).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = op
            .list_api_keys(pb::ListApiKeysRequest {
                tenant_id: acme.tenant_id.clone(),
                page_size: 2,
                page_token: token.clone(),
                include_revoked: false,
            })
            .await
            .answer();
        assert!(page.api_keys.len() <= 2);
        seen.extend(page.api_keys.into_iter().map(|k| {
            k.create_time.unwrap().seconds * 1_000_000_000 + i64::from(k.create_time.unwrap().nanos)
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first");
    op.list_api_keys(pb::ListApiKeysRequest {
        tenant_id: acme.tenant_id.clone(),
        page_size: 2,
        page_token: format!("{token}x"),
        include_revoked: true,
    })
    .await
    .refused(Code::InvalidArgument);

    // A revoked admin key stops working within seconds.
    let (key, secret) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    let mut acme_admin = client(&s, &secret).await;
    acme_admin
        .get_tenant(pb::GetTenantRequest::default())
        .await
        .unwrap();
    let revoked = op
        .revoke_api_key(pb::RevokeApiKeyRequest {
            api_key_id: key.api_key_id.clone(),
        })
        .await
        .answer()
        .api_key
        .unwrap();
    assert_eq!(revoked.state, pb::ApiKeyState::Revoked as i32);
    tokio::time::sleep(rapport_gateway::auth::CACHE_TTL + Duration::from_millis(200)).await;
    let err = acme_admin
        .get_tenant(pb::GetTenantRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "api key revoked")
    );
    let _ = &s.pool;
}

#[tokio::test]
async fn a_tenant_sets_its_own_time_zone() {
    let s = setup().await;
    let mut op = client(&s, &s.operator_key).await;
    // Given at creation, with the IANA name as the database spells it.
    let madrid = op
        .create_tenant(pb::CreateTenantRequest {
            tenant: Some(pb::Tenant {
                display_name: "Madrid".into(),
                time_zone: " Europe/Madrid ".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .answer()
        .tenant
        .unwrap();
    assert_eq!(madrid.time_zone, "Europe/Madrid");
    // Changed by the tenant's own admin key (it is not a limit), the etag
    // moves, and an empty zone means UTC.
    let (_, secret) = new_key(&mut op, &madrid.tenant_id, &["admin"]).await;
    let mut own = client(&s, &secret).await;
    let set = |zone: &str| pb::UpdateTenantRequest {
        tenant: Some(pb::Tenant {
            time_zone: zone.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["time_zone".into()],
        }),
    };
    let tokyo = own
        .update_tenant(set("Asia/Tokyo"))
        .await
        .answer()
        .tenant
        .unwrap();
    assert_eq!(tokyo.time_zone, "Asia/Tokyo");
    assert_eq!(tokyo.display_name, "Madrid");
    assert_ne!(tokyo.etag, madrid.etag);
    let stored: String = sqlx::query_scalar("SELECT time_zone FROM tenants WHERE tenant_id = $1")
        .bind(uuid::Uuid::parse_str(&madrid.tenant_id).unwrap())
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(stored, "Asia/Tokyo");
    let utc = own.update_tenant(set("")).await.answer().tenant.unwrap();
    assert_eq!(utc.time_zone, "UTC");
}
