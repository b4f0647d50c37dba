//! Cost to serve and customer profitability (contract:
//! `rapport/valuation/v1/profitability.proto`): what a cost model may hold,
//! a customer's figures over a window once the store has priced its
//! interactions, the report built from every customer's figures (totals,
//! whale curve, deciles, breakdowns, value destroyers), and the cost per
//! purchase that net CLV subtracts. No I/O.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use rapport_proto::rapport::common::v1::{LadderRung, RelationshipStage};
use rapport_proto::rapport::interaction::v1::InteractionType;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::money::{round_nano, to_f64};

/// The parts of a cost to serve, in `CostComponent` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// Sales visits, calls, e-mails, meetings, chats.
    Contacts,
    /// Campaign messages sent.
    Campaigns,
    /// Service requests (per request and per hour open).
    ServiceRequests,
    /// Complaints (per complaint and per hour open).
    Complaints,
    /// Return handling.
    Returns,
    /// Fixed cost per customer per period.
    Fixed,
}

impl Component {
    /// Every component, in order.
    pub const ALL: [Component; 6] = [
        Component::Contacts,
        Component::Campaigns,
        Component::ServiceRequests,
        Component::Complaints,
        Component::Returns,
        Component::Fixed,
    ];

    /// The proto value of `CostComponent`.
    pub fn to_proto(self) -> i32 {
        match self {
            Component::Contacts => 1,
            Component::Campaigns => 2,
            Component::ServiceRequests => 3,
            Component::Complaints => 4,
            Component::Returns => 5,
            Component::Fixed => 6,
        }
    }

    /// The component an interaction type costs under, if it costs.
    pub fn of_type(t: i32) -> Option<Component> {
        use InteractionType as T;
        match T::try_from(t).ok()? {
            T::SalesVisit | T::Call | T::Email | T::Meeting | T::Chat => Some(Component::Contacts),
            T::CampaignSent => Some(Component::Campaigns),
            T::ServiceRequest => Some(Component::ServiceRequests),
            T::Complaint => Some(Component::Complaints),
            T::Return => Some(Component::Returns),
            _ => None,
        }
    }
}

/// True for the types a `ContactRate` may price (each on its own channel).
pub fn is_contact_rate_type(t: i32) -> bool {
    matches!(
        Component::of_type(t),
        Some(Component::Contacts | Component::Campaigns)
    )
}

/// One price of a cost model version: per interaction of `kind` on
/// `channel` (0: any channel without its own price), and per hour open.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// Interaction type (proto value).
    pub kind: i16,
    /// Channel (proto value); 0 for every channel.
    pub channel: i16,
    /// Per interaction.
    pub cost: Decimal,
    /// Per hour open (service requests and complaints).
    pub hour_cost: Decimal,
}

/// A checked cost model version, as pricing reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    /// From when it prices.
    pub effective_time: DateTime<Utc>,
    /// ISO 4217.
    pub currency: String,
    /// Prices per type and channel (contacts, campaign messages, service
    /// requests, complaints, returns).
    pub rates: Vec<Rate>,
    /// Fixed cost per customer per `fixed_days`.
    pub fixed_cost: Decimal,
    /// The fixed cost's period in days (1 without one).
    pub fixed_days: i32,
    /// Default margin rate, 0..=1.
    pub margin_rate: Decimal,
}

/// One line of a cost to serve.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Line {
    /// Interactions counted (customers charged, for the fixed cost).
    pub count: i64,
    /// Hours open (service requests, complaints).
    pub hours: f64,
    /// The cost.
    pub cost: Decimal,
}

impl Line {
    fn add(&mut self, o: &Line) {
        self.count += o.count;
        self.hours += o.hours;
        self.cost += o.cost;
    }
}

/// A customer's figures over a window, priced.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// The customer.
    pub customer: Uuid,
    /// Purchases in the window.
    pub purchases: i64,
    /// Distinct UTC days with a purchase in the window.
    pub purchase_days: i64,
    /// Σ purchase amounts.
    pub revenue: Decimal,
    /// Returns in the window.
    pub returns: i64,
    /// Σ refunds.
    pub refunds: Decimal,
    /// Gross margin (refunds' margin deducted).
    pub margin: Decimal,
    /// Cost lines in [`Component::ALL`] order.
    pub lines: [Line; 6],
    /// First purchase ever (acquisition).
    pub first_purchase: Option<DateTime<Utc>>,
    /// Ladder rung (proto value, 0 unclassified).
    pub rung: i16,
    /// Dwyer stage (proto value, 0 unclassified).
    pub stage: i16,
    /// Value tier (proto value, 0 unscored).
    pub tier: i16,
}

impl Figures {
    /// The cost to serve.
    pub fn cost(&self) -> Decimal {
        self.lines.iter().map(|l| l.cost).sum()
    }

    /// Gross margin − cost to serve.
    pub fn net(&self) -> Decimal {
        self.margin - self.cost()
    }
}

/// Totals over a group of customers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    /// The group's key.
    pub key: String,
    /// Customers.
    pub customers: i64,
    /// Revenue.
    pub revenue: Decimal,
    /// Gross margin.
    pub margin: Decimal,
    /// Cost to serve.
    pub cost: Decimal,
    /// Net profit.
    pub net: Decimal,
}

impl Group {
    fn named(key: impl Into<String>) -> Self {
        Group {
            key: key.into(),
            ..Group::default()
        }
    }

    fn add(&mut self, f: &Figures) {
        self.customers += 1;
        self.revenue += f.revenue;
        self.margin += f.margin;
        let cost = f.cost();
        self.cost += cost;
        self.net += f.margin - cost;
    }
}

/// One point of the whale curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Share of customers, most profitable first.
    pub share: f64,
    /// round(share × n) customers.
    pub customers: i64,
    /// Their cumulative net profit.
    pub cumulative: Decimal,
    /// cumulative / total net profit (0 when the total is not positive).
    pub profit_share: f64,
}

/// What a report breaks figures down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Value tier.
    ValueTier,
    /// Month of the first purchase.
    Cohort,
    /// Ladder rung.
    Rung,
    /// Dwyer stage.
    Stage,
    /// Requested segments.
    Segment,
}

impl Dimension {
    /// The proto value of `ProfitDimension`.
    pub fn to_proto(self) -> i32 {
        match self {
            Dimension::ValueTier => 1,
            Dimension::Cohort => 2,
            Dimension::Rung => 3,
            Dimension::Stage => 4,
            Dimension::Segment => 5,
        }
    }
}

/// A profitability report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Totals over every customer (key "total").
    pub total: Group,
    /// The cost to serve by component.
    pub lines: [Line; 6],
    /// Customers with a negative net profit.
    pub unprofitable: i64,
    /// The whale curve.
    pub curve: Vec<Point>,
    /// Its peak.
    pub peak: Point,
    /// Deciles "1".."10", most profitable first.
    pub deciles: Vec<Group>,
    /// Breakdowns, in [`Dimension`] order (segments only when asked).
    pub breakdowns: Vec<(Dimension, Vec<Group>)>,
    /// The lowest net profits, lowest first.
    pub destroyers: Vec<Figures>,
}

/// Orders figures by net profit, highest first, ties by customer id.
pub fn rank(rows: &mut [Figures]) {
    rows.sort_by_cached_key(|f| (std::cmp::Reverse(f.net()), f.customer));
}

/// The decile (1..=10) of rank `r` (0-based) among `n`: ten groups of
/// sizes differing by at most one, the first the most profitable.
pub fn decile_of_rank(r: usize, n: usize) -> i16 {
    if n == 0 {
        return 0;
    }
    (r * 10 / n + 1) as i16
}

/// The lowest net profit of deciles 1..=9 over `nets` ranked highest first
/// (None for an empty decile).
pub fn decile_bounds(nets: &[Decimal]) -> Vec<Option<Decimal>> {
    let n = nets.len();
    (1..=9usize)
        .map(|d| {
            // The last rank r with r * 10 / n + 1 <= d.
            let last = (d * n).div_ceil(10);
            (last > 0).then(|| nets[last - 1])
        })
        .collect()
}

/// The decile of a net profit by the bounds of [`decile_bounds`]: the first
/// decile whose lowest member it reaches, else 10. 0 without bounds.
pub fn decile_by_bounds(net: Decimal, bounds: &[Option<Decimal>]) -> i16 {
    if bounds.iter().all(Option::is_none) {
        return 0;
    }
    for (i, b) in bounds.iter().enumerate() {
        if let Some(b) = b
            && net >= *b
        {
            return i as i16 + 1;
        }
    }
    10
}

/// The group key of a value tier.
pub fn tier_key(tier: i16) -> &'static str {
    match tier {
        1 => "top",
        2 => "high",
        3 => "medium",
        4 => "low",
        _ => "unscored",
    }
}

fn rung_key(rung: i16) -> String {
    match LadderRung::try_from(i32::from(rung)) {
        Ok(r) if r != LadderRung::Unspecified => r
            .as_str_name()
            .trim_start_matches("LADDER_RUNG_")
            .to_ascii_lowercase(),
        _ => "unclassified".into(),
    }
}

fn stage_key(stage: i16) -> String {
    match RelationshipStage::try_from(i32::from(stage)) {
        Ok(s) if s != RelationshipStage::Unspecified => s
            .as_str_name()
            .trim_start_matches("RELATIONSHIP_STAGE_")
            .to_ascii_lowercase(),
        _ => "unclassified".into(),
    }
}

fn cohort_key(first: Option<DateTime<Utc>>) -> String {
    first.map_or_else(
        || "none".into(),
        |t| format!("{:04}-{:02}", t.year(), t.month()),
    )
}

/// The point of the whale curve at `customers` of `n`, whose cumulative
/// net profit is `cumulative`, of a `total` net profit.
pub fn point(n: usize, customers: usize, cumulative: Decimal, total: Decimal) -> Point {
    Point {
        share: if n == 0 {
            0.0
        } else {
            customers as f64 / n as f64
        },
        customers: customers as i64,
        cumulative,
        profit_share: if total > Decimal::ZERO {
            to_f64(cumulative) / to_f64(total)
        } else {
            0.0
        },
    }
}

fn grouped(ranked: &[Figures], key: impl Fn(&Figures) -> String) -> Vec<Group> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for f in ranked {
        let k = key(f);
        groups
            .entry(k.clone())
            .or_insert_with(|| Group::named(k))
            .add(f);
    }
    groups.into_values().collect()
}

/// The customers at each of the `intervals` + 1 points of a whale curve
/// over `n` customers: round(k × n / intervals), half up, in integers.
pub fn curve_customers(n: usize, intervals: usize) -> Vec<usize> {
    let intervals = intervals.max(1);
    (0..=intervals)
        .map(|k| (2 * k * n + intervals) / (2 * intervals))
        .collect()
}

/// The whale curve at `intervals` equal steps over `n` customers of a
/// `total` net profit, with `cumulative(c)` the net profit of the `c` most
/// profitable.
pub fn curve(
    n: usize,
    intervals: usize,
    total: Decimal,
    cumulative: impl Fn(usize) -> Decimal,
) -> Vec<Point> {
    let steps = intervals.max(1);
    curve_customers(n, intervals)
        .into_iter()
        .enumerate()
        .map(|(k, c)| Point {
            share: k as f64 / steps as f64,
            ..point(n, c, cumulative(c), total)
        })
        .collect()
}

/// A group of `customers` from its sums.
pub fn group_of(
    key: impl Into<String>,
    customers: i64,
    revenue: Decimal,
    margin: Decimal,
    cost: Decimal,
) -> Group {
    Group {
        key: key.into(),
        customers,
        revenue,
        margin,
        cost,
        net: margin - cost,
    }
}

/// A ranked customer as a kept report holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// 1 for the most profitable.
    pub rank: i64,
    /// The customer.
    pub customer: Uuid,
    /// Revenue.
    pub revenue: Decimal,
    /// Gross margin.
    pub margin: Decimal,
    /// Cost to serve.
    pub cost: Decimal,
    /// The net profit of ranks 1..=rank.
    pub cumulative: Decimal,
}

/// Figures already [`rank`]ed, as a kept report holds them.
pub fn ranked(rows: &[Figures]) -> impl Iterator<Item = Ranked> + '_ {
    let mut cumulative = Decimal::ZERO;
    rows.iter().enumerate().map(move |(r, f)| {
        let cost = f.cost();
        cumulative += f.margin - cost;
        Ranked {
            rank: r as i64 + 1,
            customer: f.customer,
            revenue: f.revenue,
            margin: f.margin,
            cost,
            cumulative,
        }
    })
}

/// The report over every customer's figures (ranked in place): the whale
/// curve at `intervals` equal steps, the `destroyers` lowest net profits,
/// and one group per requested segment (its id and members).
pub fn report(
    rows: &mut [Figures],
    intervals: usize,
    destroyers: usize,
    segments: &[(String, HashSet<Uuid>)],
) -> Report {
    rank(rows);
    let rows: &[Figures] = rows;
    let n = rows.len();
    let mut total = Group::named("total");
    let mut lines = [Line::default(); 6];
    let mut deciles: Vec<Group> = (1..=10).map(|d| Group::named(d.to_string())).collect();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(Decimal::ZERO);
    let mut unprofitable = 0;
    for (r, f) in rows.iter().enumerate() {
        total.add(f);
        for (sum, l) in lines.iter_mut().zip(&f.lines) {
            sum.add(l);
        }
        let net = f.net();
        if net < Decimal::ZERO {
            unprofitable += 1;
        }
        prefix.push(prefix[r] + net);
        deciles[decile_of_rank(r, n) as usize - 1].add(f);
    }
    let curve = curve(n, intervals, total.net, |c| prefix[c]);
    let best = (0..=n)
        .max_by(|&a, &b| prefix[a].cmp(&prefix[b]).then(b.cmp(&a)))
        .unwrap_or(0);
    let peak = point(n, best, prefix[best], total.net);
    let mut breakdowns = vec![
        (
            Dimension::ValueTier,
            grouped(rows, |f| tier_key(f.tier).into()),
        ),
        (
            Dimension::Cohort,
            grouped(rows, |f| cohort_key(f.first_purchase)),
        ),
        (Dimension::Rung, grouped(rows, |f| rung_key(f.rung))),
        (Dimension::Stage, grouped(rows, |f| stage_key(f.stage))),
    ];
    if !segments.is_empty() {
        let mut groups: Vec<Group> = segments.iter().map(|(id, _)| Group::named(id)).collect();
        for f in rows {
            for (g, (_, members)) in groups.iter_mut().zip(segments) {
                if members.contains(&f.customer) {
                    g.add(f);
                }
            }
        }
        groups.sort_by(|a, b| a.key.cmp(&b.key));
        breakdowns.push((Dimension::Segment, groups));
    }
    let destroyers = rows.iter().rev().take(destroyers).cloned().collect();
    Report {
        total,
        lines,
        unprofitable,
        curve,
        peak,
        deciles,
        breakdowns,
        destroyers,
    }
}

// ------------------------------------------------------------ net CLV

/// The weight of the group's rate in a customer's cost per purchase, in
/// purchase days (k of `CustomerValue.cost_per_purchase`).
pub const PRIOR_PURCHASES: i64 = 2;

/// Cost per purchase day by ladder rung, and over every customer (rung 0).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rates {
    /// Per rung (proto value; 0 for everyone).
    pub by_rung: HashMap<i16, Decimal>,
}

impl Rates {
    /// Σ cost / Σ purchase days per rung and over everyone, from (rung,
    /// cost, purchase days) of every customer; a rung without purchases has
    /// no rate of its own.
    pub fn of(rows: impl IntoIterator<Item = (i16, Decimal, i64)>) -> Self {
        let mut sums: HashMap<i16, (Decimal, i64)> = HashMap::new();
        let mut all = (Decimal::ZERO, 0i64);
        for (rung, cost, days) in rows {
            all.0 += cost;
            all.1 += days;
            if rung != 0 {
                let e = sums.entry(rung).or_default();
                e.0 += cost;
                e.1 += days;
            }
        }
        let mut by_rung: HashMap<i16, Decimal> = sums
            .into_iter()
            .filter(|(_, (_, d))| *d > 0)
            .map(|(r, (c, d))| (r, c / Decimal::from(d)))
            .collect();
        by_rung.insert(
            0,
            if all.1 > 0 {
                all.0 / Decimal::from(all.1)
            } else {
                Decimal::ZERO
            },
        );
        Rates { by_rung }
    }

    /// The rate a customer of `rung` is shrunk towards.
    pub fn of_rung(&self, rung: i16) -> Decimal {
        self.by_rung
            .get(&rung)
            .or_else(|| self.by_rung.get(&0))
            .copied()
            .unwrap_or(Decimal::ZERO)
    }
}

/// The customer's expected cost per purchase, (C + k · c_g) / (x + k),
/// rounded half-even to the nano.
pub fn cost_per_purchase(cost: Decimal, purchase_days: i64, group_rate: Decimal) -> Decimal {
    let k = Decimal::from(PRIOR_PURCHASES);
    round_nano((cost + k * group_rate) / Decimal::from(purchase_days.max(0) + PRIOR_PURCHASES))
}

/// CLV net of the expected cost to serve: clv − D · c, D the discounted
/// expected purchases; rounded half-even to the nano.
pub fn net_clv(clv: Decimal, discounted: f64, cost_per_purchase: Decimal) -> Decimal {
    let d = if discounted.is_finite() && discounted > 0.0 {
        Decimal::from_f64_retain(discounted.min(1e12)).unwrap_or(Decimal::ZERO)
    } else {
        Decimal::ZERO
    };
    round_nano(clv - d * cost_per_purchase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(id: u128, margin: i64, cost: i64) -> Figures {
        let mut lines = [Line::default(); 6];
        lines[0] = Line {
            count: 1,
            hours: 0.0,
            cost: Decimal::from(cost),
        };
        Figures {
            customer: Uuid::from_u128(id),
            purchases: 1,
            purchase_days: 1,
            revenue: Decimal::from(margin * 2),
            returns: 0,
            refunds: Decimal::ZERO,
            margin: Decimal::from(margin),
            lines,
            first_purchase: None,
            rung: 0,
            stage: 0,
            tier: 0,
        }
    }

    #[test]
    fn whale_curve_rises_to_a_peak_above_the_total() {
        // Nets: 100, 50, 10, -20, -40 → total 100, peak 160 after 3 of 5.
        let mut rows = vec![
            fig(1, 110, 10),
            fig(2, 60, 10),
            fig(3, 20, 10),
            fig(4, 0, 20),
            fig(5, 0, 40),
        ];
        let r = report(&mut rows, 10, 2, &[]);
        assert_eq!(r.total.net, Decimal::from(100));
        assert_eq!(r.total.customers, 5);
        assert_eq!(r.unprofitable, 2);
        assert_eq!(r.peak.customers, 3);
        assert_eq!(r.peak.cumulative, Decimal::from(160));
        assert!((r.peak.profit_share - 1.6).abs() < 1e-12);
        assert!((r.peak.share - 0.6).abs() < 1e-12);
        assert_eq!(r.curve.len(), 11);
        // 0.1 × 5 = 0.5 rounds up to the first customer; 0.3 → 1.5 → 2.
        let at: Vec<(i64, i64)> = r
            .curve
            .iter()
            .map(|p| (p.customers, p.cumulative.try_into().unwrap()))
            .collect();
        assert_eq!(
            at,
            vec![
                (0, 0),
                (1, 100),
                (1, 100),
                (2, 150),
                (2, 150),
                (3, 160),
                (3, 160),
                (4, 140),
                (4, 140),
                (5, 100),
                (5, 100)
            ]
        );
        let destroyers: Vec<u128> = r.destroyers.iter().map(|f| f.customer.as_u128()).collect();
        assert_eq!(destroyers, vec![5, 4]);
        // Five customers fill deciles 1, 3, 5, 7, 9.
        let sizes: Vec<i64> = r.deciles.iter().map(|g| g.customers).collect();
        assert_eq!(sizes, vec![1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
        assert_eq!(r.deciles[8].net, Decimal::from(-40));
        assert_eq!(r.lines[0].cost, Decimal::from(90));
        assert_eq!(r.lines[0].count, 5);
    }

    #[test]
    fn kept_ranks_draw_the_same_curve_at_any_step() {
        let mut rows: Vec<Figures> = (1..=23)
            .map(|i| fig(i, (i as i64 * 37) % 50, (i as i64 * 11) % 30))
            .collect();
        let r = report(&mut rows, 10, 0, &[]);
        let kept: Vec<Ranked> = ranked(&rows).collect();
        assert_eq!(kept.len(), 23);
        assert_eq!(kept[0].rank, 1);
        assert_eq!(kept[22].cumulative, r.total.net);
        // Most profitable first, and each cumulative adds the rank's net.
        assert!(
            kept.windows(2)
                .all(|w| w[0].margin - w[0].cost >= w[1].margin - w[1].cost
                    && w[1].cumulative == w[0].cumulative + w[1].margin - w[1].cost)
        );
        let at = |c: usize| {
            if c == 0 {
                Decimal::ZERO
            } else {
                kept[c - 1].cumulative
            }
        };
        for k in [10, 13, 23, 100, 1000] {
            let live = report(&mut rows, k, 0, &[]).curve;
            assert_eq!(curve(23, k, r.total.net, at), live, "{k} intervals");
        }
        let sums = kept
            .iter()
            .take(4)
            .fold((0, Decimal::ZERO, Decimal::ZERO), |a, k| {
                (a.0 + 1, a.1 + k.margin, a.2 + k.cost)
            });
        let g = group_of("top4", sums.0, Decimal::ZERO, sums.1, sums.2);
        assert_eq!(g.net, kept[3].cumulative);
        assert_eq!(
            curve_customers(5, 10),
            vec![0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        );
    }

    #[test]
    fn a_base_that_only_loses_peaks_at_nobody() {
        let r = report(&mut [fig(1, 0, 5), fig(2, 0, 7)], 10, 10, &[]);
        assert_eq!(r.peak.customers, 0);
        assert_eq!(r.peak.cumulative, Decimal::ZERO);
        assert_eq!(r.peak.profit_share, 0.0);
        assert_eq!(r.destroyers.len(), 2);
        let empty = report(&mut [], 100, 10, &[]);
        assert_eq!(empty.curve.len(), 101);
        assert_eq!(empty.peak.customers, 0);
        assert_eq!(empty.total.customers, 0);
    }

    #[test]
    fn breakdowns_group_by_key_and_segments_overlap() {
        let mut a = fig(1, 10, 0);
        a.tier = 1;
        a.rung = 4;
        a.stage = 4;
        a.first_purchase = Some("2025-03-09T10:00:00Z".parse().unwrap());
        let b = fig(2, 20, 0);
        let seg = (
            "s".to_string(),
            [a.customer, b.customer].into_iter().collect(),
        );
        let r = report(&mut [a, b], 10, 0, &[seg]);
        let keys = |d: Dimension| -> Vec<(String, i64)> {
            r.breakdowns
                .iter()
                .find(|(x, _)| *x == d)
                .unwrap()
                .1
                .iter()
                .map(|g| (g.key.clone(), g.customers))
                .collect()
        };
        assert_eq!(
            keys(Dimension::ValueTier),
            vec![("top".into(), 1), ("unscored".into(), 1)]
        );
        assert_eq!(
            keys(Dimension::Cohort),
            vec![("2025-03".into(), 1), ("none".into(), 1)]
        );
        assert_eq!(
            keys(Dimension::Rung),
            vec![("partner".into(), 1), ("unclassified".into(), 1)]
        );
        assert_eq!(
            keys(Dimension::Stage),
            vec![("commitment".into(), 1), ("unclassified".into(), 1)]
        );
        assert_eq!(keys(Dimension::Segment), vec![("s".into(), 2)]);
    }

    #[test]
    fn deciles_by_rank_and_by_bounds_agree() {
        let nets: Vec<Decimal> = (0..37).rev().map(Decimal::from).collect();
        let bounds = decile_bounds(&nets);
        for (r, net) in nets.iter().enumerate() {
            assert_eq!(
                decile_of_rank(r, nets.len()),
                decile_by_bounds(*net, &bounds)
            );
        }
        assert_eq!(decile_by_bounds(Decimal::from(5), &[None; 9]), 0);
        let few = decile_bounds(&[Decimal::from(3), Decimal::from(1)]);
        assert_eq!(decile_by_bounds(Decimal::from(3), &few), 1);
        assert_eq!(decile_by_bounds(Decimal::from(1), &few), 6);
        assert_eq!(decile_of_rank(1, 2), 6);
    }

    #[test]
    fn cost_per_purchase_shrinks_towards_the_rung() {
        // Partners: C 100 over 4 days and C 20 over 6 → rate 12; nobody
        // else buys: the all-customer rate is (100 + 20 + 30) / 10 = 15.
        let rates = Rates::of([
            (4, Decimal::from(100), 4),
            (4, Decimal::from(20), 6),
            (1, Decimal::from(30), 0),
        ]);
        assert_eq!(rates.of_rung(4), Decimal::from(12));
        assert_eq!(rates.of_rung(1), Decimal::from(15));
        assert_eq!(rates.of_rung(0), Decimal::from(15));
        // (100 + 2 × 12) / (4 + 2) = 20.666666667 (half-even to the nano).
        assert_eq!(
            cost_per_purchase(Decimal::from(100), 4, rates.of_rung(4)),
            Decimal::new(20_666_666_667, 9)
        );
        // A stranger without purchases: (30 + 2 × 15) / 2 = 30.
        assert_eq!(
            cost_per_purchase(Decimal::from(30), 0, rates.of_rung(1)),
            Decimal::from(30)
        );
        assert_eq!(Rates::of([]).of_rung(3), Decimal::ZERO);
        // CLV 50 over 2.5 discounted purchases at 8 each: 50 − 20 = 30;
        // it can go negative.
        assert_eq!(
            net_clv(Decimal::from(50), 2.5, Decimal::from(8)),
            Decimal::from(30)
        );
        assert_eq!(
            net_clv(Decimal::from(10), 2.5, Decimal::from(8)),
            Decimal::from(-10)
        );
        assert_eq!(
            net_clv(Decimal::from(10), f64::NAN, Decimal::from(8)),
            Decimal::from(10)
        );
    }

    #[test]
    fn types_map_to_their_components() {
        use InteractionType as T;
        assert_eq!(
            Component::of_type(T::Call as i32),
            Some(Component::Contacts)
        );
        assert_eq!(
            Component::of_type(T::CampaignSent as i32),
            Some(Component::Campaigns)
        );
        assert_eq!(
            Component::of_type(T::Return as i32),
            Some(Component::Returns)
        );
        assert_eq!(Component::of_type(T::Purchase as i32), None);
        assert_eq!(Component::of_type(T::CampaignOpened as i32), None);
        assert!(is_contact_rate_type(T::SalesVisit as i32));
        assert!(!is_contact_rate_type(T::Complaint as i32));
        let protos: Vec<i32> = Component::ALL.iter().map(|c| c.to_proto()).collect();
        assert_eq!(protos, vec![1, 2, 3, 4, 5, 6]);
    }
}
