//! The cost model's history over real PostgreSQL and gRPC: versions with
//! effective times (the first also prices what came before it), idempotent
//! setting by request id, etags, one currency per tenant, reading by time or
//! number, listing page by page, and tenant isolation.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::costs::*;
use common::*;
use rapport_proto::rapport::valuation::v1::*;
use tonic::Code;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_model_keeps_its_history() {
    let s = start(false).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    v.get_cost_model(req(tenant, GetCostModelRequest::default()))
        .await
        .refused(Code::NotFound);
    let first = v
        .set_cost_model(req(
            tenant,
            SetCostModelRequest {
                cost_model: Some(model_v1(t0)),
                etag: String::new(),
                request_id: "cm-1".into(),
            },
        ))
        .await
        .answer()
        .cost_model
        .unwrap();
    // A retry returns the version first set; the id with other content is
    // refused.
    let retry = v
        .set_cost_model(req(
            tenant,
            SetCostModelRequest {
                cost_model: Some(model_v1(t0)),
                etag: String::new(),
                request_id: "cm-1".into(),
            },
        ))
        .await
        .answer()
        .cost_model
        .unwrap();
    assert_eq!(retry, first);
    v.set_cost_model(req(
        tenant,
        SetCostModelRequest {
            cost_model: Some(model_v2(t0)),
            etag: String::new(),
            request_id: "cm-1".into(),
        },
    ))
    .await
    .refused(Code::AlreadyExists);
    // Amounts come back in the model's currency, normalised.
    assert_eq!(first.fixed_cost, Some(eur(12, 0)));
    assert_eq!(first.contact_rates[3].cost, Some(eur(0, 10)));
    assert!(first.create_time.is_some());

    let second = set(
        &mut v,
        tenant,
        model_v2(t0 + Duration::days(90)),
        &first.etag,
    )
    .await;
    // A stale etag is refused, and so is another currency.
    v.set_cost_model(req(
        tenant,
        SetCostModelRequest {
            cost_model: Some(model_v1(t0)),
            etag: first.etag.clone(),
            request_id: String::new(),
        },
    ))
    .await
    .refused(Code::Aborted);
    let mut usd = model_v1(t0);
    usd.currency_code = "USD".into();
    for r in &mut usd.contact_rates {
        r.cost.as_mut().unwrap().currency_code = "USD".into();
    }
    for m in [
        &mut usd.service_request_cost,
        &mut usd.service_request_hour_cost,
        &mut usd.complaint_cost,
        &mut usd.complaint_hour_cost,
        &mut usd.return_handling_cost,
        &mut usd.fixed_cost,
    ] {
        m.as_mut().unwrap().currency_code = "USD".into();
    }
    v.set_cost_model(req(
        tenant,
        SetCostModelRequest {
            cost_model: Some(usd),
            etag: String::new(),
            request_id: String::new(),
        },
    ))
    .await
    .refused(Code::FailedPrecondition);

    // Which version is in effect when: the first also before its own time.
    let at = |t: DateTime<Utc>| {
        let mut v = v.clone();
        async move {
            v.get_cost_model(req(
                tenant,
                GetCostModelRequest {
                    as_of: Some(ts(t)),
                    version: 0,
                },
            ))
            .await
            .answer()
            .cost_model
            .unwrap()
            .version
        }
    };
    assert_eq!(at(t0 - Duration::days(400)).await, 1);
    assert_eq!(at(t0 + Duration::days(89)).await, 1);
    assert_eq!(at(t0 + Duration::days(90)).await, 2);
    assert_eq!(at(t0 + Duration::days(900)).await, 2);
    let by_number = v
        .get_cost_model(req(
            tenant,
            GetCostModelRequest {
                as_of: None,
                version: 1,
            },
        ))
        .await
        .answer()
        .cost_model
        .unwrap();
    assert_eq!(by_number, first);
    v.get_cost_model(req(
        tenant,
        GetCostModelRequest {
            as_of: None,
            version: 9,
        },
    ))
    .await
    .refused(Code::NotFound);

    // Listing: newest first, a page at a time.
    let page = v
        .list_cost_models(req(
            tenant,
            ListCostModelsRequest {
                page_size: 1,
                page_token: String::new(),
            },
        ))
        .await
        .answer();
    assert_eq!(page.cost_models, vec![second.clone()]);
    let rest = v
        .list_cost_models(req(
            tenant,
            ListCostModelsRequest {
                page_size: 1,
                page_token: page.next_page_token.clone(),
            },
        ))
        .await
        .answer();
    assert_eq!(rest.cost_models, vec![first.clone()]);
    assert!(rest.next_page_token.is_empty());
    // Another tenant's token is refused; another tenant sees no versions.
    v.list_cost_models(req(
        Uuid::new_v4(),
        ListCostModelsRequest {
            page_size: 1,
            page_token: page.next_page_token,
        },
    ))
    .await
    .refused(Code::InvalidArgument);
    let theirs = v
        .list_cost_models(req(Uuid::new_v4(), ListCostModelsRequest::default()))
        .await
        .answer();
    assert!(theirs.cost_models.is_empty());
}
