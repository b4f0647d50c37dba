//! Stored values to their messages, and the page cursors of model and
//! ranking lists.

use super::*;

#[derive(Serialize, Deserialize)]
pub(super) struct ModelCursor {
    pub(super) t: i64,
    pub(super) id: Uuid,
}

#[derive(Serialize, Deserialize)]
pub(super) struct RankCursor {
    /// Customers returned so far.
    pub(super) n: i64,
    /// The last CLV (decimal text) or float value.
    pub(super) v: String,
    pub(super) id: Uuid,
}

pub(super) fn value_proto(r: &store::ValueRow) -> pb::CustomerValue {
    let c = r.currency_code.as_str();
    pb::CustomerValue {
        customer_id: r.customer_id.to_string(),
        clv: Some(to_money(c, r.clv)),
        p_alive: r.p_alive,
        expected_purchases: r.expected_purchases,
        expected_average_order_value: Some(to_money(c, r.expected_order_value)),
        historical_value: Some(to_money(c, r.historical_value)),
        value_tier: i32::from(r.value_tier),
        transaction_model_id: r.transaction_model_id.to_string(),
        spend_model_id: r.spend_model_id.to_string(),
        score_time: Some(timestamp(r.score_time)),
        settings: Some(pb::ScoringSettings {
            horizon_periods: r.horizon_periods,
            period_unit: i32::from(r.period_unit),
            discount_rate: r.discount_rate,
            margin_ratio: r.margin_ratio,
            annual_discount_rate: Unit::from_proto(i32::from(r.period_unit))
                .map_or(0.0, |u| u.annual_rate(r.discount_rate)),
        }),
        frequency: r.frequency,
        recency: r.recency,
        t: r.t,
        identifiers: None,
        net_clv: r.net_clv.map(|d| to_money(c, d)),
        cost_per_purchase: r.cost_per_purchase.map(|d| to_money(c, d)),
        cost_to_serve: r.cost_to_serve.map(|d| to_money(c, d)),
        net_profit: r.net_profit.map(|d| to_money(c, d)),
        profit_decile: i32::from(r.profit_decile),
    }
}

pub(super) fn distribution_proto(d: &Distribution, currency: &str) -> pb::ValueDistribution {
    pb::ValueDistribution {
        total: Some(to_money(currency, d.total)),
        top_shares: d
            .top_shares
            .iter()
            .map(|s| pb::TopShare {
                top_percent: s.percent,
                customer_count: s.customers,
                value: Some(to_money(currency, s.value)),
                share: s.share,
            })
            .collect(),
        lorenz_curve: d
            .lorenz
            .iter()
            .map(|&(c, v)| pb::LorenzPoint {
                customer_share: c,
                value_share: v,
            })
            .collect(),
        gini: d.gini,
    }
}

/// An `as_of` instant into `v`: valid and not after the server's clock.
pub(super) fn as_of(
    v: &mut Violations,
    t: Option<&prost_types::Timestamp>,
) -> Option<DateTime<Utc>> {
    let t = t?;
    match from_timestamp(t) {
        None => {
            v.add("as_of", "is not a valid timestamp");
            None
        }
        Some(at) if at > Utc::now() => {
            v.add("as_of", "must not be after the server's clock");
            None
        }
        Some(at) => Some(at),
    }
}

impl ValuationApi {
    /// The stored values of `ids`, or their values as of `as_of`.
    pub(super) async fn values(
        &self,
        ctx: &CallContext,
        ids: &[Uuid],
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<store::ValueRow>, ApiError> {
        match as_of {
            None => Ok(store::values_of(&self.pool, ctx.tenant_id, ids).await?),
            Some(at) => {
                engine::values_as_of(&self.pool, self.interaction()?, ctx, ids.to_vec(), at).await
            }
        }
    }

    /// Looks identifier sets up in the profile service (never creating
    /// anything). An invalid set refuses the request, with its problems
    /// under `field(i)` (e.g. "identifier_sets[2].identifiers[0].value").
    pub(super) async fn look_up(
        &self,
        ctx: &CallContext,
        sets: &[IdentifierSet],
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<Lookup>, ApiError> {
        let profile = self
            .profile
            .as_ref()
            .ok_or_else(|| not_configured("profile"))?;
        let found = profile.lookup(ctx, sets).await?;
        let mut v = Violations::new();
        for (i, f) in found.iter().enumerate() {
            if let Lookup::Invalid(problems) = f {
                for (path, problem) in problems {
                    v.add(format!("{}.{path}", field(i)), problem.clone());
                }
                if problems.is_empty() {
                    v.add(field(i), "is not a valid identifier set");
                }
            }
        }
        v.finish()?;
        Ok(found)
    }

    /// Fills each value's identifiers from the profile service.
    pub(super) async fn with_identifiers(
        &self,
        ctx: &CallContext,
        values: &mut [pb::CustomerValue],
    ) -> Result<(), ApiError> {
        let profile = self
            .profile
            .as_ref()
            .ok_or_else(|| not_configured("profile"))?;
        let ids: Vec<Uuid> = values
            .iter()
            .filter_map(|v| Uuid::parse_str(&v.customer_id).ok())
            .collect();
        let found = profile.identifiers(ctx, &ids).await?;
        for v in values {
            if let Some(set) = Uuid::parse_str(&v.customer_id)
                .ok()
                .and_then(|id| found.get(&id))
            {
                v.identifiers = Some(set.clone());
            }
        }
        Ok(())
    }
}
