//! Synthetic customer bases drawn from the models' own generative processes:
//! benchmarks and parameter-recovery tests fit them and must find the
//! parameters they were drawn with.

use rand::{Rng, RngExt};
use rand_distr::{Beta, Distribution, Exp, Gamma};

use super::bgnbd::BgNbd;
use super::data::Observation;
use super::gamma_gamma::GammaGamma;

/// One synthetic customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticCustomer {
    /// Calibration history.
    pub observation: Observation,
    /// Mean value of the repeat transactions (`None` without any).
    pub mean_spend: Option<f64>,
}

/// Why parameters cannot generate customers.
#[derive(Debug, thiserror::Error)]
#[error("parameters cannot generate customers: {0}")]
pub struct BadParameters(String);

/// Draws customers from the BG/NBD process (and, with `spend`, Gamma-Gamma
/// transaction values), each observed for its own `age` periods after its
/// first purchase. Times are rounded to multiples of `step` (e.g. 1/7 for days
/// when periods are weeks), as real data are.
pub struct BgNbdGenerator {
    rate: (f64, f64),
    dropout: Beta<f64>,
    spend: Option<(f64, Gamma<f64>)>,
    step: f64,
}

impl BgNbdGenerator {
    /// A generator for `model`, optional `spend` and time resolution `step`.
    pub fn new(model: BgNbd, spend: Option<GammaGamma>, step: f64) -> Result<Self, BadParameters> {
        let bad = |e: &dyn std::fmt::Display| BadParameters(e.to_string());
        Gamma::new(model.r, 1.0 / model.alpha).map_err(|e| bad(&e))?;
        let dropout = Beta::new(model.a, model.b).map_err(|e| bad(&e))?;
        let spend = match spend {
            Some(gg) => Some((gg.p, Gamma::new(gg.q, 1.0 / gg.gamma).map_err(|e| bad(&e))?)),
            None => None,
        };
        if !(step > 0.0 && step.is_finite()) {
            return Err(BadParameters("step must be positive".into()));
        }
        Ok(Self {
            rate: (model.r, 1.0 / model.alpha),
            dropout,
            spend,
            step,
        })
    }

    /// Draws one customer observed for `age` periods.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R, age: f64) -> SyntheticCustomer {
        let round = |t: f64| (t / self.step).floor() * self.step;
        let age = round(age).max(self.step);
        // Validated in `new`: these constructors cannot fail here.
        let lambda = Gamma::new(self.rate.0, self.rate.1)
            .map_or(1.0, |g| g.sample(rng))
            .max(1e-12);
        let p = self.dropout.sample(rng);
        let gap = Exp::new(lambda).ok();
        let (mut t, mut x, mut tx) = (0.0, 0u32, 0.0);
        if let Some(gap) = gap {
            loop {
                t += gap.sample(rng);
                if round(t) > age {
                    break;
                }
                x += 1;
                tx = round(t);
                if rng.random::<f64>() < p {
                    break;
                }
            }
        }
        let mean_spend = match (&self.spend, x) {
            (Some((shape, nu_dist)), x) if x > 0 => {
                let nu = nu_dist.sample(rng).max(1e-12);
                let per = Gamma::new(*shape, 1.0 / nu).ok();
                per.map(|g| (0..x).map(|_| g.sample(rng)).sum::<f64>() / f64::from(x))
            }
            _ => None,
        };
        SyntheticCustomer {
            observation: Observation {
                frequency: f64::from(x),
                recency: tx,
                age,
            },
            mean_spend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn draws_valid_histories_deterministically() {
        let model = BgNbd {
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
        let g = BgNbdGenerator::new(model, Some(spend), 1.0 / 7.0).unwrap();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..500)
                .map(|i| g.draw(&mut rng, 10.0 + f64::from(i % 40)))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same customers");
        assert_ne!(a, draw(8));
        for c in &a {
            assert!(c.observation.is_valid(), "{c:?}");
            assert_eq!(c.mean_spend.is_some(), c.observation.frequency > 0.0);
        }
        assert!(BgNbdGenerator::new(BgNbd { r: -1.0, ..model }, None, 1.0).is_err());
    }
}
