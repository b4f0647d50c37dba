//! The bad-input matrix of the gateway's own services, AdminService and
//! Customer360Service, over real gRPC and PostgreSQL (with the real profile
//! service behind the gateway): every method is sent missing, oversized,
//! malformed, out-of-range and hostile input and must answer the documented
//! code (a field violation naming the field for INVALID_ARGUMENT), never
//! INTERNAL, and change nothing when it refuses. Hostile free text is kept
//! byte for byte; a NUL byte, which PostgreSQL cannot store in text, is
//! INVALID_ARGUMENT.

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

const GATEWAY: rapport_testkit::Service = rapport_testkit::service!(rapport_gateway);
const PROFILE: rapport_testkit::Service = rapport_testkit::service!(rapport_profile);

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
    let db = rapport_testkit::migrated(&[GATEWAY, PROFILE]).await;
    let base = rapport_kit::config::ServiceConfig {
        database_url: db.url.clone(),
        internal_token: Some("internal-credential-for-tests-0123".into()),
        ..Default::default()
    };
    let profile = PROFILE.serve(base.clone()).await;
    let gateway_config = rapport_kit::config::ServiceConfig {
        profile_url: Some(profile.endpoint()),
        ..base
    };
    let gateway = GATEWAY.serve(gateway_config).await;
    let pool = GATEWAY.pool(&db, 2).await;
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
    .expect_answer("tenant created")
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
        .expect_answer("key created");
    (r.api_key.expect("key"), r.secret)
}

async fn get_tenant(c: &mut Admin, id: &str) -> pb::Tenant {
    c.get_tenant(pb::GetTenantRequest {
        tenant_id: id.into(),
    })
    .await
    .expect_answer("tenant read back")
    .tenant
    .expect("tenant")
}

async fn tenant_count(op: &mut Admin) -> usize {
    op.list_tenants(pb::ListTenantsRequest {
        page_size: 1000,
        page_token: String::new(),
    })
    .await
    .expect_answer("tenants listed")
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
        .expect_answer("keys listed")
        .api_keys;
    // `last_used_time` moves as keys are used; the rest must not.
    for k in &mut keys {
        k.last_used_time = None;
    }
    keys
}

mod access;
mod api_keys;
mod audit;
mod tenants;

#[allow(unused_imports)]
use access::*;
#[allow(unused_imports)]
use api_keys::*;
use rapport_testkit::Answer;
use rapport_testkit::mask;
#[allow(unused_imports)]
use tenants::*;
