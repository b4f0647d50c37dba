//! Fitting one model kind on purchase-history summaries: data preparation
//! (who takes part), moment-based starting values, the maximum-likelihood
//! fit, and the calibration/holdout validation of transaction models.

use std::time::{Duration, Instant};

use super::bgbb::BgBb;
use super::bgnbd::BgNbd;
use super::data::{Observation, RfmData, SpendData};
use super::discrete::{DiscreteData, Opportunities};
use super::exact;
use super::fit::{FitError, Fitted, maximise, maximise_to};
use super::gamma_gamma::GammaGamma;
use super::holdout::{HoldoutCase, Validation, validate};
use super::mbgnbd::MbgNbd;
use super::newton::{self, Derivatives, Likelihood};
use super::pareto_nbd::ParetoNbd;
use super::sbg::Sbg;
use super::scoring::{History, TransactionModel};

/// A log-likelihood over the parameters.
type LogLikelihood<'a> = Box<dyn Fn(&[f64]) -> f64 + 'a>;

/// How far the derivative-free search goes (relative agreement of the
/// simplex's likelihoods) before Newton's method on exact derivatives
/// finishes the fit.
const COARSE: f64 = 1e-6;

/// Fewest customers a fit takes.
pub const MIN_CUSTOMERS: usize = 10;

/// A model kind (`rapport.valuation.v1.ModelKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// BG/NBD.
    BgNbd,
    /// Pareto/NBD.
    ParetoNbd,
    /// Gamma-Gamma.
    GammaGamma,
    /// MBG/NBD.
    MbgNbd,
    /// BG/BB.
    BgBb,
    /// sBG.
    Sbg,
}

impl Kind {
    /// The transaction models, in the order scoring prefers them.
    pub const TRANSACTION: [Kind; 5] = [
        Kind::BgNbd,
        Kind::ParetoNbd,
        Kind::MbgNbd,
        Kind::BgBb,
        Kind::Sbg,
    ];

    /// Whether the model takes histories in discrete opportunities.
    pub fn discrete(self) -> bool {
        matches!(self, Kind::BgBb | Kind::Sbg)
    }

    /// From the proto enum value.
    pub fn from_proto(v: i32) -> Option<Self> {
        match v {
            1 => Some(Kind::BgNbd),
            2 => Some(Kind::ParetoNbd),
            3 => Some(Kind::GammaGamma),
            4 => Some(Kind::MbgNbd),
            5 => Some(Kind::BgBb),
            6 => Some(Kind::Sbg),
            _ => None,
        }
    }

    /// The proto enum value.
    pub fn to_proto(self) -> i32 {
        match self {
            Kind::BgNbd => 1,
            Kind::ParetoNbd => 2,
            Kind::GammaGamma => 3,
            Kind::MbgNbd => 4,
            Kind::BgBb => 5,
            Kind::Sbg => 6,
        }
    }

    /// The name used in messages: "BG/NBD", "Pareto/NBD", "Gamma-Gamma",
    /// "MBG/NBD", "BG/BB", "sBG".
    pub fn display(self) -> &'static str {
        match self {
            Kind::BgNbd => "BG/NBD",
            Kind::ParetoNbd => "Pareto/NBD",
            Kind::GammaGamma => "Gamma-Gamma",
            Kind::MbgNbd => "MBG/NBD",
            Kind::BgBb => "BG/BB",
            Kind::Sbg => "sBG",
        }
    }

    /// The full enum value name, e.g. "MODEL_KIND_BG_NBD" (a metrics label).
    pub fn enum_name(self) -> &'static str {
        match self {
            Kind::BgNbd => "MODEL_KIND_BG_NBD",
            Kind::ParetoNbd => "MODEL_KIND_PARETO_NBD",
            Kind::GammaGamma => "MODEL_KIND_GAMMA_GAMMA",
            Kind::MbgNbd => "MODEL_KIND_MBG_NBD",
            Kind::BgBb => "MODEL_KIND_BG_BB",
            Kind::Sbg => "MODEL_KIND_SBG",
        }
    }

    /// Parameter names, in order.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Kind::BgNbd => &BgNbd::NAMES,
            Kind::ParetoNbd => &ParetoNbd::NAMES,
            Kind::GammaGamma => &GammaGamma::NAMES,
            Kind::MbgNbd => &MbgNbd::NAMES,
            Kind::BgBb => &BgBb::NAMES,
            Kind::Sbg => &Sbg::NAMES,
        }
    }

    /// The transaction model with `params`, for every kind but Gamma-Gamma.
    pub fn transaction_model(self, params: &[f64]) -> Option<TransactionModel> {
        match (self, params.len()) {
            (Kind::BgNbd, 4) => Some(TransactionModel::BgNbd(BgNbd::from_slice(params))),
            (Kind::ParetoNbd, 4) => {
                Some(TransactionModel::ParetoNbd(ParetoNbd::from_slice(params)))
            }
            (Kind::MbgNbd, 4) => Some(TransactionModel::MbgNbd(MbgNbd::from_slice(params))),
            (Kind::BgBb, 4) => Some(TransactionModel::BgBb(BgBb::from_slice(params))),
            (Kind::Sbg, 2) => Some(TransactionModel::Sbg(Sbg::from_slice(params))),
            _ => None,
        }
    }
}

/// One customer's summary, as a fit takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitCase {
    /// Repeat purchase days.
    pub frequency: i64,
    /// First to last purchase, in periods.
    pub recency: f64,
    /// Age at the calibration end, in periods.
    pub t: f64,
    /// Mean repeat purchase value; taken only when `in_currency`.
    pub monetary_value: f64,
    /// Whether the summary is in the model's currency.
    pub in_currency: bool,
    /// Holdout purchase days.
    pub holdout_purchases: i64,
    /// The history in opportunities (BG/BB and sBG; None without).
    pub opportunities: Option<Opportunities>,
    /// Holdout opportunities and those with a purchase (BG/BB and sBG).
    pub holdout_opportunities: (u32, i64),
}

/// The outcome of a fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// (name, estimate, standard error).
    pub parameters: Vec<(&'static str, f64, Option<f64>)>,
    /// Maximised log-likelihood.
    pub log_likelihood: f64,
    /// Optimiser iterations.
    pub iterations: u64,
    /// Whether the optimiser converged with a finite likelihood.
    pub converged: bool,
    /// The optimiser's status in words.
    pub message: String,
    /// Customers in the fit.
    pub customer_count: i64,
    /// Customers in scope left out (Gamma-Gamma).
    pub excluded_count: i64,
    /// Holdout validation (transaction models with a holdout).
    pub validation: Option<Validation>,
    /// Time of the fit and standard errors.
    pub duration: Duration,
}

/// Why there is nothing to fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TooLittleData(pub String);

fn observation(c: &FitCase) -> Observation {
    Observation {
        frequency: c.frequency.max(0) as f64,
        recency: c.recency,
        age: c.t.max(1e-6),
    }
}

/// Every fit: the derivative-free search from `start` to [`COARSE`], then
/// Newton steps on the exact derivatives `exact` to the optimum and its
/// exact standard errors; the full search from `start` where Newton cannot
/// finish (e.g. when a parameter runs off to infinity).
fn maximise_exact<const K: usize>(
    ll: &dyn Fn(&[f64]) -> f64,
    start: &[f64],
    max_iterations: u64,
    exact: impl Fn([f64; K]) -> Option<Derivatives<K>>,
) -> Result<Fitted, FitError> {
    let coarse = maximise_to(ll, start, max_iterations, COARSE)?;
    match newton::finish(&coarse, exact) {
        Some(f) => Ok(f),
        None => maximise(ll, start, max_iterations),
    }
}

/// Fits a discrete-time model from all-ones, with hyper-dual derivatives.
fn fit_discrete<L: Likelihood<K, Data = DiscreteData>, const K: usize>(
    data: &DiscreteData,
    start: &[f64],
    max_iterations: u64,
) -> Result<Fitted, FitError> {
    let ll = |p: &[f64]| L::total::<f64>(std::array::from_fn(|i| p[i]), data);
    maximise_exact(&ll, start, max_iterations, |p| {
        newton::hyper_dual::<L, K>(p, data)
    })
}

/// Fits BG/BB or sBG on the cases' opportunity histories.
fn fit_discrete_kind(
    kind: Kind,
    cases: &[FitCase],
    max_iterations: u64,
    holdout: bool,
) -> Result<Outcome, TooLittleData> {
    let histories: Vec<Opportunities> = cases.iter().filter_map(|c| c.opportunities).collect();
    if histories.len() < MIN_CUSTOMERS {
        return Err(TooLittleData(format!(
            "too little data: {} customers with a purchase before the calibration end in scope, at least {MIN_CUSTOMERS} needed",
            histories.len()
        )));
    }
    let data = DiscreteData::new(histories.iter().copied());
    let start = vec![1.0; kind.names().len()];
    let result = match kind {
        Kind::Sbg => fit_discrete::<Sbg, 2>(&data, &start, max_iterations),
        _ => fit_discrete::<BgBb, 4>(&data, &start, max_iterations),
    };
    let mut outcome = outcome(kind, result, &start, max_iterations, histories.len(), 0);
    let params: Vec<f64> = outcome.parameters.iter().map(|p| p.1).collect();
    if holdout && let Some(model) = kind.transaction_model(&params) {
        let predictions: Vec<HoldoutCase> = cases
            .iter()
            .filter_map(|c| {
                let o = c.opportunities?;
                let (n, actual) = c.holdout_opportunities;
                let history = History {
                    observation: observation(c),
                    opportunities: o,
                };
                Some(HoldoutCase {
                    frequency: i64::from(if kind == Kind::Sbg { o.renewals } else { o.x }),
                    actual: actual as f64,
                    predicted: model.expected(&history, f64::from(n)).unwrap_or(0.0),
                })
            })
            .collect();
        outcome.validation = Some(validate(&predictions));
    }
    Ok(outcome)
}

/// Picks whichever start has the higher likelihood: all ones, or the
/// moment-based one.
fn best_start(ll: &dyn Fn(&[f64]) -> f64, moments: Vec<f64>, n: usize) -> Vec<f64> {
    let ones = vec![1.0; n];
    let ok = moments.iter().all(|v| v.is_finite() && *v > 0.0);
    if ok && ll(&moments) > ll(&ones) {
        moments
    } else {
        ones
    }
}

/// Fits `kind` on `cases`. `holdout_periods` (transaction models) adds the
/// calibration/holdout validation.
pub fn fit(
    kind: Kind,
    cases: &[FitCase],
    max_iterations: u64,
    holdout_periods: Option<f64>,
    currency: &str,
) -> Result<Outcome, TooLittleData> {
    let started = Instant::now();
    match kind {
        Kind::BgBb | Kind::Sbg => {
            let mut outcome =
                fit_discrete_kind(kind, cases, max_iterations, holdout_periods.is_some())?;
            outcome.duration = started.elapsed();
            Ok(outcome)
        }
        Kind::BgNbd | Kind::ParetoNbd | Kind::MbgNbd => {
            if cases.len() < MIN_CUSTOMERS {
                return Err(TooLittleData(format!(
                    "too little data: {} customers with a purchase before the calibration end in scope, at least {MIN_CUSTOMERS} needed",
                    cases.len()
                )));
            }
            let data = RfmData::new(cases.iter().map(observation));
            let (sx, st): (f64, f64) = cases
                .iter()
                .fold((0.0, 0.0), |(a, b), c| (a + c.frequency as f64, b + c.t));
            let n = cases.len() as f64;
            let rate = (sx / st.max(1e-9)).max(1e-6);
            let ll: LogLikelihood = match kind {
                Kind::BgNbd => {
                    Box::new(|p: &[f64]| BgNbd::from_slice(p).total_ln_likelihood(&data))
                }
                Kind::MbgNbd => {
                    Box::new(|p: &[f64]| MbgNbd::from_slice(p).total_ln_likelihood(&data))
                }
                _ => Box::new(|p: &[f64]| ParetoNbd::from_slice(p).total_ln_likelihood(&data)),
            };
            let moments = match kind {
                Kind::BgNbd | Kind::MbgNbd => vec![1.0, 1.0 / rate, 1.0, 1.0],
                _ => vec![1.0, 1.0 / rate, 1.0, st / n],
            };
            let start = best_start(&*ll, moments, 4);
            // Exact derivatives by hand for BG/NBD and MBG/NBD, by
            // hyper-dual numbers for Pareto/NBD.
            let result = match kind {
                Kind::BgNbd => maximise_exact(&*ll, &start, max_iterations, |p| {
                    exact::derivatives(p, &data, 0)
                }),
                Kind::MbgNbd => maximise_exact(&*ll, &start, max_iterations, |p| {
                    exact::derivatives(p, &data, 1)
                }),
                _ => maximise_exact(&*ll, &start, max_iterations, |p| {
                    newton::hyper_dual::<ParetoNbd, 4>(p, &data)
                }),
            };
            let mut outcome = outcome(kind, result, &start, max_iterations, cases.len(), 0);
            if let (Some(h), true) = (
                holdout_periods,
                outcome.converged || !outcome.parameters.is_empty(),
            ) {
                let params: Vec<f64> = outcome.parameters.iter().map(|p| p.1).collect();
                if let Some(model) = kind.transaction_model(&params) {
                    let predictions: Vec<HoldoutCase> = cases
                        .iter()
                        .map(|c| HoldoutCase {
                            frequency: c.frequency,
                            actual: c.holdout_purchases as f64,
                            predicted: model
                                .expected(&History::continuous(observation(c)), h)
                                .unwrap_or(0.0),
                        })
                        .collect();
                    outcome.validation = Some(validate(&predictions));
                }
            }
            outcome.duration = started.elapsed();
            Ok(outcome)
        }
        Kind::GammaGamma => {
            let rows: Vec<(f64, f64)> = cases
                .iter()
                .filter(|c| {
                    c.in_currency
                        && c.frequency > 0
                        && c.monetary_value > 0.0
                        && c.monetary_value.is_finite()
                })
                .map(|c| (c.frequency as f64, c.monetary_value))
                .collect();
            if rows.len() < MIN_CUSTOMERS {
                return Err(TooLittleData(format!(
                    "too little data: {} repeat customers with a positive monetary value in {currency}, at least {MIN_CUSTOMERS} needed",
                    rows.len()
                )));
            }
            let included = rows.len();
            let mean_m = rows.iter().map(|r| r.1).sum::<f64>() / included as f64;
            let data = SpendData::new(rows);
            let ll = |p: &[f64]| GammaGamma::from_slice(p).total_ln_likelihood(&data);
            let start = best_start(&ll, vec![1.0, 2.0, mean_m], 3);
            let result = maximise_exact(&ll, &start, max_iterations, |p| {
                GammaGamma::from_slice(&p).derivatives(&data)
            });
            let mut outcome = outcome(
                kind,
                result,
                &start,
                max_iterations,
                included,
                (cases.len() - included) as i64,
            );
            outcome.duration = started.elapsed();
            Ok(outcome)
        }
    }
}

fn outcome(
    kind: Kind,
    result: Result<super::fit::Fitted, FitError>,
    start: &[f64],
    max_iterations: u64,
    customers: usize,
    excluded: i64,
) -> Outcome {
    let names = kind.names();
    match result {
        Ok(f) => {
            let finite =
                f.log_likelihood.is_finite() && f.params.iter().all(|p| p.is_finite() && *p > 0.0);
            let converged = f.converged && finite;
            let message = if !finite {
                "non-finite log-likelihood".to_string()
            } else if f.converged {
                "converged".to_string()
            } else {
                format!("maximum iterations ({max_iterations}) reached")
            };
            Outcome {
                parameters: names
                    .iter()
                    .zip(&f.params)
                    .zip(&f.std_errors)
                    .map(|((n, v), se)| (*n, *v, se.filter(|s| s.is_finite() && *s > 0.0)))
                    .collect(),
                log_likelihood: f.log_likelihood,
                iterations: f.iterations,
                converged,
                message,
                customer_count: customers as i64,
                excluded_count: excluded,
                validation: None,
                duration: Duration::ZERO,
            }
        }
        Err(e) => Outcome {
            parameters: names
                .iter()
                .zip(start)
                .map(|(n, v)| (*n, *v, None))
                .collect(),
            log_likelihood: f64::NEG_INFINITY,
            iterations: 0,
            converged: false,
            message: match e {
                FitError::BadStart => "non-finite log-likelihood".to_string(),
                FitError::Optimiser(m) => format!("optimiser failed: {m}"),
            },
            customer_count: customers as i64,
            excluded_count: excluded,
            validation: None,
            duration: Duration::ZERO,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::synthetic::BgNbdGenerator;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn fits_synthetic_data_and_validates_the_holdout() {
        let truth = BgNbd {
            r: 0.25,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        };
        let spend = GammaGamma {
            p: 6.0,
            q: 4.0,
            gamma: 15.0,
        };
        let g = BgNbdGenerator::new(truth, Some(spend), 1.0 / 7.0).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let cases: Vec<FitCase> = (0..5000)
            .map(|i| {
                let c = g.draw(&mut rng, 10.0 + f64::from(i % 30));
                FitCase {
                    frequency: c.observation.frequency as i64,
                    recency: c.observation.recency,
                    t: c.observation.age,
                    monetary_value: c.mean_spend.unwrap_or(0.0),
                    in_currency: true,
                    holdout_purchases: 0,
                    opportunities: None,
                    holdout_opportunities: (0, 0),
                }
            })
            .collect();
        let bg = fit(Kind::BgNbd, &cases, 1000, Some(10.0), "EUR").unwrap();
        assert!(bg.converged, "{bg:?}");
        assert_eq!(bg.parameters[0].0, "r");
        assert!((bg.parameters[0].1 - 0.25).abs() < 0.05, "{bg:?}");
        let v = bg.validation.unwrap();
        assert_eq!(v.actual_total, 0);
        assert!(v.predicted_total > 0.0);
        let gg = fit(Kind::GammaGamma, &cases, 1000, None, "EUR").unwrap();
        assert!(gg.converged);
        assert_eq!(gg.customer_count + gg.excluded_count, 5000);
        assert!(gg.validation.is_none());
        let few = fit(Kind::ParetoNbd, &cases[..9], 1000, None, "EUR").unwrap_err();
        assert!(few.0.contains("9 customers"), "{few}");
        let capped = fit(Kind::BgNbd, &cases, 3, None, "EUR").unwrap();
        assert!(!capped.converged);
        assert_eq!(capped.message, "maximum iterations (3) reached");
    }
}
