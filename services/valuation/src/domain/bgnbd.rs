//! BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way").
//!
//! While alive, a customer buys as a Poisson process with rate λ ~ Gamma(r, α);
//! after each purchase they drop out with probability p ~ Beta(a, b).

use statrs::function::beta::checked_ln_beta;
use statrs::function::gamma::ln_gamma;

use super::data::{Observation, RfmData};
use super::special::hyp2f1_signed;

/// ln B(a, b), NaN outside a, b > 0 (an optimiser may step there: the
/// likelihood is then not a number and the step is refused, never a panic).
fn ln_beta(a: f64, b: f64) -> f64 {
    checked_ln_beta(a, b).unwrap_or(f64::NAN)
}

/// BG/NBD parameters: r, α (purchase rate), a, b (dropout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    /// Shape of the purchase-rate gamma.
    pub r: f64,
    /// Scale of the purchase-rate gamma (in periods).
    pub alpha: f64,
    /// First dropout beta parameter.
    pub a: f64,
    /// Second dropout beta parameter.
    pub b: f64,
}

/// Sums `f` over chunks of the rows, on every available core when the data
/// are large enough to be worth it.
pub(crate) fn parallel_sum<F>(rows: &[Observation], weights: &[f64], f: F) -> f64
where
    F: Fn(&[Observation], &[f64]) -> f64 + Sync,
{
    const MIN_PER_THREAD: usize = 20_000;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.min(rows.len() / MIN_PER_THREAD).max(1);
    if threads == 1 {
        return f(rows, weights);
    }
    let size = rows.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(size)
            .zip(weights.chunks(size))
            .map(|(r, w)| scope.spawn(|| f(r, w)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(f64::NAN))
            .sum()
    })
}

fn log_add_exp(x: f64, y: f64) -> f64 {
    let m = x.max(y);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((x - m).exp() + (y - m).exp()).ln()
}

/// Expected purchases in the next `horizon` periods given the history, for
/// BG/NBD (`shift` 0, FHL 2005 eq. 10) and MBG/NBD (`shift` 1, where a
/// customer may also drop out at the first purchase):
/// (a+b+x−1+s)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) · ₂F₁(r+x, b+x+s; a+b+x−1+s; t/(α+T+t))]
/// / (1 + a/(b+x−1+s) · ((α+T)/(α+t_x))^(r+x)), the last term only where
/// the customer can have dropped out (after a purchase counted by the
/// model: x > 0 for BG/NBD, always for MBG/NBD). `None` when `a = 1` (a
/// removable singularity of the closed form) or the hypergeometric series
/// does not converge.
pub(crate) fn conditional_purchases(
    params: Vec<f64>,
    o: &Observation,
    horizon: f64,
    shift: f64,
) -> Option<f64> {
    let [r, alpha, a, b] = params[..] else {
        return None;
    };
    if a == 1.0 || horizon < 0.0 {
        return None;
    }
    if horizon == 0.0 {
        return Some(0.0);
    }
    let (x, tx, t) = (o.frequency, o.recency, o.age);
    let z = horizon / (alpha + t + horizon);
    // c = a + b + x − 1 + s is negative for x = 0 when a + b < 1 − s, and the
    // function may then be negative: it is summed with its sign.
    let (ln_f, sign) = hyp2f1_signed(r + x, b + x + shift, a + b + x - 1.0 + shift, z)?;
    let head = (a + b + x - 1.0 + shift) / (a - 1.0);
    let tail = 1.0 - sign * ((r + x) * ((alpha + t) / (alpha + t + horizon)).ln() + ln_f).exp();
    let denom = if x > 0.0 || shift > 0.0 {
        1.0 + (a / (b + x - 1.0 + shift)) * ((alpha + t) / (alpha + tx)).powf(r + x)
    } else {
        1.0
    };
    Some(head * tail / denom)
}

/// The terms of a history's log-likelihood that depend on its frequency x
/// alone, for BG/NBD (`shift` 0) and MBG/NBD (`shift` 1, where a customer
/// may also drop out at the first purchase): the sum
/// ln Γ(r+x) − ln Γ(r) + r ln α + ln B(a, b+x+s) − ln B(a, b), and
/// ln(a / (b+x−1+s)) where the customer can have dropped out (after a
/// purchase the model counts).
fn frequency_terms([r, alpha, a, b]: [f64; 4], x: f64, shift: f64) -> (f64, Option<f64>) {
    let base = r * alpha.ln() - ln_beta(a, b);
    let common = ln_gamma(r + x) - ln_gamma(r) + ln_beta(a, b + x + shift) + base;
    let drop = (x > 0.0 || shift > 0.0).then(|| (a / (b + x - 1.0 + shift)).ln());
    (common, drop)
}

/// One history's log-likelihood given its frequency terms: alive at T, or
/// dropped out at the last purchase.
fn history_ln_likelihood(
    (common, drop): (f64, Option<f64>),
    r: f64,
    alpha: f64,
    o: &Observation,
) -> f64 {
    let rx = r + o.frequency;
    let alive = -rx * (alpha + o.age).ln();
    match drop {
        Some(d) => common + log_add_exp(alive, d - rx * (alpha + o.recency).ln()),
        None => common + alive,
    }
}

/// One customer's log-likelihood under BG/NBD (`shift` 0, FHL 2005 eq. 6)
/// or MBG/NBD (`shift` 1, Batislam et al. 2007 eq. 4).
pub(crate) fn family_ln_likelihood(p: [f64; 4], o: &Observation, shift: f64) -> f64 {
    history_ln_likelihood(frequency_terms(p, o.frequency, shift), p[0], p[1], o)
}

/// The total log-likelihood of `data` (weighted by identical customers)
/// under BG/NBD (`shift` 0) or MBG/NBD (`shift` 1), the frequency terms
/// computed once per distinct frequency and large data sets summed on
/// every available core.
pub(crate) fn family_total_ln_likelihood(p: [f64; 4], data: &RfmData, shift: f64) -> f64 {
    let max_x = data
        .rows
        .iter()
        .map(|o| o.frequency as usize)
        .max()
        .unwrap_or(0);
    let terms: Vec<(f64, Option<f64>)> = (0..=max_x)
        .map(|x| frequency_terms(p, x as f64, shift))
        .collect();
    let chunk = |rows: &[Observation], weights: &[f64]| -> f64 {
        rows.iter()
            .zip(weights)
            .map(|(o, w)| w * history_ln_likelihood(terms[o.frequency as usize], p[0], p[1], o))
            .sum()
    };
    parallel_sum(&data.rows, &data.weights, chunk)
}

/// P(alive) at the end of the observation under BG/NBD (`shift` 0, FHL
/// 2005 eq. 11: 1 without repeat purchases) or MBG/NBD (`shift` 1):
/// 1 / (1 + a/(b+x−1+s) · ((α+T)/(α+tₓ))^(r+x)).
pub(crate) fn family_p_alive([r, alpha, a, b]: [f64; 4], o: &Observation, shift: f64) -> f64 {
    let x = o.frequency;
    if x == 0.0 && shift == 0.0 {
        return 1.0;
    }
    let ln_ratio =
        (a / (b + x - 1.0 + shift)).ln() + (r + x) * ((alpha + o.age) / (alpha + o.recency)).ln();
    1.0 / (1.0 + ln_ratio.exp())
}

impl BgNbd {
    /// Parameter names, in [`BgNbd::to_vec`] order.
    pub const NAMES: [&'static str; 4] = ["r", "alpha", "a", "b"];

    /// From `[r, alpha, a, b]`.
    pub fn from_slice(p: &[f64]) -> Self {
        Self {
            r: p[0],
            alpha: p[1],
            a: p[2],
            b: p[3],
        }
    }

    /// As `[r, alpha, a, b]`.
    pub fn to_vec(self) -> Vec<f64> {
        vec![self.r, self.alpha, self.a, self.b]
    }

    /// Log-likelihood of one customer's history (FHL 2005, eq. 6).
    pub fn ln_likelihood(&self, o: &Observation) -> f64 {
        family_ln_likelihood(self.params(), o, 0.0)
    }

    /// Total log-likelihood of the data (weighted by identical customers).
    ///
    /// The terms that depend on the frequency alone (the gamma and beta
    /// functions) are computed once per distinct frequency, and large data
    /// sets are summed on every available core.
    pub fn total_ln_likelihood(&self, data: &RfmData) -> f64 {
        family_total_ln_likelihood(self.params(), data, 0.0)
    }

    /// Probability that the customer is still alive at the end of calibration
    /// (FHL 2005, eq. 11; 1 for customers without repeat purchases).
    pub fn p_alive(&self, o: &Observation) -> f64 {
        family_p_alive(self.params(), o, 0.0)
    }

    fn params(self) -> [f64; 4] {
        [self.r, self.alpha, self.a, self.b]
    }

    /// Expected purchases in the next `horizon` periods, given the history
    /// (FHL 2005, eq. 10). `None` when `a = 1` (where the closed form has a
    /// removable singularity) or the hypergeometric series does not converge.
    pub fn expected_purchases(&self, o: &Observation, horizon: f64) -> Option<f64> {
        conditional_purchases(self.to_vec(), o, horizon, 0.0)
    }

    /// Expected purchases of a new customer in `t` periods (FHL 2005, eq. 9).
    pub fn expected_purchases_new(&self, t: f64) -> Option<f64> {
        let Self { r, alpha, a, b } = *self;
        if a == 1.0 {
            return None;
        }
        let z = t / (alpha + t);
        let (ln_f, sign) = hyp2f1_signed(r, b, a + b - 1.0, z)?;
        Some(
            (a + b - 1.0) / (a - 1.0)
                * (1.0 - sign * (r * (alpha / (alpha + t)).ln() + ln_f).exp()),
        )
    }
}
