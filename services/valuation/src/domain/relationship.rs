//! Relationship quality (satisfaction, trust, commitment; each 0-100 with
//! the inputs shown) and share of wallet, with the default scoring of
//! `rapport.valuation.v1.RelationshipScores`.

use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::valuation::v1::{DimensionScore, ScoreInput, ShareOfWallet};
use rust_decimal::Decimal;

use super::money;

/// What the scores are computed from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inputs {
    /// Mean CSAT (1-5) and the number of answers.
    pub csat: Option<(f64, i64)>,
    /// Mean NPS score (0-10) and the number of answers.
    pub nps: Option<(f64, i64)>,
    /// Complaints, all time.
    pub complaints: i64,
    /// Open service requests and open complaints.
    pub open_issues: i64,
    /// Mean resolution time in days and the number of resolved requests.
    pub resolution: Option<(f64, i64)>,
    /// Days since the first purchase.
    pub tenure_days: Option<f64>,
    /// Repeat purchases per period of age, its percentile rank (0-100) among
    /// the tenant's scored customers, and the unit's name ("week").
    pub repeat_rate: Option<(f64, f64, &'static str)>,
}

fn input(name: &str, value: String, score: Option<f64>, weight: f64) -> ScoreInput {
    ScoreInput {
        name: name.into(),
        value,
        score: score.map(|s| s.clamp(0.0, 100.0)),
        weight,
    }
}

/// Weighted mean of the known inputs' scores, weights renormalised.
fn dimension(inputs: Vec<ScoreInput>) -> DimensionScore {
    let (mut sum, mut weights) = (0.0, 0.0);
    for i in &inputs {
        if let Some(s) = i.score {
            sum += s * i.weight;
            weights += i.weight;
        }
    }
    DimensionScore {
        score: (weights > 0.0).then(|| (sum / weights).clamp(0.0, 100.0)),
        inputs,
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Satisfaction: CSAT (1-5 → 0-100) and NPS (0-10 → 0-100), weights 0.5 each.
pub fn satisfaction(i: &Inputs) -> DimensionScore {
    dimension(vec![
        match i.csat {
            Some((m, n)) => input(
                "mean_csat",
                format!("{m:.1} of 5 ({})", plural(n, "answer", "answers")),
                Some((m - 1.0) / 4.0 * 100.0),
                0.5,
            ),
            None => input("mean_csat", "no answer".into(), None, 0.5),
        },
        match i.nps {
            Some((m, n)) => input(
                "mean_nps",
                format!("{m:.1} of 10 ({})", plural(n, "answer", "answers")),
                Some(m * 10.0),
                0.5,
            ),
            None => input("mean_nps", "no answer".into(), None, 0.5),
        },
    ])
}

/// Trust: complaints, open issues and mean resolution time, weights 1/3 each.
pub fn trust(i: &Inputs) -> DimensionScore {
    let third = 1.0 / 3.0;
    dimension(vec![
        input(
            "complaint_count",
            plural(i.complaints, "complaint", "complaints"),
            Some(100.0 / (1.0 + i.complaints.max(0) as f64)),
            third,
        ),
        input(
            "open_issues",
            plural(i.open_issues, "open issue", "open issues"),
            Some(100.0 / (1.0 + i.open_issues.max(0) as f64)),
            third,
        ),
        match i.resolution {
            Some((days, n)) => input(
                "mean_resolution_time",
                format!(
                    "{days:.1} days ({})",
                    plural(n, "resolved request", "resolved requests")
                ),
                Some(((14.0 - days) / 13.0 * 100.0).clamp(0.0, 100.0)),
                third,
            ),
            None => input(
                "mean_resolution_time",
                "no resolved service request".into(),
                None,
                third,
            ),
        },
    ])
}

/// Commitment: tenure (730 days → 100) and the repeat rate's percentile,
/// weights 0.5 each.
pub fn commitment(i: &Inputs) -> DimensionScore {
    dimension(vec![
        match i.tenure_days {
            Some(d) => input(
                "tenure",
                format!("{d:.0} days since the first purchase"),
                Some((d / 730.0 * 100.0).min(100.0)),
                0.5,
            ),
            None => input("tenure", "no purchase".into(), None, 0.5),
        },
        match i.repeat_rate {
            Some((rate, pct, unit)) => input(
                "repeat_rate",
                format!("{rate:.3} repeat purchases a {unit} ({pct:.0}th percentile)"),
                Some(pct),
                0.5,
            ),
            None => input("repeat_rate", "not scored".into(), None, 0.5),
        },
    ])
}

/// The mean of the dimension scores that are set.
pub fn quality(dims: &[&DimensionScore]) -> Option<f64> {
    let known: Vec<f64> = dims.iter().filter_map(|d| d.score).collect();
    (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
}

/// Percentile rank (0-100) from the number of customers with a smaller and
/// an equal value (the customer included) out of `n`.
pub fn percentile_rank(smaller: i64, equal: i64, n: i64) -> f64 {
    if n <= 0 {
        return 0.0;
    }
    100.0 * (smaller as f64 + 0.5 * equal as f64) / n as f64
}

/// Share of wallet from the profile's wallet, the customer's purchase totals
/// per currency, the number of purchases and the tenure in days. `None`
/// when the wallet is unknown or zero, or the customer has purchases but
/// none in the wallet's currency.
pub fn share_of_wallet(
    wallet: Option<&Money>,
    totals: &[(String, Decimal)],
    purchases: i64,
    tenure_days: Option<f64>,
) -> Option<ShareOfWallet> {
    let wallet_money = wallet?;
    let wallet_amount = money::from_money(wallet_money)?;
    if wallet_amount <= Decimal::ZERO {
        return None;
    }
    let currency = wallet_money.currency_code.as_str();
    let total = match totals.iter().find(|(c, _)| c == currency) {
        Some((_, t)) => *t,
        None if purchases == 0 => Decimal::ZERO,
        None => return None,
    };
    let years = tenure_days.unwrap_or(0.0) / 365.25;
    let years = Decimal::from_f64_retain(years.max(1.0)).unwrap_or(Decimal::ONE);
    let yearly = money::round_nano(total / years);
    let ratio = money::to_f64(yearly) / money::to_f64(wallet_amount);
    Some(ShareOfWallet {
        category_wallet: Some(money::to_money(currency, wallet_amount)),
        yearly_spend: Some(money::to_money(currency, yearly)),
        share: ratio.clamp(0.0, 1.0),
        capped: ratio > 1.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scoring() {
        let i = Inputs {
            csat: Some((4.0, 2)),
            nps: None,
            complaints: 1,
            open_issues: 0,
            resolution: Some((7.5, 2)),
            tenure_days: Some(365.0),
            repeat_rate: Some((0.5, 80.0, "week")),
        };
        let s = satisfaction(&i);
        assert_eq!(s.score, Some(75.0));
        assert_eq!(s.inputs[1].score, None);
        let t = trust(&i);
        assert!((t.score.unwrap() - (50.0 + 100.0 + 50.0) / 3.0).abs() < 1e-9);
        let c = commitment(&i);
        assert!((c.score.unwrap() - 65.0).abs() < 1e-9);
        let q = quality(&[&s, &t, &c]).unwrap();
        assert!((q - (75.0 + 200.0 / 3.0 + 65.0) / 3.0).abs() < 1e-9);
        let empty = satisfaction(&Inputs::default());
        assert_eq!(empty.score, None);
        assert_eq!(quality(&[&empty]), None);
        assert_eq!(percentile_rank(1, 1, 2), 75.0);
    }

    #[test]
    fn resolution_time_is_linear_between_one_and_fourteen_days() {
        let at = |d| {
            trust(&Inputs {
                resolution: Some((d, 1)),
                ..Default::default()
            })
            .inputs[2]
                .score
                .unwrap()
        };
        assert_eq!(at(0.5), 100.0);
        assert_eq!(at(1.0), 100.0);
        assert_eq!(at(14.0), 0.0);
        assert!((at(7.5) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn share_of_wallet_rules() {
        let wallet = Money {
            currency_code: "EUR".into(),
            units: 1000,
            nanos: 0,
        };
        let totals = vec![("EUR".to_string(), Decimal::from(1000))];
        let s = share_of_wallet(Some(&wallet), &totals, 3, Some(730.5)).unwrap();
        assert_eq!(s.yearly_spend.unwrap().units, 500);
        assert!((s.share - 0.5).abs() < 1e-12);
        // A new customer's spend is not extrapolated; a too-low wallet caps.
        let s = share_of_wallet(
            Some(&wallet),
            &[("EUR".into(), Decimal::from(3000))],
            1,
            Some(30.0),
        )
        .unwrap();
        assert_eq!((s.share, s.capped), (1.0, true));
        // No purchase at all: 0; purchases only in another currency: unset.
        assert_eq!(
            share_of_wallet(Some(&wallet), &[], 0, None).unwrap().share,
            0.0
        );
        assert!(
            share_of_wallet(Some(&wallet), &[("USD".into(), Decimal::ONE)], 1, Some(5.0)).is_none()
        );
        assert!(share_of_wallet(None, &totals, 1, Some(5.0)).is_none());
        let zero = Money { units: 0, ..wallet };
        assert!(share_of_wallet(Some(&zero), &totals, 1, Some(5.0)).is_none());
    }
}
