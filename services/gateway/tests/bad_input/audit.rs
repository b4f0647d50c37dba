//! ListAuditEvents: every filter refuses what it cannot mean with a field
//! violation naming it, hostile text in a filter only narrows the list,
//! page tokens cannot be forged or reused across filters, and a tenant's
//! admin sees only its own tenant's trail.

use super::*;

fn list(tenant_id: &str) -> pb::ListAuditEventsRequest {
    pb::ListAuditEventsRequest {
        tenant_id: tenant_id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn list_audit_events_refuses_bad_filters_and_hides_other_tenants() {
    let s = setup().await;
    let mut op = admin(&s, &s.operator_key).await;
    let acme = new_tenant(&mut op, "Acme").await;
    let (_, acme_secret) = new_key(&mut op, &acme.tenant_id, &["admin"]).await;
    let (_, reader_secret) = new_key(&mut op, &acme.tenant_id, &["profile:read"]).await;
    let mut acme_admin = admin(&s, &acme_secret).await;

    for id in MALFORMED_IDS {
        assert_violations(op.list_audit_events(list(id)).await, &["tenant_id"], id);
        assert_violations(
            op.list_audit_events(pb::ListAuditEventsRequest {
                api_key_id: id.into(),
                ..Default::default()
            })
            .await,
            &["api_key_id"],
            id,
        );
    }
    for t in invalid_times() {
        let case = format!("{t:?}");
        assert_violations(
            op.list_audit_events(pb::ListAuditEventsRequest {
                start_time: Some(t),
                ..Default::default()
            })
            .await,
            &["start_time"],
            &case,
        );
        assert_violations(
            op.list_audit_events(pb::ListAuditEventsRequest {
                end_time: Some(t),
                ..Default::default()
            })
            .await,
            &["end_time"],
            &case,
        );
    }
    for (start, end) in [
        (at(1_700_000_000, 0), at(1_700_000_000, 0)),
        (at(1_700_000_001, 0), at(1_700_000_000, 0)),
    ] {
        assert_violations(
            op.list_audit_events(pb::ListAuditEventsRequest {
                start_time: Some(start),
                end_time: Some(end),
                ..Default::default()
            })
            .await,
            &["end_time"],
            "end not after start",
        );
    }
    let long = "m".repeat(201);
    for method in [
        "a/b/c",
        "/GetCustomer",
        "rapport.profile.v1.ProfileService/",
        "Get\0Customer",
        long.as_str(),
    ] {
        assert_violations(
            op.list_audit_events(pb::ListAuditEventsRequest {
                method: method.into(),
                ..Default::default()
            })
            .await,
            &["method"],
            method,
        );
    }
    for resource in ["x".repeat(101), "\0".into()] {
        assert_violations(
            op.list_audit_events(pb::ListAuditEventsRequest {
                resource_id: resource.clone(),
                ..Default::default()
            })
            .await,
            &["resource_id"],
            &resource,
        );
    }
    for code in ["SOMETIMES", "200", "OK ", TEXT, "\0"] {
        assert_violations(
            op.list_audit_events(pb::ListAuditEventsRequest {
                code: code.into(),
                ..Default::default()
            })
            .await,
            &["code"],
            code,
        );
    }
    assert_violations(
        op.list_audit_events(pb::ListAuditEventsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        &["page_size"],
        "negative page size",
    );
    // Hostile text in the free filters narrows the list to nothing.
    for (method, resource) in [(TEXT, ""), ("", TEXT), ("%", "%"), ("_", "*")] {
        let page = op
            .list_audit_events(pb::ListAuditEventsRequest {
                method: method.into(),
                resource_id: resource.into(),
                ..Default::default()
            })
            .await
            .expect_answer("hostile filters list nothing");
        assert!(page.audit_events.is_empty(), "{method:?} {resource:?}");
    }

    // Pages: forged tokens, and a genuine one with other filters. (The
    // operator's trail has the tenant and keys made above once written,
    // within about a second.)
    let mut genuine = String::new();
    for _ in 0..100 {
        let first = op
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .expect_answer("first page");
        genuine = first.next_page_token;
        if !genuine.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !genuine.is_empty(),
        "the operator's trail has several events"
    );
    for token in forged_tokens(&genuine) {
        assert_violations(
            op.list_audit_events(pb::ListAuditEventsRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await,
            &["page_token"],
            &token,
        );
    }
    assert_violations(
        op.list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1,
            code: "OK".into(),
            page_token: genuine,
            ..Default::default()
        })
        .await,
        &["page_token"],
        "a token of other filters",
    );

    // Tenancy and scope.
    for other in [s.operator_tenant.to_string(), Uuid::now_v7().to_string()] {
        assert_code(
            acme_admin.list_audit_events(list(&other)).await,
            Code::PermissionDenied,
            "another tenant",
        );
    }
    let own = acme_admin
        .list_audit_events(list(""))
        .await
        .expect_answer("its own trail");
    assert!(
        own.audit_events
            .iter()
            .all(|e| e.tenant_id == acme.tenant_id)
    );
    let mut reader = admin(&s, &reader_secret).await;
    assert_code(
        reader.list_audit_events(list("")).await,
        Code::PermissionDenied,
        "no admin scope",
    );
    let mut nobody = admin_with(&s, None).await;
    assert_code(
        nobody.list_audit_events(list("")).await,
        Code::Unauthenticated,
        "no key",
    );
}
