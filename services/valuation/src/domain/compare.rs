//! Comparing transaction models fitted on the same data: information
//! criteria and the recommendation, with its reason in words.

use super::fitting::Kind;

/// One fitted model, as a comparison sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The kind.
    pub kind: Kind,
    /// Maximised log-likelihood.
    pub log_likelihood: f64,
    /// Estimated parameters, k.
    pub parameter_count: usize,
    /// Whether the optimiser converged.
    pub converged: bool,
    /// Mean absolute error of the conditional expectations on the holdout,
    /// by calibration frequency (with a holdout window).
    pub holdout_error: Option<f64>,
}

/// Akaike's information criterion, 2k − 2 ln L.
pub fn aic(log_likelihood: f64, k: usize) -> f64 {
    2.0 * k as f64 - 2.0 * log_likelihood
}

/// The Bayesian information criterion, k ln n − 2 ln L, for `n` customers.
pub fn bic(log_likelihood: f64, k: usize, n: usize) -> f64 {
    k as f64 * (n.max(1) as f64).ln() - 2.0 * log_likelihood
}

/// The model to use, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The kind recommended.
    pub kind: Kind,
    /// The reason, with the figures compared.
    pub reason: String,
}

/// Recommends one of `candidates` fitted on `customers` customers: the one
/// whose conditional expectations come closest to the holdout when every
/// candidate has a holdout validation, else the lowest BIC. Candidates that
/// did not converge are passed over unless none converged. `None` for no
/// candidates.
pub fn recommend(candidates: &[Candidate], customers: usize) -> Option<Recommendation> {
    let converged: Vec<&Candidate> = candidates.iter().filter(|c| c.converged).collect();
    let pool: Vec<&Candidate> = if converged.is_empty() {
        candidates.iter().collect()
    } else {
        converged
    };
    let by_holdout = pool.iter().all(|c| c.holdout_error.is_some());
    let score = |c: &Candidate| {
        if by_holdout {
            c.holdout_error.unwrap_or(f64::INFINITY)
        } else {
            bic(c.log_likelihood, c.parameter_count, customers)
        }
    };
    let best = pool
        .iter()
        .copied()
        .filter(|c| score(c).is_finite())
        .min_by(|a, b| score(a).total_cmp(&score(b)))
        .or_else(|| pool.first().copied())?;
    let others: Vec<String> = candidates
        .iter()
        .filter(|c| c.kind != best.kind)
        .map(|c| {
            let note = if c.converged {
                ""
            } else {
                ", did not converge"
            };
            format!(
                "{} {}{note}",
                c.kind.display(),
                figure(score(c), by_holdout)
            )
        })
        .collect();
    let versus = if others.is_empty() {
        String::new()
    } else {
        format!(" ({})", others.join(", "))
    };
    let mut reason = if by_holdout {
        format!(
            "closest conditional expectations on the holdout: mean absolute error {} purchases \
             per customer by calibration frequency{versus}",
            figure(score(best), true)
        )
    } else {
        format!(
            "lowest BIC, {}{versus}; give a holdout window to compare the predictions",
            figure(score(best), false)
        )
    };
    if !best.converged {
        reason = format!("no model converged; {reason}");
    }
    Some(Recommendation {
        kind: best.kind,
        reason,
    })
}

fn figure(v: f64, holdout: bool) -> String {
    if holdout {
        format!("{v:.4}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(kind: Kind, ll: f64, holdout_error: Option<f64>) -> Candidate {
        Candidate {
            kind,
            log_likelihood: ll,
            parameter_count: 4,
            converged: true,
            holdout_error,
        }
    }

    #[test]
    fn criteria_follow_their_definitions() {
        // CDNOW BG/NBD: LL −9582.4 over 2,357 customers, 4 parameters.
        assert!((aic(-9582.4, 4) - 19172.8).abs() < 1e-9);
        let want = 4.0 * 2357f64.ln() + 19164.8;
        assert!((bic(-9582.4, 4, 2357) - want).abs() < 1e-9);
    }

    #[test]
    fn the_holdout_decides_when_there_is_one() {
        let c = [
            candidate(Kind::BgNbd, -9582.4, Some(0.053)),
            candidate(Kind::ParetoNbd, -9595.0, Some(0.0467)),
            candidate(Kind::MbgNbd, -9582.1, Some(0.06)),
        ];
        let r = recommend(&c, 2357).unwrap();
        assert_eq!(r.kind, Kind::ParetoNbd);
        assert_eq!(
            r.reason,
            "closest conditional expectations on the holdout: mean absolute error 0.0467 \
             purchases per customer by calibration frequency (BG/NBD 0.0530, MBG/NBD 0.0600)"
        );
    }

    #[test]
    fn without_a_holdout_the_lowest_bic_wins() {
        let c = [
            candidate(Kind::BgNbd, -9582.4, None),
            candidate(Kind::MbgNbd, -9582.1, None),
        ];
        let r = recommend(&c, 2357).unwrap();
        assert_eq!(r.kind, Kind::MbgNbd);
        assert!(r.reason.starts_with("lowest BIC, "), "{}", r.reason);
        assert!(r.reason.contains("(BG/NBD "), "{}", r.reason);
        assert!(
            r.reason
                .ends_with("give a holdout window to compare the predictions")
        );
    }

    #[test]
    fn a_model_that_did_not_converge_is_passed_over() {
        let mut failed = candidate(Kind::ParetoNbd, -9000.0, Some(0.01));
        failed.converged = false;
        let c = [candidate(Kind::BgNbd, -9582.4, Some(0.05)), failed.clone()];
        let r = recommend(&c, 2357).unwrap();
        assert_eq!(r.kind, Kind::BgNbd);
        assert!(
            r.reason.contains("Pareto/NBD 0.0100, did not converge"),
            "{}",
            r.reason
        );
        // Unless none converged.
        let r = recommend(&[failed], 2357).unwrap();
        assert_eq!(r.kind, Kind::ParetoNbd);
        assert!(r.reason.starts_with("no model converged; "), "{}", r.reason);
        assert_eq!(recommend(&[], 10), None);
    }
}
