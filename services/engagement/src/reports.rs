//! Treatment reports: offers and outcomes, acceptance, revenue after
//! acceptance and the lift over the control group, in one read-only
//! transaction.

use chrono::{DateTime, Utc};
use rapport_kit::error::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::report::{self, Proportion};
use crate::domain::treatment::Stored;
use crate::store::{self, Window};

/// One arm of the experiment.
#[derive(Debug, Clone, Copy)]
pub struct Arm {
    pub conversion: Proportion,
    /// Revenue per measured customer, in nanos.
    pub revenue_per_customer: i128,
    pub pending: i64,
}

/// A treatment's report.
#[derive(Debug, Clone)]
pub struct Report {
    pub treatment: Stored,
    pub start: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    pub offers: i64,
    pub accepted: i64,
    pub declined: i64,
    pub ignored: i64,
    pub pending: i64,
    pub acceptance: Proportion,
    pub revenue_after_acceptance: i64,
    pub margin_after_acceptance: i64,
    pub window_days: i32,
    pub treated: Arm,
    pub control: Arm,
    /// (lift, lower, upper).
    pub lift: (f64, f64, f64),
}

fn arm(figures: &[store::ArmFigures], name: &str) -> Arm {
    let f = figures
        .iter()
        .find(|f| f.arm == name)
        .cloned()
        .unwrap_or_default();
    Arm {
        conversion: report::proportion(f.converted, f.measured),
        revenue_per_customer: if f.measured > 0 {
            i128::from(f.revenue) / i128::from(f.measured)
        } else {
            0
        },
        pending: f.pending,
    }
}

/// The report of treatment `id` over decisions in [start, end) as of `now`.
pub async fn report(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Report, ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let treatment = store::treatment(&mut tx, tenant, id, false)
        .await?
        .ok_or_else(|| ApiError::not_found("treatment", id.to_string()))?;
    let end = end.unwrap_or(now);
    let w = Window {
        treatment: id,
        start,
        end,
    };
    let days = store::policy(&mut tx, tenant, false)
        .await?
        .policy
        .outcome_window_days;
    let currency = treatment.spec.cost.currency.clone();
    let (offers, accepted, declined, ignored, pending) =
        store::offer_counts(&mut tx, tenant, w).await?;
    let (revenue, margin) =
        store::revenue_after_acceptance(&mut tx, tenant, w, days, &currency).await?;
    let figures = store::arm_figures(&mut tx, tenant, w, days, &currency, now).await?;
    tx.commit().await?;
    let treated = arm(&figures, "treatment");
    let control = arm(&figures, "control");
    Ok(Report {
        treatment,
        start,
        end,
        offers,
        accepted,
        declined,
        ignored,
        pending,
        acceptance: report::proportion(accepted, accepted + declined + ignored),
        revenue_after_acceptance: revenue,
        margin_after_acceptance: margin,
        window_days: days,
        lift: report::difference(&treated.conversion, &control.conversion),
        treated,
        control,
    })
}
