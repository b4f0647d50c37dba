//! Every method without a good key or scope.

use super::*;

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
