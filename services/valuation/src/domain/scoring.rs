//! Scoring one customer with a transaction model and the Gamma-Gamma spend
//! model: P(alive), expected purchases, expected order value, discounted CLV
//! and historical value; and the value tiers over a tenant's customers.

use rust_decimal::Decimal;

use super::bgbb::BgBb;
use super::bgnbd::BgNbd;
use super::clv::discounted_clv;
use super::data::Observation;
use super::discrete::Opportunities;
use super::gamma_gamma::GammaGamma;
use super::mbgnbd::MbgNbd;
use super::money;
use super::pareto_nbd::ParetoNbd;
use super::sbg::Sbg;

/// A period unit: day, week, month or year (`rapport.common.v1.PeriodUnit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// One day.
    Day,
    /// Seven days.
    Week,
    /// 30.4375 days.
    Month,
    /// 365.25 days.
    Year,
}

impl Unit {
    /// From the proto enum value (DAY = 1, WEEK = 2, MONTH = 3, YEAR = 4).
    pub fn from_proto(v: i32) -> Option<Self> {
        match v {
            1 => Some(Unit::Day),
            2 => Some(Unit::Week),
            3 => Some(Unit::Month),
            4 => Some(Unit::Year),
            _ => None,
        }
    }

    /// The proto enum value.
    pub fn to_proto(self) -> i32 {
        match self {
            Unit::Day => 1,
            Unit::Week => 2,
            Unit::Month => 3,
            Unit::Year => 4,
        }
    }

    /// Length in days.
    pub fn days(self) -> f64 {
        match self {
            Unit::Day => 1.0,
            Unit::Week => 7.0,
            Unit::Month => 30.4375,
            Unit::Year => 365.25,
        }
    }

    /// One year in this unit: the default horizon.
    pub fn default_horizon(self) -> i32 {
        match self {
            Unit::Day => 365,
            Unit::Week => 52,
            Unit::Month => 12,
            Unit::Year => 1,
        }
    }

    /// Ten years in this unit: the longest horizon.
    pub fn max_horizon(self) -> i32 {
        match self {
            Unit::Day => 3653,
            Unit::Week => 522,
            Unit::Month => 120,
            Unit::Year => 10,
        }
    }

    /// Periods in a year (365.25 days).
    pub fn per_year(self) -> f64 {
        365.25 / self.days()
    }

    /// The rate per period equivalent to 10 % a year, exactly.
    pub fn default_discount_rate(self) -> f64 {
        self.period_rate(0.1)
    }

    /// The rate per period equivalent to the annual rate `annual`:
    /// (1 + annual)^(1/n) − 1 with n periods a year.
    pub fn period_rate(self, annual: f64) -> f64 {
        (annual.ln_1p() / self.per_year()).exp_m1()
    }

    /// The annual rate equivalent to `rate` per period: (1 + rate)^n − 1.
    pub fn annual_rate(self, rate: f64) -> f64 {
        (rate.ln_1p() * self.per_year()).exp_m1()
    }
}

/// The settings of a scoring run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Periods of expected purchases and CLV.
    pub horizon_periods: i32,
    /// The transaction model's unit.
    pub unit: Unit,
    /// Discount rate per period, in [0, 1).
    pub discount_rate: f64,
    /// Share of revenue that is margin, in (0, 1].
    pub margin_ratio: f64,
}

/// A fitted transaction model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TransactionModel {
    /// BG/NBD.
    BgNbd(BgNbd),
    /// Pareto/NBD.
    ParetoNbd(ParetoNbd),
    /// MBG/NBD.
    MbgNbd(MbgNbd),
    /// BG/BB.
    BgBb(BgBb),
    /// sBG.
    Sbg(Sbg),
}

/// One customer's history as the transaction models take it: in continuous
/// time (BG/NBD, Pareto/NBD, MBG/NBD) and in opportunities (BG/BB, sBG).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    /// x, t_x and T in periods.
    pub observation: Observation,
    /// The same history in opportunities (zeros when not exported).
    pub opportunities: Opportunities,
}

impl History {
    /// A history for the continuous-time models only.
    pub fn continuous(observation: Observation) -> Self {
        Self {
            observation,
            opportunities: Opportunities::default(),
        }
    }
}

impl TransactionModel {
    /// Whether the model counts opportunities rather than time.
    pub fn discrete(&self) -> bool {
        matches!(self, TransactionModel::BgBb(_) | TransactionModel::Sbg(_))
    }

    /// P(alive) at the end of the observation, in [0, 1].
    pub fn p_alive(&self, h: &History) -> Option<f64> {
        let o = &h.observation;
        let p = match self {
            TransactionModel::BgNbd(m) => Some(m.p_alive(o)),
            TransactionModel::ParetoNbd(m) => m.p_alive(o),
            TransactionModel::MbgNbd(m) => Some(m.p_alive(o)),
            TransactionModel::BgBb(m) => Some(m.p_alive(&h.opportunities)),
            TransactionModel::Sbg(m) => Some(m.p_alive(&h.opportunities)),
        }?;
        p.is_finite().then_some(p.clamp(0.0, 1.0))
    }

    /// Conditional expected purchases in the next `horizon` periods. The
    /// closed forms have a removable singularity (a = 1 for BG/NBD and
    /// MBG/NBD, s = 1 for Pareto/NBD); there the parameter is nudged by a
    /// relative 1e-9. For BG/BB and sBG the horizon counts whole future
    /// opportunities.
    pub fn expected(&self, h: &History, horizon: f64) -> Option<f64> {
        let o = &h.observation;
        let v = match *self {
            TransactionModel::BgBb(m) => {
                Some(m.expected_purchases(&h.opportunities, opportunities(horizon)))
            }
            TransactionModel::Sbg(m) => {
                Some(m.expected_purchases(&h.opportunities, opportunities(horizon)))
            }
            TransactionModel::BgNbd(m) => m.expected_purchases(o, horizon).or_else(|| {
                BgNbd {
                    a: m.a * (1.0 + 1e-9),
                    ..m
                }
                .expected_purchases(o, horizon)
            }),
            TransactionModel::ParetoNbd(m) => m.expected_purchases(o, horizon).or_else(|| {
                ParetoNbd {
                    s: m.s * (1.0 + 1e-9),
                    ..m
                }
                .expected_purchases(o, horizon)
            }),
            TransactionModel::MbgNbd(m) => m.expected_purchases(o, horizon).or_else(|| {
                MbgNbd {
                    a: m.a * (1.0 + 1e-9),
                    ..m
                }
                .expected_purchases(o, horizon)
            }),
        }?;
        v.is_finite().then_some(v.max(0.0))
    }
}

/// Whole opportunities in a horizon (clamped to 0..=10,000).
fn opportunities(horizon: f64) -> u32 {
    horizon.clamp(0.0, Opportunities::MAX as f64) as u32
}

/// One customer's model inputs and money to date, in the spend model's
/// currency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Input {
    /// Repeat purchase days.
    pub frequency: i64,
    /// First to last purchase, in periods.
    pub recency: f64,
    /// First purchase to the score time, in periods.
    pub t: f64,
    /// Mean repeat purchase day value in the spend model's currency (0 without).
    pub monetary_value: f64,
    /// Sum of purchases in the currency.
    pub historical_value: Decimal,
    /// Sum of recorded margins in the currency.
    pub historical_margin: Decimal,
    /// The history in opportunities (zeros when not exported).
    pub opportunities: Opportunities,
}

impl Input {
    /// The history the transaction models take.
    pub fn history(&self) -> History {
        History {
            observation: self.observation(),
            opportunities: self.opportunities,
        }
    }

    /// The model observation (T is kept positive: a customer acquired at the
    /// very score time has an age of a millionth of a period).
    pub fn observation(&self) -> Observation {
        let t = self.t.max(1e-6);
        Observation {
            frequency: self.frequency.max(0) as f64,
            recency: self.recency.clamp(0.0, t),
            age: t,
        }
    }
}

/// One customer's scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// P(alive).
    pub p_alive: f64,
    /// Expected purchases over the horizon.
    pub expected_purchases: f64,
    /// Expected revenue per purchase.
    pub expected_order_value: Decimal,
    /// Discounted CLV of margin over the horizon.
    pub clv: Decimal,
    /// Margin to date.
    pub historical_value: Decimal,
    /// Discounted expected purchases over the horizon (D, so that
    /// clv = margin ratio × expected order value × D).
    pub discounted_purchases: f64,
}

/// Historical value: recorded margins, or revenue times the margin ratio
/// when no margin is recorded.
pub fn historical_value(input: &Input, margin_ratio: f64) -> Decimal {
    if input.historical_margin != Decimal::ZERO {
        return input.historical_margin;
    }
    let ratio = Decimal::from_f64_retain(margin_ratio).unwrap_or(Decimal::ONE);
    money::round_nano(input.historical_value * ratio)
}

/// The purchase-process part of a score, which depends only on (x, t_x, T)
/// and can be shared by customers with the same history: P(alive), expected
/// purchases over the horizon, and the discounted expected purchases
/// Σ (E[X(i)] − E[X(i−1)]) / (1 + d)^i.
pub fn purchase_scores(
    model: &TransactionModel,
    o: &History,
    settings: &Settings,
) -> Option<(f64, f64, f64)> {
    let p_alive = model.p_alive(o)?;
    let horizon = settings.horizon_periods.max(0) as u32;
    // The discrete models give each opportunity's expectation at once: their
    // running sums are the cumulative expectations, read without summing
    // again for every period.
    let steps = match model {
        TransactionModel::BgBb(m) => Some(m.increments(&o.opportunities, horizon)),
        TransactionModel::Sbg(m) => Some(m.increments(&o.opportunities, horizon)),
        _ => None,
    };
    let cumulative: Option<Vec<f64>> = steps.map(|steps| {
        std::iter::once(0.0)
            .chain(steps.iter().scan(0.0, |sum, e| {
                *sum += e;
                Some(*sum)
            }))
            .collect()
    });
    let expected_by = |h: f64| match &cumulative {
        Some(c) => c.get(h as usize).copied().filter(|v| v.is_finite()),
        None => model.expected(o, h),
    };
    let expected = expected_by(f64::from(horizon))?;
    let discounted = discounted_clv(expected_by, 1.0, 1.0, horizon, settings.discount_rate)?;
    Some((p_alive, expected, discounted))
}

/// Scores one customer given its purchase scores (see [`purchase_scores`]).
pub fn score(
    spend: &GammaGamma,
    input: &Input,
    purchase: (f64, f64, f64),
    settings: &Settings,
) -> Option<Scored> {
    let (p_alive, expected_purchases, discounted) = purchase;
    // Customers without repeat purchases in the currency get the population mean.
    let x = if input.monetary_value > 0.0 {
        input.frequency as f64
    } else {
        0.0
    };
    let order_value = spend.expected_average_value(x, input.monetary_value)?;
    let clv = settings.margin_ratio * order_value * discounted;
    Some(Scored {
        p_alive,
        expected_purchases,
        expected_order_value: money::from_f64(order_value),
        clv: money::from_f64(clv),
        historical_value: historical_value(input, settings.margin_ratio),
        discounted_purchases: discounted,
    })
}

/// A value tier (`rapport.valuation.v1.ValueTier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Top 5 %.
    Top,
    /// Next 15 %.
    High,
    /// Next 30 %.
    Medium,
    /// Bottom half.
    Low,
}

impl Tier {
    /// The proto enum value.
    pub fn to_proto(self) -> i32 {
        match self {
            Tier::Top => 1,
            Tier::High => 2,
            Tier::Medium => 3,
            Tier::Low => 4,
        }
    }

    /// From the proto enum value.
    pub fn from_proto(v: i32) -> Option<Self> {
        match v {
            1 => Some(Tier::Top),
            2 => Some(Tier::High),
            3 => Some(Tier::Medium),
            4 => Some(Tier::Low),
            _ => None,
        }
    }
}

/// The tier of the customer at 0-based `position` in the ranking of `n`
/// customers by CLV (highest first, ties by customer id): top 5 %, next 15 %,
/// next 30 %, bottom half, each group ceil(share × n) customers.
pub fn tier_at(position: usize, n: usize) -> Tier {
    let rank = position + 1;
    let cut = |percent: usize| (percent * n).div_ceil(100);
    if rank <= cut(5) {
        Tier::Top
    } else if rank <= cut(20) {
        Tier::High
    } else if rank <= cut(50) {
        Tier::Medium
    } else {
        Tier::Low
    }
}

/// The smallest CLVs of the top, high and medium tiers of a run: the CLV
/// thresholds background re-scoring places customers with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Thresholds {
    /// Smallest CLV in the top tier.
    pub top: Option<Decimal>,
    /// Smallest CLV in the high tier.
    pub high: Option<Decimal>,
    /// Smallest CLV in the medium tier.
    pub medium: Option<Decimal>,
}

impl Thresholds {
    /// From CLVs sorted highest first.
    pub fn from_ranked(clvs: &[Decimal]) -> Self {
        let n = clvs.len();
        let last_of = |tier: Tier| {
            (0..n)
                .rev()
                .find(|&i| tier_at(i, n) == tier)
                .map(|i| clvs[i])
        };
        Self {
            top: last_of(Tier::Top),
            high: last_of(Tier::High),
            medium: last_of(Tier::Medium),
        }
    }

    /// The tier of a CLV between runs.
    pub fn tier(&self, clv: Decimal) -> Tier {
        if self.top.is_some_and(|t| clv >= t) {
            Tier::Top
        } else if self.high.is_some_and(|t| clv >= t) {
            Tier::High
        } else if self.medium.is_some_and(|t| clv >= t) {
            Tier::Medium
        } else {
            Tier::Low
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annual_and_period_rates_convert_exactly() {
        for unit in [Unit::Day, Unit::Week, Unit::Month] {
            let d = unit.default_discount_rate();
            assert!((unit.annual_rate(d) - 0.1).abs() < 1e-15, "{unit:?}");
            assert_eq!(unit.period_rate(0.0), 0.0);
        }
        // 1.1^(7/365.25) − 1 and 1.1^(1/12) − 1, to 1e-12.
        assert!((Unit::Week.default_discount_rate() - 0.001_828_284_633_643).abs() < 1e-12);
        assert!((Unit::Month.default_discount_rate() - 0.007_974_140_428_904).abs() < 1e-12);
        // The rounded weekly rate the contract used to default to is 9.9984 % a year.
        assert!((Unit::Week.annual_rate(0.001828) - 0.099_984).abs() < 1e-6);
    }

    fn settings() -> Settings {
        Settings {
            horizon_periods: 52,
            unit: Unit::Week,
            discount_rate: 0.001828,
            margin_ratio: 0.5,
        }
    }

    const BG: TransactionModel = TransactionModel::BgNbd(BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    });
    const GG: GammaGamma = GammaGamma {
        p: 6.25,
        q: 3.74,
        gamma: 15.44,
    };

    fn input(x: i64, tx: f64, t: f64, m: f64) -> Input {
        Input {
            frequency: x,
            recency: tx,
            t,
            monetary_value: m,
            historical_value: Decimal::from(100),
            historical_margin: Decimal::ZERO,
            opportunities: Opportunities::default(),
        }
    }

    #[test]
    fn scores_follow_the_formulas() {
        let s = settings();
        let i = input(2, 30.43, 38.86, 22.35);
        let o = i.history();
        let purchase = purchase_scores(&BG, &o, &s).unwrap();
        let scored = score(&GG, &i, purchase, &s).unwrap();
        assert!((0.0..=1.0).contains(&scored.p_alive));
        let aov = GG.expected_average_value(2.0, 22.35).unwrap();
        let want = 0.5 * aov * purchase.2;
        assert!((money::to_f64(scored.clv) - want).abs() < 1e-6);
        // Discounting lowers value below the undiscounted expected purchases.
        assert!(purchase.2 < purchase.1);
        assert_eq!(scored.historical_value, Decimal::from(50));
        // Without repeat purchases in the currency: the population mean.
        let new = score(&GG, &input(0, 0.0, 10.0, 0.0), purchase, &s).unwrap();
        assert_eq!(
            new.expected_order_value,
            money::from_f64(6.25 * 15.44 / 2.74)
        );
        // Recorded margins win over the ratio.
        let mut with_margin = i;
        with_margin.historical_margin = Decimal::from(7);
        assert_eq!(historical_value(&with_margin, 0.5), Decimal::from(7));
    }

    #[test]
    fn tiers_split_the_ranking() {
        let n = 100;
        let tiers: Vec<Tier> = (0..n).map(|i| tier_at(i, n)).collect();
        let count = |t| tiers.iter().filter(|&&x| x == t).count();
        assert_eq!(
            (
                count(Tier::Top),
                count(Tier::High),
                count(Tier::Medium),
                count(Tier::Low)
            ),
            (5, 15, 30, 50)
        );
        assert_eq!(tier_at(0, 1), Tier::Top);
        assert_eq!(tier_at(1, 3), Tier::Medium);
        assert_eq!(tier_at(2, 3), Tier::Low);
        let clvs: Vec<Decimal> = (0..n).rev().map(|v| Decimal::from(v as i64)).collect();
        let th = Thresholds::from_ranked(&clvs);
        assert_eq!(th.top, Some(Decimal::from(95)));
        assert_eq!(th.high, Some(Decimal::from(80)));
        assert_eq!(th.medium, Some(Decimal::from(50)));
        assert_eq!(th.tier(Decimal::from(96)), Tier::Top);
        assert_eq!(th.tier(Decimal::from(80)), Tier::High);
        assert_eq!(th.tier(Decimal::from(49)), Tier::Low);
    }

    #[test]
    fn units_match_the_contract() {
        assert_eq!(Unit::Week.default_horizon(), 52);
        assert_eq!(Unit::Month.max_horizon(), 120);
        for u in [Unit::Day, Unit::Week, Unit::Month] {
            let exact = 1.1f64.powf(1.0 / u.per_year()) - 1.0;
            assert!((u.default_discount_rate() - exact).abs() < 1e-6, "{u:?}");
            assert_eq!(Unit::from_proto(u.to_proto()), Some(u));
        }
    }
}
