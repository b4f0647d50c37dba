//! Valuation's pure logic: the Buy-Till-You-Die models, their maximum
//! likelihood fit, and per-customer predictions. No I/O.
//!
//! * [`bgnbd`]: BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the
//!   Easy Way", Marketing Science 24(2)).
//! * [`pareto_nbd`]: Pareto/NBD (Schmittlein, Morrison & Colombo 1987,
//!   "Counting Your Customers", Management Science 33(1)), likelihood as in
//!   Fader & Hardie's note "A Note on Implementing the Pareto/NBD Model in MATLAB".
//! * [`gamma_gamma`]: spend per transaction (Fader, Hardie & Lee 2005, "RFM and
//!   CLV: Using Iso-Value Curves for Customer Base Analysis", JMR 42(4)).
//! * [`fit`]: maximum likelihood in log-parameter space, standard errors from
//!   the Hessian.
//! * [`clv`]: discounted customer lifetime value.
//! * [`special`]: the Gaussian hypergeometric function.
//! * [`synthetic`]: customer bases drawn from the models, for benchmarks and
//!   parameter-recovery tests.

pub mod bgnbd;
pub mod clv;
pub mod data;
pub mod fit;
pub mod gamma_gamma;
pub mod pareto_nbd;
pub mod special;
pub mod synthetic;

pub use data::{Observation, RfmData, SpendData};
