//! `GetProfitabilityReport`: the report computed now over any window, or,
//! for a request that accepts its age (`max_staleness`), the tenant's kept
//! report of the default window, from which any whale curve, value
//! destroyers up to [`KEPT_DESTROYERS`] and segment groups are drawn with
//! the figures a report computed over that window gives. And the removal
//! of an erased customer's id from the kept report.

use std::collections::{HashMap, HashSet};

use chrono::{TimeDelta, Utc};
use prost::Message;
use rapport_kit::convert::timestamp;
use rapport_kit::error::ApiError;
use rapport_proto::rapport::valuation::v1 as pb;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Window, no_model};
use crate::domain::money::to_money;
use crate::domain::profit::{self, Component, Dimension, Figures, Group, Line, Point, Report};
use crate::store::costs;
use crate::store::kept_reports::{self, Kept};

/// Value destroyers a kept report holds: the most a request may ask for.
pub const KEPT_DESTROYERS: usize = 100;

fn line_proto(component: Component, l: &Line, currency: &str) -> pb::CostLine {
    pb::CostLine {
        component: component.to_proto(),
        count: l.count,
        hours: l.hours,
        cost: Some(to_money(currency, l.cost)),
    }
}

fn lines_proto(lines: &[Line; 6], currency: &str) -> Vec<pb::CostLine> {
    Component::ALL
        .iter()
        .zip(lines)
        .map(|(c, l)| line_proto(*c, l, currency))
        .collect()
}

/// A customer's figures as the API shows them.
pub fn figures_proto(f: &Figures, currency: &str) -> pb::CustomerProfitability {
    let m = |d: Decimal| Some(to_money(currency, d));
    pb::CustomerProfitability {
        customer_id: f.customer.to_string(),
        purchases: f.purchases,
        revenue: m(f.revenue),
        returns: f.returns,
        refunds: m(f.refunds),
        gross_margin: m(f.margin),
        costs: lines_proto(&f.lines, currency),
        cost_to_serve: m(f.cost()),
        net_profit: m(f.net()),
    }
}

fn group_proto(g: &Group, currency: &str) -> pb::ProfitGroup {
    let m = |d: Decimal| Some(to_money(currency, d));
    pb::ProfitGroup {
        key: g.key.clone(),
        customers: g.customers,
        revenue: m(g.revenue),
        gross_margin: m(g.margin),
        cost_to_serve: m(g.cost),
        net_profit: m(g.net),
    }
}

fn point_proto(p: &Point, currency: &str) -> pb::WhalePoint {
    pb::WhalePoint {
        customer_share: p.share,
        customers: p.customers,
        cumulative_net_profit: Some(to_money(currency, p.cumulative)),
        profit_share: p.profit_share,
    }
}

fn breakdown_proto(d: Dimension, groups: &[Group], currency: &str) -> pb::ProfitBreakdown {
    pb::ProfitBreakdown {
        dimension: d.to_proto(),
        groups: groups.iter().map(|g| group_proto(g, currency)).collect(),
    }
}

/// What a report is asked for.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The window (for a kept report, the default one ending now).
    pub window: Window,
    /// Steps of the whale curve.
    pub intervals: usize,
    /// Value destroyers listed.
    pub destroyers: usize,
    /// Each requested segment's id and members.
    pub segments: Vec<(String, HashSet<Uuid>)>,
    /// The age a kept report may have; None: computed now, not kept.
    pub max_staleness: Option<TimeDelta>,
}

/// `GetProfitabilityReport`.
pub async fn report(
    pool: &PgPool,
    tenant: Uuid,
    ask: Ask,
) -> Result<pb::ProfitabilityReport, ApiError> {
    let mut conn = pool.acquire().await?;
    // The latest version: the tenant's currency, and what a kept report
    // must have been priced by.
    let (latest, currency) = costs::latest(&mut conn, tenant)
        .await?
        .map(|v| (v.version, v.currency_code))
        .ok_or_else(no_model)?;
    if let Some(max) = ask.max_staleness {
        // One snapshot for the kept report's parts, should it be replaced
        // meanwhile.
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        if let Some(kept) = kept_reports::get(&mut tx, tenant).await?
            && kept.cost_model_version == latest
            && Utc::now() - kept.compute_time <= max
        {
            return from_kept(&mut tx, tenant, kept, &ask).await;
        }
    }
    let w = ask.window;
    let priced =
        crate::store::profitability::figures(&mut conn, tenant, w.start, w.end, &currency, None)
            .await?;
    drop(conn);
    let keep = ask.max_staleness.is_some();
    let listed = if keep {
        KEPT_DESTROYERS
    } else {
        ask.destroyers
    };
    let (intervals, segments) = (ask.intervals, ask.segments);
    let mut rows = priced.figures;
    let (rep, rows) = tokio::task::spawn_blocking(move || {
        let rep = profit::report(&mut rows, intervals, listed, &segments);
        (rep, rows)
    })
    .await
    .map_err(ApiError::internal)?;
    let compute_time = if keep { w.end } else { Utc::now() };
    let mut out = report_proto(w, &currency, &rep, priced.other_currency, compute_time);
    if keep {
        let mut body = out.clone();
        body.whale_curve.clear();
        body.breakdowns
            .retain(|b| b.dimension != Dimension::Segment.to_proto());
        let kept = Kept {
            compute_time,
            cost_model_version: latest,
            body: body.encode_to_vec(),
        };
        let mut tx = pool.begin().await?;
        kept_reports::lock(&mut tx, tenant).await?;
        kept_reports::replace(&mut tx, tenant, &kept, profit::ranked(&rows)).await?;
        tx.commit().await?;
        out.value_destroyers.truncate(ask.destroyers);
    }
    Ok(out)
}

fn report_proto(
    w: Window,
    currency: &str,
    rep: &Report,
    other_currency: i64,
    compute_time: chrono::DateTime<Utc>,
) -> pb::ProfitabilityReport {
    pb::ProfitabilityReport {
        start_time: Some(timestamp(w.start)),
        end_time: Some(timestamp(w.end)),
        currency_code: currency.to_string(),
        customer_count: rep.total.customers,
        total: Some(group_proto(&rep.total, currency)),
        costs: lines_proto(&rep.lines, currency),
        unprofitable_customers: rep.unprofitable,
        whale_curve: rep.curve.iter().map(|p| point_proto(p, currency)).collect(),
        peak: Some(point_proto(&rep.peak, currency)),
        deciles: rep
            .deciles
            .iter()
            .map(|g| group_proto(g, currency))
            .collect(),
        breakdowns: rep
            .breakdowns
            .iter()
            .map(|(d, groups)| breakdown_proto(*d, groups, currency))
            .collect(),
        value_destroyers: rep
            .destroyers
            .iter()
            .map(|f| figures_proto(f, currency))
            .collect(),
        other_currency_interactions: other_currency,
        compute_time: Some(timestamp(compute_time)),
    }
}

/// The report drawn from the kept one: its curve from the cumulative net
/// profits at the curve's ranks, its segment groups from the ranked
/// customers among each segment's members.
async fn from_kept(
    conn: &mut PgConnection,
    tenant: Uuid,
    kept: Kept,
    ask: &Ask,
) -> Result<pb::ProfitabilityReport, ApiError> {
    let mut rep = pb::ProfitabilityReport::decode(kept.body.as_slice())
        .map_err(|e| ApiError::internal(format!("a kept report does not decode: {e}")))?;
    let n = usize::try_from(rep.customer_count).map_err(ApiError::internal)?;
    let currency = rep.currency_code.clone();
    let mut wanted: Vec<i64> = profit::curve_customers(n, ask.intervals)
        .into_iter()
        .chain([n])
        .filter(|&c| c > 0)
        .map(|c| c as i64)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let found: HashMap<i64, Decimal> = kept_reports::cumulative_at(conn, tenant, &wanted)
        .await?
        .into_iter()
        .collect();
    if let Some(missing) = wanted.iter().find(|r| !found.contains_key(r)) {
        return Err(ApiError::internal(format!(
            "the kept report has no rank {missing} of {n}"
        )));
    }
    let at = |c: usize| found.get(&(c as i64)).copied().unwrap_or(Decimal::ZERO);
    let total = at(n);
    rep.whale_curve = profit::curve(n, ask.intervals, total, at)
        .iter()
        .map(|p| point_proto(p, &currency))
        .collect();
    rep.value_destroyers.truncate(ask.destroyers);
    if !ask.segments.is_empty() {
        let mut groups = Vec::with_capacity(ask.segments.len());
        for (id, members) in &ask.segments {
            let members: Vec<Uuid> = members.iter().copied().collect();
            let s = kept_reports::sums_of(conn, tenant, &members).await?;
            groups.push(profit::group_of(
                id.as_str(),
                s.customers,
                s.revenue,
                s.margin,
                s.cost,
            ));
        }
        groups.sort_by(|a, b| a.key.cmp(&b.key));
        rep.breakdowns
            .push(breakdown_proto(Dimension::Segment, &groups, &currency));
    }
    Ok(rep)
}

/// Removes an erased customer from the tenant's kept report: its id from
/// the ranks and its entry among the value destroyers. Its figures stay in
/// the totals, curve and groups, which name nobody. A kept body that does
/// not decode is discarded whole.
pub async fn forget(tx: &mut PgConnection, tenant: Uuid, customer: Uuid) -> sqlx::Result<()> {
    if !kept_reports::forget(tx, tenant, customer).await? {
        return Ok(());
    }
    let Some(kept) = kept_reports::get(tx, tenant).await? else {
        return Ok(());
    };
    let Ok(mut rep) = pb::ProfitabilityReport::decode(kept.body.as_slice()) else {
        tracing::warn!(%tenant, "a kept report does not decode: discarded");
        return kept_reports::discard(tx, tenant).await;
    };
    let id = customer.to_string();
    let before = rep.value_destroyers.len();
    rep.value_destroyers.retain(|d| d.customer_id != id);
    if rep.value_destroyers.len() != before {
        kept_reports::set_body(tx, tenant, &rep.encode_to_vec()).await?;
    }
    Ok(())
}
