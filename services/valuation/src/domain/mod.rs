//! Valuation's pure logic: the Buy-Till-You-Die models, their maximum
//! likelihood fit, and per-customer predictions. No I/O.
//!
//! * [`bgnbd`]: BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the
//!   Easy Way", Marketing Science 24(2)).
//! * [`mbgnbd`]: MBG/NBD (Batislam, Denizel & Filiztekin 2007, IJRM 24(3)),
//!   BG/NBD where a customer may also drop out at the first purchase.
//! * [`pareto_nbd`]: Pareto/NBD (Schmittlein, Morrison & Colombo 1987,
//!   "Counting Your Customers", Management Science 33(1)), likelihood as in
//!   Fader & Hardie's note "A Note on Implementing the Pareto/NBD Model in MATLAB".
//! * [`bgbb`]: BG/BB (Fader, Hardie & Shang 2010, Marketing Science 29(6)),
//!   for discrete purchase opportunities; [`sbg`]: the shifted-beta-geometric
//!   model of contractual retention (Fader & Hardie 2007, JIM 21(1)); both
//!   on [`discrete`] histories.
//! * [`gamma_gamma`]: spend per transaction (Fader, Hardie & Lee 2005, "RFM and
//!   CLV: Using Iso-Value Curves for Customer Base Analysis", JMR 42(4)).
//! * [`fit`]: maximum likelihood in log-parameter space; [`newton`]: the
//!   Newton polish of the optimum and standard errors from the exact Hessian,
//!   by hand-derived derivatives ([`exact`] for the BG/NBD family) or
//!   hyper-dual numbers.
//! * [`clv`]: discounted customer lifetime value.
//! * [`special`]: the Gaussian hypergeometric function.
//! * [`synthetic`]: customer bases drawn from the models, for benchmarks and
//!   parameter-recovery tests.
//! * [`fitting`]: which customers a fit takes, starting values, holdout
//!   validation ([`holdout`]).
//! * [`scoring`]: per-customer scores and value tiers.
//! * [`compare`]: information criteria and the recommended model.
//! * [`concentration`], [`cohort`], [`relationship`]: the reports.
//! * [`money`]: exact amounts rounded half-even to the nano.
//! * [`kept`]: the per-customer purchase summaries kept from the feed.
//! * [`profit`]: cost to serve, profitability reports and net CLV's cost
//!   per purchase.

pub mod bgbb;
pub mod bgnbd;
pub mod clv;
pub mod cohort;
pub mod compare;
pub mod concentration;
pub mod data;
pub mod discrete;
pub mod events;
pub mod exact;
pub mod fit;
pub mod fitting;
pub mod gamma_gamma;
pub mod holdout;
pub mod kept;
pub mod mbgnbd;
pub mod money;
pub mod newton;
pub mod pareto_nbd;
pub mod profit;
pub mod relationship;
pub mod sbg;
pub mod scoring;
pub mod special;
pub mod synthetic;

pub use data::{Observation, RfmData, SpendData};
