//! Deciding and learning: next best actions for a customer or for every
//! member of a segment (read what the feeds said, decide, store the
//! decisions), outcomes, and the sweep that counts decisions left without
//! one as ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rapport_kit::error::ApiError;
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::engagement::v1::FilterReason;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::decide::{self, Customer, Decided, Ranking};
use crate::domain::outcome::{self, Refusal, Settle};
use crate::domain::policy::Policy;
use crate::domain::propensity::Posterior;
use crate::domain::treatment::Stored;
use crate::domain::{NANOS, money};
use crate::store::{self, DecisionRow};

/// What deciding for any customer of a tenant reads once: the policy, the
/// active treatments and their outcome counts per ladder rung.
pub struct Setting {
    pub policy: Policy,
    treatments: Vec<Stored>,
    counts: HashMap<(Uuid, i32), (i64, i64)>,
    /// The treatments with their posteriors, per rung, made when first asked.
    by_rung: HashMap<i32, Arc<Vec<(Stored, Posterior)>>>,
}

impl Setting {
    /// Reads the tenant's setting.
    pub async fn read(conn: &mut PgConnection, tenant: Uuid) -> Result<Self, sqlx::Error> {
        let policy = store::policy(conn, tenant, false).await?.policy;
        let treatments = store::active_treatments(conn, tenant).await?;
        let ids: Vec<Uuid> = treatments.iter().map(|t| t.treatment_id).collect();
        let counts = store::outcome_counts(conn, tenant, &ids).await?;
        Ok(Self {
            policy,
            treatments,
            counts,
            by_rung: HashMap::new(),
        })
    }

    /// The treatments with their posteriors for customers on `rung`.
    pub fn for_rung(&mut self, rung: i32) -> Arc<Vec<(Stored, Posterior)>> {
        let (treatments, counts) = (&self.treatments, &self.counts);
        self.by_rung
            .entry(rung)
            .or_insert_with(|| {
                Arc::new(
                    treatments
                        .iter()
                        .map(|t| {
                            let (a, r) = counts
                                .get(&(t.treatment_id, rung))
                                .copied()
                                .unwrap_or((0, 0));
                            (
                                t.clone(),
                                Posterior::new(t.spec.prior_alpha, t.spec.prior_beta, a, r),
                            )
                        })
                        .collect(),
                )
            })
            .clone()
    }

    /// Decides for `c` (by the posterior mean, or a draw when the policy
    /// explores).
    pub fn decide(
        &mut self,
        c: &Customer,
        channel: i32,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Decided {
        let treatments = self.for_rung(c.ladder_rung);
        let policy = &self.policy;
        if policy.exploration {
            let mut rng = rand::rng();
            decide::decide(
                c,
                &treatments,
                policy,
                channel,
                limit,
                now,
                Ranking::Sample(&mut rng),
            )
        } else {
            decide::decide::<StdRng>(c, &treatments, policy, channel, limit, now, Ranking::Mean)
        }
    }
}

fn split(nanos: i128) -> (i64, i32) {
    let m = money("", nanos);
    (m.units, m.nanos)
}

/// The rows to store for what was decided for `c`: one per action offered
/// (with its id, in order) and one per control-group draw.
pub fn rows(
    c: &Customer,
    treatments: &[(Stored, Posterior)],
    d: &Decided,
    now: DateTime<Utc>,
) -> Vec<DecisionRow> {
    let row = |t: &Stored, arm: &str, rank: i32, propensity: f64, currency: &str, env: i128| {
        let (units, nanos) = split(env);
        DecisionRow {
            decision_id: Uuid::now_v7(),
            customer_id: c.customer_id,
            treatment_id: t.treatment_id,
            treatment_version: t.version,
            arm: arm.into(),
            channel: t.spec.channel,
            rank,
            propensity,
            env_currency: currency.into(),
            env_units: units,
            env_nanos: nanos,
            ladder_rung: c.ladder_rung,
            decide_time: now,
            outcome: "pending".into(),
            outcome_time: None,
        }
    };
    let offered = d.actions.iter().map(|a| {
        let t = &treatments[a.index].0;
        row(
            t,
            "treatment",
            a.rank,
            a.posterior.mean(),
            &a.value.currency,
            a.expected_net,
        )
    });
    let held_out = d
        .filtered
        .iter()
        .filter(|f| f.reason == FilterReason::ControlGroup)
        .map(|f| {
            let (t, post) = &treatments[f.index];
            row(t, "control", 0, post.mean(), &t.spec.cost.currency, 0)
        });
    offered.chain(held_out).collect()
}

/// What GetNextBestActions asked.
#[derive(Debug, Clone)]
pub struct Asked {
    pub customer: Uuid,
    /// `ContactChannel` number; 0 for any.
    pub channel: i32,
    pub limit: usize,
    pub preview: bool,
}

/// What was decided, with what it was decided from.
pub struct Answer {
    pub customer: Customer,
    pub treatments: Arc<Vec<(Stored, Posterior)>>,
    pub decided: Decided,
    /// The decision stored per action (in order), none for a preview.
    pub action_ids: Vec<Option<Uuid>>,
    /// The control-group record per filtered treatment index.
    pub control_ids: HashMap<usize, Uuid>,
    pub decide_time: DateTime<Utc>,
}

/// Decides the customer's next best actions and stores them.
pub async fn next_best_actions(
    pool: &PgPool,
    tenant: Uuid,
    asked: &Asked,
) -> Result<Answer, ApiError> {
    let now = crate::domain::now();
    let mut tx = pool.begin().await?;
    let customer = store::customer(&mut tx, tenant, asked.customer, now)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            resource: "customer",
            id: format!(
                "{} (unknown to the engagement service: never created, deleted, erased, or created less than about 2 seconds ago)",
                asked.customer
            ),
        })?;
    let mut setting = Setting::read(&mut tx, tenant).await?;
    let decided = setting.decide(&customer, asked.channel, asked.limit, now);
    let treatments = setting.for_rung(customer.ladder_rung);
    let mut action_ids = vec![None; decided.actions.len()];
    let mut control_ids = HashMap::new();
    if !asked.preview {
        let rows = rows(&customer, &treatments, &decided, now);
        for (k, r) in rows.iter().take(decided.actions.len()).enumerate() {
            action_ids[k] = Some(r.decision_id);
        }
        store::insert_decisions(&mut tx, tenant, &rows).await?;
        let held: Vec<(usize, (Uuid, Uuid))> = decided
            .filtered
            .iter()
            .filter(|f| f.reason == FilterReason::ControlGroup)
            .map(|f| {
                (
                    f.index,
                    (treatments[f.index].0.treatment_id, customer.customer_id),
                )
            })
            .collect();
        let pairs: Vec<(Uuid, Uuid)> = held.iter().map(|h| h.1).collect();
        let ids = store::control_ids(&mut tx, tenant, &pairs).await?;
        for (index, pair) in held {
            if let Some(id) = ids.get(&pair) {
                control_ids.insert(index, *id);
            }
        }
    }
    tx.commit().await?;
    Ok(Answer {
        customer,
        treatments,
        decided,
        action_ids,
        control_ids,
        decide_time: now,
    })
}

/// Records ACCEPTED or DECLINED (`outcome` "accepted" / "declined") for a
/// decision, and counts it for the propensities.
pub async fn record_outcome(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    outcome: &'static str,
    at: Option<DateTime<Utc>>,
) -> Result<DecisionRow, ApiError> {
    let now = crate::domain::now();
    let at = at.unwrap_or(now);
    let mut tx = pool.begin().await?;
    let d = store::decision(&mut tx, tenant, id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("decision", id.to_string()))?;
    let (accepted, refused) = match outcome::settle(&d.arm, &d.outcome, outcome, d.decide_time, at)
    {
        Ok(Settle::Unchanged) => return Ok(d),
        Ok(Settle::Set { accepted, refused }) => (accepted, refused),
        Err(Refusal::Control) => {
            return Err(ApiError::FailedPrecondition(format!(
                "decision {id} holds the customer out in the control group: nothing was offered"
            )));
        }
        Err(Refusal::Decided(was)) => {
            return Err(ApiError::FailedPrecondition(format!(
                "decision {id} is already {was}; an outcome is recorded once"
            )));
        }
        Err(Refusal::BeforeDecision) => {
            return Err(ApiError::invalid(
                "outcome_time",
                format!(
                    "must not be before the decision ({})",
                    d.decide_time.to_rfc3339()
                ),
            ));
        }
    };
    let saved = store::set_outcome(&mut tx, tenant, id, outcome, at).await?;
    store::count_outcomes(
        &mut tx,
        tenant,
        &[(d.treatment_id, d.ladder_rung, accepted, refused)],
    )
    .await?;
    tx.commit().await?;
    Ok(saved)
}

/// Records outcomes that arrived on the interaction feed: (decision,
/// outcome, when). Those that may not be recorded (an unknown or control
/// decision, one decided otherwise, a time before the decision) are
/// skipped: the interaction stands, the decision keeps its outcome.
pub async fn apply_outcomes(
    conn: &mut PgConnection,
    tenant: Uuid,
    outcomes: &[(Uuid, &'static str, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    for (id, outcome, at) in outcomes {
        let Some(d) = store::decision(conn, tenant, *id, true).await? else {
            continue;
        };
        let at = crate::domain::to_micros(*at);
        match outcome::settle(&d.arm, &d.outcome, outcome, d.decide_time, at) {
            Ok(Settle::Set { accepted, refused }) => {
                store::set_outcome(conn, tenant, *id, outcome, at).await?;
                store::count_outcomes(
                    conn,
                    tenant,
                    &[(d.treatment_id, d.ladder_rung, accepted, refused)],
                )
                .await?;
            }
            Ok(Settle::Unchanged) => {}
            Err(why) => {
                tracing::debug!(decision = %id, ?why, "an outcome on the interaction feed was not recorded")
            }
        }
    }
    Ok(())
}

/// Marks offered decisions without outcome after their tenant's window as
/// ignored and counts them; returns how many.
pub async fn expire(pool: &PgPool, now: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let marked =
            store::expire_pending(&mut tx, now, 5_000, Policy::default().outcome_window_days)
                .await?;
        let mut by_tenant: HashMap<Uuid, Vec<(Uuid, i32, i64, i64)>> = HashMap::new();
        let mut n = 0;
        for (tenant, t, rung, count) in marked {
            n += count;
            by_tenant
                .entry(tenant)
                .or_default()
                .push((t, rung, 0, count));
        }
        for (tenant, rows) in by_tenant {
            store::count_outcomes(&mut tx, tenant, &rows).await?;
        }
        tx.commit().await?;
        total += n;
        if n < 5_000 {
            return Ok(total);
        }
    }
}

/// How often the sweep runs.
const SWEEP_EVERY: StdDuration = StdDuration::from_secs(60);

/// Runs [`expire`] every minute until shutdown.
pub async fn sweep_loop(pool: PgPool, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        match expire(&pool, crate::domain::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                ignored = n,
                "decisions without an outcome counted as ignored"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot count ignored decisions; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.wait() => break,
        }
    }
}

/// Money of a stored decision's expected net value.
pub fn expected_net(d: &DecisionRow) -> rapport_proto::rapport::common::v1::Money {
    money(
        &d.env_currency,
        i128::from(d.env_units) * NANOS + i128::from(d.env_nanos),
    )
}
