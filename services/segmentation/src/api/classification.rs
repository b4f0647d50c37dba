//! RFM reports, ladder and stage classification, and the tenant's
//! classification policy.

use super::*;

impl SegmentationApi {
    pub(super) async fn rfm_report(
        &self,
        ctx: CallContext,
        r: pb::GetRfmReportRequest,
    ) -> Result<pb::GetRfmReportResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let segment = if r.segment_id.is_empty() {
            None
        } else {
            let mut v = Violations::new();
            let id = v.uuid("segment_id", &r.segment_id);
            v.finish()?;
            id
        };
        // When the scores are due for a recomputation, it runs first in a
        // writer's transaction of its own, unless another writer (a feed
        // consumer, a refresh) holds the tenant: a read never waits on one,
        // and then reports the scores as they are.
        let now = Utc::now();
        crate::classification::rescore_if_due(&self.pool, tenant, now).await?;
        let mut tx = self.pool.begin().await?;
        if let Some(s) = segment {
            self.load(&mut tx, tenant, s).await?;
        }
        let state = store::rfm_state(&mut tx, tenant).await?;
        let currency = store::currency(&mut tx, tenant).await?;
        let rows = store::rfm_report(&mut tx, tenant, segment).await?;
        tx.commit().await?;
        let scored: i64 = rows
            .iter()
            .filter(|r| r.rfm_segment.is_some())
            .map(|r| r.customers)
            .sum();
        let unscored: i64 = rows
            .iter()
            .filter(|r| r.rfm_segment.is_none())
            .map(|r| r.customers)
            .sum();
        let total_revenue: Decimal = rows
            .iter()
            .filter(|r| r.rfm_segment.is_some())
            .filter_map(|r| r.revenue)
            .sum();
        let cur = currency.as_deref();
        let segments = rfm::SEGMENTS
            .iter()
            .map(|s| {
                let row = rows
                    .iter()
                    .find(|r| r.rfm_segment.as_deref() == Some(rfm::name(*s)));
                let count = row.map_or(0, |r| r.customers);
                let revenue = row.and_then(|r| r.revenue).unwrap_or_default();
                let clv = row.and_then(|r| r.clv_total).unwrap_or_default();
                let valued = row.map_or(0, |r| r.valued);
                pb::RfmSegmentSummary {
                    rfm_segment: *s as i32,
                    customer_count: count,
                    customer_share: if scored > 0 {
                        count as f64 / scored as f64
                    } else {
                        0.0
                    },
                    revenue: money(cur, revenue),
                    revenue_share: if total_revenue > Decimal::ZERO {
                        (revenue / total_revenue).to_f64().unwrap_or(0.0)
                    } else {
                        0.0
                    },
                    clv_total: money(cur, clv),
                    clv_average: money(
                        cur,
                        if valued > 0 {
                            (clv / Decimal::from(valued)).round_dp(9)
                        } else {
                            Decimal::ZERO
                        },
                    ),
                    valued_customer_count: valued,
                }
            })
            .collect();
        Ok(pb::GetRfmReportResponse {
            segments,
            scored_customer_count: scored,
            unscored_customer_count: unscored,
            compute_time: state.rfm_compute_time.map(ts),
            currency_code: currency.unwrap_or_default(),
        })
    }

    pub(super) async fn classify(
        &self,
        ctx: CallContext,
        r: pb::ClassifyCustomerRequest,
    ) -> Result<pb::Classification, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let customer = v.uuid("customer_id", &r.customer_id);
        v.finish()?;
        let Some(customer) = customer else {
            return Err(ApiError::invalid("customer_id", "required"));
        };
        let mut conn = self.pool.acquire().await?;
        let Some(f) = store::features_json(&mut conn, tenant, customer).await? else {
            return Err(ApiError::not_found("customer", customer.to_string()));
        };
        let (overrides, version, _) = store::policy(&mut conn, tenant, false).await?;
        let p = Policy::with_overrides(&overrides);
        let now = Utc::now();
        let inputs =
            store::classification_inputs(&mut conn, tenant, Some(&[customer]), &p, true, now)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found("customer", customer.to_string()))?;
        let o = classify::classify(&inputs.inputs, &p, now);
        let state = store::rfm_state(&mut conn, tenant).await?;
        let currency = store::currency(&mut conn, tenant).await?;
        let int = |k: &str| f.get(k).and_then(Value::as_i64).map(|x| x as i32);
        let rfm = match (int("rfm_r"), int("rfm_f"), int("rfm_m")) {
            (Some(r), Some(fr), Some(m)) => {
                let last = f
                    .get("last_purchase")
                    .and_then(Value::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc));
                let monetary = f
                    .get("monetary")
                    .and_then(store::decimal)
                    .unwrap_or_default();
                Some(pb::RfmScores {
                    recency_score: r,
                    frequency_score: fr,
                    monetary_score: m,
                    frequency_monetary_score: rfm::fm(fr, m),
                    segment: rfm::segment(r, rfm::fm(fr, m)) as i32,
                    recency_days: last
                        .map_or(0, |l| (now - l).num_seconds().div_euclid(86_400) as i32),
                    frequency: f.get("purchases").and_then(Value::as_i64).unwrap_or(0),
                    monetary: money(currency.as_deref(), monetary),
                    compute_time: state.rfm_compute_time.map(ts),
                })
            }
            _ => None,
        };
        let profile_stage = f
            .get("profile_stage")
            .and_then(Value::as_str)
            .map_or(RelationshipStage::Unspecified, stage_from_name);
        Ok(pb::Classification {
            customer_id: customer.to_string(),
            ladder_rung: o.ladder as i32,
            ladder_explanation: o.ladder_explanation,
            stage: o.stage as i32,
            stage_explanation: o.stage_explanation,
            profile_stage: profile_stage as i32,
            rfm,
            classify_time: Some(ts(now)),
            policy_etag: policy::etag(version),
        })
    }

    pub(super) async fn update_policy(
        &self,
        ctx: CallContext,
        r: pb::UpdateClassificationPolicyRequest,
    ) -> Result<pb::ClassificationPolicy, ApiError> {
        let tenant = ctx.tenant_id;
        let update = r.policy.unwrap_or_default();
        let paths: Vec<String> = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let (overrides, version, time) =
            crate::classification::update_policy(&self.pool, tenant, &update, &paths).await?;
        let mut out = Policy::with_overrides(&overrides).to_proto();
        out.etag = policy::etag(version);
        out.update_time = Some(ts(time));
        Ok(out)
    }
}
