//! BG/BB (Fader, Hardie & Shang 2010, "Customer-Base Analysis in a
//! Discrete-Time Noncontractual Setting", Marketing Science 29(6),
//! 1086-1108).
//!
//! At each opportunity an alive customer buys with probability
//! p ~ Beta(α, β); at the start of each opportunity an alive customer dies
//! with probability θ ~ Beta(γ, δ). A customer with x purchases in n
//! opportunities, the last at t_x, has the likelihood (FHS 2010, eq. 5)
//!
//! L = B(α+x, β+n−x)/B(α,β) · B(γ, δ+n)/B(γ,δ)
//!   + Σ_{i=0}^{n−t_x−1} B(α+x, β+t_x−x+i)/B(α,β) · B(γ+1, δ+t_x+i)/B(γ,δ),
//!
//! the first term alive through n, the others dead from opportunity
//! t_x + i + 1.

use statrs::function::gamma::ln_gamma;

use super::discrete::{DiscreteData, Opportunities, ln_rising};
use super::newton::{Likelihood, Real, ln_sum_exp};

/// BG/BB parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgBb {
    /// First shape of the purchase probability's beta.
    pub alpha: f64,
    /// Second shape of the purchase probability's beta.
    pub beta: f64,
    /// First shape of the death probability's beta.
    pub gamma: f64,
    /// Second shape of the death probability's beta.
    pub delta: f64,
}

/// ln (a)_k in f64, by log-gamma: one history at a time.
fn lr(a: f64, k: u32) -> f64 {
    ln_gamma(a + f64::from(k)) - ln_gamma(a)
}

impl BgBb {
    /// Parameter names, in order.
    pub const NAMES: [&'static str; 4] = ["alpha", "beta", "gamma", "delta"];

    /// From `[alpha, beta, gamma, delta]`.
    pub fn from_slice(p: &[f64]) -> Self {
        Self {
            alpha: p[0],
            beta: p[1],
            gamma: p[2],
            delta: p[3],
        }
    }

    /// ln of the joint probability of the history and being alive at
    /// opportunity n + k, without p's purchase at it: the first term of the
    /// likelihood with δ shifted by k.
    fn ln_alive(&self, o: &Opportunities, k: u32, extra_purchase: u32) -> f64 {
        let (x, n) = (o.x, o.n);
        lr(self.alpha, x + extra_purchase) + lr(self.beta, n - x)
            - lr(self.alpha + self.beta, n + extra_purchase)
            + lr(self.delta, n + k)
            - lr(self.gamma + self.delta, n + k)
    }

    /// ln L of one history.
    pub fn ln_likelihood(&self, o: &Opportunities) -> f64 {
        let (x, tx, n) = (o.x, o.recency, o.n);
        let mut terms = vec![self.ln_alive(o, 0, 0)];
        // Dead from opportunity k + 1, k = t_x..n−1.
        for k in tx..n {
            terms.push(
                lr(self.alpha, x) + lr(self.beta, k - x) - lr(self.alpha + self.beta, k)
                    + self.gamma.ln()
                    + lr(self.delta, k)
                    - lr(self.gamma + self.delta, k + 1),
            );
        }
        ln_sum_exp(&terms)
    }

    /// P(alive at opportunity n + 1 | history) (FHS 2010, eq. 11).
    pub fn p_alive(&self, o: &Opportunities) -> f64 {
        (self.ln_alive(o, 1, 0) - self.ln_likelihood(o)).exp()
    }

    /// Expected purchases at each of the next `h` opportunities (FHS 2010,
    /// eq. 13 term by term): E[p · 1(alive at n + k) | history].
    pub fn increments(&self, o: &Opportunities, h: u32) -> Vec<f64> {
        let ln_l = self.ln_likelihood(o);
        let base = self.ln_alive(o, 0, 1) - ln_l;
        // B(γ, δ+n+k)/B(γ,δ) grows from k to k + 1 by (δ+n+k)/(γ+δ+n+k).
        let mut out = Vec::with_capacity(h as usize);
        let mut ln_term = base;
        for k in 0..h {
            let j = f64::from(o.n + k);
            ln_term += ((self.delta + j) / (self.gamma + self.delta + j)).ln();
            out.push(ln_term.exp());
        }
        out
    }

    /// Expected purchases over the next `h` opportunities.
    pub fn expected_purchases(&self, o: &Opportunities, h: u32) -> f64 {
        self.increments(o, h).iter().sum()
    }
}

impl Likelihood<4> for BgBb {
    type Data = DiscreteData;

    fn total<D: Real>(p: [D; 4], data: &DiscreteData) -> D {
        let [a, b, g, d] = p;
        let m = data.max_n as usize + 2;
        let (la, lb, lab) = (ln_rising(a, m), ln_rising(b, m), ln_rising(a + b, m));
        let (ld, lgd) = (ln_rising(d, m), ln_rising(g + d, m));
        let lg = g.ln();
        let mut total = D::zero();
        let mut terms = Vec::new();
        for (o, w) in data.rows.iter().zip(&data.weights) {
            let (x, tx, n) = (o.x as usize, o.recency as usize, o.n as usize);
            terms.clear();
            terms.push(la[x] + lb[n - x] - lab[n] + ld[n] - lgd[n]);
            for k in tx..n {
                terms.push(la[x] + lb[k - x] - lab[k] + lg + ld[k] - lgd[k + 1]);
            }
            total += ln_sum_exp(&terms) * *w;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fit::maximise_to;
    use crate::domain::newton::{hyper_dual, polish, standard_errors};

    /// The donations data (`tests/fixtures/donations.csv`, see PROVENANCE):
    /// (x, t_x, n = 6, customers).
    pub(crate) fn donations() -> DiscreteData {
        let text = include_str!("../../tests/fixtures/donations.csv");
        let mut histories = Vec::new();
        for line in text.lines().skip(1) {
            let v: Vec<i64> = line.split(',').map(|f| f.trim().parse().unwrap()).collect();
            let o = Opportunities::new(v[2], v[0], v[1], 0).unwrap();
            histories.extend(std::iter::repeat_n(o, v[3] as usize));
        }
        DiscreteData::new(histories)
    }

    const PUBLISHED: BgBb = BgBb {
        alpha: 1.204,
        beta: 0.750,
        gamma: 0.657,
        delta: 2.783,
    };

    #[test]
    fn reproduces_the_published_donations_fit() {
        // Fader, Hardie & Shang (2010): α 1.204, β 0.750, γ 0.657,
        // δ 2.783, LL −33,225.6.
        let data = donations();
        assert_eq!(data.customers(), 11_104.0);
        let ll = |p: &[f64]| BgBb::total([p[0], p[1], p[2], p[3]], &data);
        let coarse = maximise_to(ll, &[1.0; 4], 5000, 1e-8).unwrap();
        let start: [f64; 4] = std::array::from_fn(|i| coarse.params[i]);
        let (p, d) = polish(start, |q| hyper_dual::<BgBb, 4>(q, &data)).unwrap();
        for (got, want) in p.iter().zip([1.204, 0.750, 0.657, 2.783]) {
            assert!((got - want).abs() < 5e-4, "{p:?}");
        }
        assert!((d.value - -33_225.6).abs() < 0.05, "{}", d.value);
        assert!(d.gradient.iter().all(|g| g.abs() < 1e-6), "{d:?}");
        let se = standard_errors(&d);
        assert!(
            se.iter().all(|s| s.is_some_and(|s| s > 0.0 && s < 1.0)),
            "{se:?}"
        );
        // Per customer, the generic likelihood and the f64 one agree.
        let m = BgBb::from_slice(&p);
        let per: f64 = data
            .rows
            .iter()
            .zip(&data.weights)
            .map(|(o, w)| w * m.ln_likelihood(o))
            .sum();
        assert!((per - d.value).abs() < 1e-6, "{per} vs {}", d.value);
    }

    #[test]
    fn exact_derivatives_match_finite_differences() {
        let data = donations();
        let p = [1.2, 0.75, 0.66, 2.8];
        let d = hyper_dual::<BgBb, 4>(p, &data).unwrap();
        let f = |q: [f64; 4]| BgBb::total(q, &data);
        for i in 0..4 {
            let h = 1e-6 * p[i];
            let mut up = p;
            let mut down = p;
            up[i] += h;
            down[i] -= h;
            let fd = (f(up) - f(down)) / (2.0 * h);
            assert!((fd - d.gradient[i]).abs() < 1e-4 * fd.abs().max(1.0), "{i}");
        }
    }

    #[test]
    fn predictions_follow_the_paper() {
        let m = PUBLISHED;
        // A customer who bought at all six opportunities is almost surely
        // alive; one who bought only at the first is likely gone.
        let all = Opportunities::new(6, 6, 6, 6).unwrap();
        let early = Opportunities::new(6, 1, 1, 1).unwrap();
        assert!(m.p_alive(&all) > 0.9);
        assert!(m.p_alive(&early) < 0.2);
        // Expected purchases: positive, increasing in the horizon, and at
        // most one per opportunity.
        let e5 = m.expected_purchases(&all, 5);
        assert!(e5 > m.expected_purchases(&all, 1) && e5 < 5.0);
        assert!(m.expected_purchases(&early, 5) < e5);
        // With no history (n = 0), the likelihood is 1 and P(alive at 1) is
        // the mean survival δ / (γ + δ).
        let fresh = Opportunities::default();
        assert!(m.ln_likelihood(&fresh).abs() < 1e-12);
        let want = m.delta / (m.gamma + m.delta);
        assert!((m.p_alive(&fresh) - want).abs() < 1e-12);
        // Over the whole base, the model's expected purchases in 1996-2001
        // per customer add up: E[X(0, 1)] for a fresh customer is
        // E[p] · P(alive at 1).
        let e1 = m.expected_purchases(&fresh, 1);
        let want = m.alpha / (m.alpha + m.beta) * m.delta / (m.gamma + m.delta);
        assert!((e1 - want).abs() < 1e-12);
    }
}
