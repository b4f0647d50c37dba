//! Maximum likelihood: Nelder-Mead (argmin) on log-parameters, restarted from
//! its best point until the likelihood stops improving, then standard errors
//! from the inverse of the numerical Hessian at the optimum.

use argmin::core::{CostFunction, Error, Executor, State, TerminationReason, TerminationStatus};
use argmin::solver::neldermead::NelderMead;

/// The result of a fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// Parameters, in the model's order.
    pub params: Vec<f64>,
    /// Standard errors, from the observed information; `None` when the
    /// Hessian is not negative definite at the optimum.
    pub std_errors: Vec<Option<f64>>,
    /// Log-likelihood at the optimum.
    pub log_likelihood: f64,
    /// Optimiser iterations, over all restarts.
    pub iterations: u64,
    /// Whether the optimiser met its tolerance (rather than its iteration cap).
    pub converged: bool,
}

/// Why a fit failed.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The likelihood is not finite at the starting point.
    #[error("the likelihood cannot be evaluated at the starting point")]
    BadStart,
    /// The optimiser failed.
    #[error("optimiser failed: {0}")]
    Optimiser(String),
}

struct NegLogLik<'a, F: Fn(&[f64]) -> f64> {
    ll: &'a F,
}

impl<F: Fn(&[f64]) -> f64> CostFunction for NegLogLik<'_, F> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, log_params: &Vec<f64>) -> Result<f64, Error> {
        let params: Vec<f64> = log_params.iter().map(|p| p.exp()).collect();
        let v = -(self.ll)(&params);
        Ok(if v.is_finite() { v } else { f64::INFINITY })
    }
}

fn simplex(center: &[f64], step: f64) -> Vec<Vec<f64>> {
    let mut points = vec![center.to_vec()];
    for i in 0..center.len() {
        let mut p = center.to_vec();
        p[i] += step;
        points.push(p);
    }
    points
}

/// Maximises `ll` (a log-likelihood over positive parameters) from `start`.
pub fn maximise<F: Fn(&[f64]) -> f64>(
    ll: F,
    start: &[f64],
    max_iters: u64,
) -> Result<Fitted, FitError> {
    maximise_to(ll, start, max_iters, 1e-12)
}

/// [`maximise`], stopping once the simplex's likelihoods agree to
/// `precision` relative (1e-12 for a final answer; looser where exact
/// derivatives finish the job).
pub fn maximise_to<F: Fn(&[f64]) -> f64>(
    ll: F,
    start: &[f64],
    max_iters: u64,
    precision: f64,
) -> Result<Fitted, FitError> {
    let mut center: Vec<f64> = start.iter().map(|p| p.ln()).collect();
    let problem = NegLogLik { ll: &ll };
    let mut best = problem
        .cost(&center)
        .map_err(|e| FitError::Optimiser(e.to_string()))?;
    if !best.is_finite() {
        return Err(FitError::BadStart);
    }
    let mut iterations = 0;
    let mut converged = false;
    for round in 0..6 {
        let step = if round == 0 { 0.5 } else { 0.05 };
        // Stop when the simplex's likelihoods agree to about 12 digits: an
        // absolute tolerance would sit below f64 precision for large data.
        let tolerance = (best.abs() * precision).max(1e-12);
        let solver = NelderMead::new(simplex(&center, step))
            .with_sd_tolerance(tolerance)
            .map_err(|e| FitError::Optimiser(e.to_string()))?;
        let remaining = max_iters.saturating_sub(iterations).max(1);
        let result = Executor::new(NegLogLik { ll: &ll }, solver)
            .configure(|s| s.max_iters(remaining))
            .run()
            .map_err(|e| FitError::Optimiser(e.to_string()))?;
        let state = result.state();
        iterations += state.get_iter();
        converged = matches!(
            state.get_termination_status(),
            TerminationStatus::Terminated(TerminationReason::SolverConverged)
        );
        let cost = state.get_best_cost();
        if let Some(p) = state.get_best_param().filter(|_| cost <= best) {
            center = p.clone();
        }
        let improved = best - cost;
        best = best.min(cost);
        if iterations >= max_iters {
            converged = false;
            break;
        }
        if round > 0 && improved.abs() < 1e-9 {
            break;
        }
    }
    let params: Vec<f64> = center.iter().map(|p| p.exp()).collect();
    let std_errors = standard_errors(&ll, &params);
    Ok(Fitted {
        log_likelihood: ll(&params),
        params,
        std_errors,
        iterations,
        converged,
    })
}

/// Standard errors from the observed information: the square roots of the
/// diagonal of the inverse of minus the Hessian (central differences).
pub fn standard_errors<F: Fn(&[f64]) -> f64>(ll: &F, params: &[f64]) -> Vec<Option<f64>> {
    let n = params.len();
    let h: Vec<f64> = params.iter().map(|p| 1e-4 * p.abs().max(1e-3)).collect();
    let at = |d: &[(usize, f64)]| {
        let mut p = params.to_vec();
        for &(i, delta) in d {
            p[i] += delta;
        }
        ll(&p)
    };
    let mut info = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in i..n {
            let v = if i == j {
                (at(&[(i, h[i])]) - 2.0 * at(&[]) + at(&[(i, -h[i])])) / (h[i] * h[i])
            } else {
                (at(&[(i, h[i]), (j, h[j])])
                    - at(&[(i, h[i]), (j, -h[j])])
                    - at(&[(i, -h[i]), (j, h[j])])
                    + at(&[(i, -h[i]), (j, -h[j])]))
                    / (4.0 * h[i] * h[j])
            };
            info[i][j] = -v;
            info[j][i] = -v;
        }
    }
    match invert(info) {
        Some(cov) => (0..n)
            .map(|i| (cov[i][i] > 0.0 && cov[i][i].is_finite()).then(|| cov[i][i].sqrt()))
            .collect(),
        None => vec![None; n],
    }
}

/// Gauss-Jordan inversion with partial pivoting of a small square matrix.
pub(crate) fn invert(mut m: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let n = m.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 || !m[pivot][col].is_finite() {
            return None;
        }
        m.swap(col, pivot);
        inv.swap(col, pivot);
        let d = m[col][col];
        for k in 0..n {
            m[col][k] /= d;
            inv[col][k] /= d;
        }
        for row in 0..n {
            if row != col {
                let f = m[row][col];
                for k in 0..n {
                    m[row][k] -= f * m[col][k];
                    inv[row][k] -= f * inv[col][k];
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_maximum_and_its_curvature() {
        // ll = -(p0 - 2)^2 / (2 * 0.3^2) - (p1 - 5)^2 / (2 * 0.7^2): SEs 0.3 and 0.7.
        let ll = |p: &[f64]| -(p[0] - 2.0).powi(2) / 0.18 - (p[1] - 5.0).powi(2) / 0.98;
        let fit = maximise(ll, &[1.0, 1.0], 10_000).unwrap();
        assert!((fit.params[0] - 2.0).abs() < 1e-5, "{fit:?}");
        assert!((fit.params[1] - 5.0).abs() < 1e-5, "{fit:?}");
        assert!(fit.converged);
        assert!((fit.std_errors[0].unwrap() - 0.3).abs() < 1e-4);
        assert!((fit.std_errors[1].unwrap() - 0.7).abs() < 1e-4);
    }

    #[test]
    fn inverts_matrices() {
        let inv = invert(vec![vec![4.0, 7.0], vec![2.0, 6.0]]).unwrap();
        assert!((inv[0][0] - 0.6).abs() < 1e-12 && (inv[0][1] + 0.7).abs() < 1e-12);
        assert!(invert(vec![vec![1.0, 2.0], vec![2.0, 4.0]]).is_none());
    }
}
