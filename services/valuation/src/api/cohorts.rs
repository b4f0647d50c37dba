//! GetCohortReport: acquisition cohorts by month or quarter, their
//! retention and value per period (`domain::cohort`), from the purchases
//! kept from the interaction feed.

use super::*;

impl ValuationApi {
    pub(super) async fn do_get_cohort_report(
        &self,
        req: Request<pb::GetCohortReportRequest>,
    ) -> Result<Response<pb::GetCohortReportResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant_id;
        let r = req.into_inner();
        let now = Utc::now();
        let mut v = Violations::new();
        let g = match pb::CohortGranularity::try_from(r.granularity) {
            Ok(pb::CohortGranularity::Unspecified | pb::CohortGranularity::Month) => {
                Granularity::Month
            }
            Ok(pb::CohortGranularity::Quarter) => Granularity::Quarter,
            Err(_) => {
                v.add("granularity", "must be MONTH or QUARTER");
                Granularity::Month
            }
        };
        let time = |v: &mut Violations, field: &str, t: &Option<prost_types::Timestamp>| {
            t.as_ref().and_then(|t| {
                let parsed = from_timestamp(t);
                v.check(parsed.is_none(), field, "is not a valid timestamp");
                parsed
            })
        };
        let start = time(&mut v, "start_time", &r.start_time);
        let end = time(&mut v, "end_time", &r.end_time);
        if let (Some(s), Some(e)) = (start, end) {
            v.check(e <= s, "end_time", "must be after start_time");
        }
        v.check(
            !r.currency_code.is_empty() && !is_currency(&r.currency_code),
            "currency_code",
            "must be an ISO 4217 currency code in upper case",
        );
        let current = cohort::period_of(now, g);
        let last = end.map_or(current, |e| {
            cohort::period_of(e - ChronoDuration::microseconds(1), g)
        });
        let first_bound = start.map(|s| cohort::period_of(s, g));
        if let Some(f) = first_bound {
            v.check(
                last - f + 1 > cohort::MAX_COHORTS,
                if end.is_some() {
                    "end_time"
                } else {
                    "start_time"
                },
                format!("the range spans more than {} cohorts", cohort::MAX_COHORTS),
            );
            v.check(
                last - f < cohort::MAX_COHORTS && cohort::cells(f, last, current) > cohort::MAX_CELLS,
                "start_time",
                format!(
                    "the report would hold more than {} cohort periods (cohorts times periods since acquisition): choose a later start_time, an earlier end_time or QUARTER cohorts",
                    cohort::MAX_CELLS
                ),
            );
        }
        v.finish()?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let currency = if !r.currency_code.is_empty() {
            r.currency_code.clone()
        } else if let Some(m) =
            store::active_model(&mut conn, tenant, Kind::GammaGamma.to_proto() as i16)
                .await
                .map_err(ApiError::from)?
        {
            decode(&m)?.currency_code
        } else {
            store::main_purchase_currency(&self.pool, tenant)
                .await
                .map_err(ApiError::from)?
                .unwrap_or_else(|| "XXX".into())
        };
        drop(conn);
        let field = match g {
            Granularity::Month => "month",
            Granularity::Quarter => "quarter",
        };
        let sizes: HashMap<i64, i64> = store::cohort_sizes(&self.pool, tenant, field)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|(t, n)| (cohort::period_of(t, g), n))
            .collect();
        let first = match first_bound {
            Some(f) => f,
            None => match sizes.keys().min() {
                Some(&earliest) => earliest.max(last - cohort::MAX_COHORTS + 1),
                None => last + 1,
            },
        };
        if first <= last && cohort::cells(first, last, current) > cohort::MAX_CELLS {
            return Err(ApiError::invalid(
                "end_time",
                format!(
                    "the report would hold more than {} cohort periods: give a start_time or QUARTER cohorts",
                    cohort::MAX_CELLS
                ),
            )
            .into());
        }
        let activity: Vec<cohort::Activity> =
            store::cohort_activity(&self.pool, tenant, field, &currency)
                .await
                .map_err(ApiError::from)?
                .into_iter()
                .map(|(c, p, n, rev)| cohort::Activity {
                    cohort: cohort::period_of(c, g),
                    period: cohort::period_of(p, g),
                    active: n,
                    revenue: rev.unwrap_or_default(),
                })
                .collect();
        let values: HashMap<i64, cohort::CohortValues> =
            store::cohort_values(&self.pool, tenant, field)
                .await
                .map_err(ApiError::from)?
                .into_iter()
                .map(|(c, n, h, clv)| {
                    (
                        cohort::period_of(c, g),
                        cohort::CohortValues {
                            scored: n,
                            historical: h.unwrap_or_default(),
                            clv: clv.unwrap_or_default(),
                        },
                    )
                })
                .collect();
        let value_currency = store::values_currency(&self.pool, tenant)
            .await
            .map_err(ApiError::from)?
            .unwrap_or_else(|| currency.clone());
        let rows = if first <= last {
            cohort::rows(first, last, current, &sizes, &activity, &values)
        } else {
            Vec::new()
        };
        let cohorts = rows
            .into_iter()
            .map(|row| pb::CohortRow {
                cohort: cohort::label(row.period, g),
                start_time: cohort::period_start(row.period, g).map(timestamp),
                end_time: cohort::period_start(row.period + 1, g).map(timestamp),
                customer_count: row.size,
                periods: row
                    .periods
                    .iter()
                    .map(|p| pb::CohortPeriod {
                        period_index: p.index,
                        active_customer_count: p.active,
                        retention_rate: p.retention,
                        revenue: Some(to_money(&currency, p.revenue)),
                        complete: p.complete,
                    })
                    .collect(),
                revenue: Some(to_money(&currency, row.revenue)),
                scored_customer_count: row.scored,
                mean_historical_value: row.mean_historical.map(|m| to_money(&value_currency, m)),
                mean_clv: row.mean_clv.map(|m| to_money(&value_currency, m)),
            })
            .collect();
        Ok(Response::new(pb::GetCohortReportResponse {
            granularity: g.to_proto(),
            currency_code: currency,
            cohorts,
            generate_time: Some(timestamp(now)),
        }))
    }
}
