//! The audience of a campaign: every member of a segment (or every customer
//! a rule matches) decided for, page by page (each page one transaction:
//! six set-based reads, the decisions, one insert), sent on as it goes.

use std::collections::BTreeMap;
use std::sync::Arc;

use rapport_kit::context::CallContext;
use rapport_kit::error::ApiError;
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::engagement::v1::FilterReason;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::decisions::{Setting, rows};
use crate::domain::decide::{Customer, Decided};
use crate::domain::propensity::Posterior;
use crate::domain::treatment::Stored;
use crate::peers::Segmentation;
use crate::store;

/// Customers per page.
pub const PAGE: usize = 500;

/// Whose next best actions: a segment's members, or a rule's matches.
#[derive(Clone)]
pub enum Audience {
    /// Members as segmentation's feed announced them.
    Segment(Uuid),
    /// Customers segmentation says the rule matches, with its first page
    /// (read before the stream starts, so a bad rule fails the call).
    Rule(Box<RuleAudience>),
}

/// An audience given as a rule.
#[derive(Clone)]
pub struct RuleAudience {
    pub rule: String,
    pub segmentation: Segmentation,
    pub ctx: CallContext,
    /// The first page of matches and the next page's token.
    pub first: (Vec<Uuid>, String),
}

/// What StreamNextBestActions asked.
#[derive(Clone)]
pub struct Ask {
    pub audience: Audience,
    pub channel: i32,
    pub limit: usize,
    pub preview: bool,
}

/// Where the next page of the audience starts.
#[derive(Debug, Clone)]
enum Cursor {
    Start,
    /// After this member of the segment.
    After(Uuid),
    /// A rule's next page token.
    Token(String),
    Done,
}

impl Ask {
    /// The page of the audience at `cursor`, and where the next one starts.
    async fn members(
        &self,
        conn: &mut PgConnection,
        tenant: Uuid,
        cursor: Cursor,
    ) -> Result<(Vec<Uuid>, Cursor), ApiError> {
        match (&self.audience, cursor) {
            (_, Cursor::Done) => Ok((vec![], Cursor::Done)),
            (Audience::Segment(segment), c) => {
                let after = match c {
                    Cursor::After(id) => Some(id),
                    _ => None,
                };
                let ids =
                    store::segment_members(conn, tenant, *segment, after, PAGE as i64).await?;
                let next = match ids.last() {
                    Some(last) if ids.len() == PAGE => Cursor::After(*last),
                    _ => Cursor::Done,
                };
                Ok((ids, next))
            }
            (Audience::Rule(r), Cursor::Start) => Ok((r.first.0.clone(), next_of(&r.first.1))),
            (Audience::Rule(r), Cursor::Token(token)) => {
                let (ids, next) = r.segmentation.rule_matches(&r.ctx, &r.rule, &token).await?;
                Ok((ids, next_of(&next)))
            }
            (Audience::Rule(_), Cursor::After(_)) => Ok((vec![], Cursor::Done)),
        }
    }
}

fn next_of(token: &str) -> Cursor {
    if token.is_empty() {
        Cursor::Done
    } else {
        Cursor::Token(token.to_string())
    }
}

/// One customer decided for.
pub struct Decision {
    pub customer: Customer,
    pub treatments: Arc<Vec<(Stored, Posterior)>>,
    pub decided: Decided,
    /// The decision stored per action, none for a preview.
    pub action_ids: Vec<Option<Uuid>>,
}

/// Counts of the whole audience.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub members: i64,
    pub customers: i64,
    pub customers_with_actions: i64,
    pub actions: i64,
    pub filtered: BTreeMap<i32, i64>,
}

/// A page of customers, or the summary after the last.
pub enum Part {
    Page(Vec<Decision>),
    Summary(Summary),
}

/// NOT_FOUND unless the segment is known.
pub async fn check(pool: &PgPool, tenant: Uuid, segment: Uuid) -> Result<(), ApiError> {
    let mut conn = pool.acquire().await?;
    if store::segment_exists(&mut conn, tenant, segment).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound {
            resource: "segment",
            id: format!(
                "{segment} (unknown to the engagement service: never created, deleted, or created less than about 2 seconds ago)"
            ),
        })
    }
}

/// Decides for every member and sends each page, then the summary; stops
/// when the receiver goes away, and ends UNAVAILABLE at shutdown.
pub async fn run(
    pool: PgPool,
    tenant: Uuid,
    ask: Ask,
    shutdown: Shutdown,
    out: mpsc::Sender<Result<Part, ApiError>>,
) {
    let mut summary = Summary::default();
    let mut cursor = Cursor::Start;
    loop {
        if shutdown.is_triggered() {
            let _ = out
                .send(Err(ApiError::Unavailable(
                    "the service is shutting down; ask again".into(),
                )))
                .await;
            return;
        }
        let page = match page(&pool, tenant, &ask, cursor, &mut summary).await {
            Ok(p) => p,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        let Some((next, decisions)) = page else { break };
        cursor = next;
        if out.send(Ok(Part::Page(decisions))).await.is_err() {
            return;
        }
    }
    let _ = out.send(Ok(Part::Summary(summary))).await;
}

/// The page of members at `cursor`: where the next starts and the
/// decisions; `None` after the last page.
async fn page(
    pool: &PgPool,
    tenant: Uuid,
    ask: &Ask,
    cursor: Cursor,
    summary: &mut Summary,
) -> Result<Option<(Cursor, Vec<Decision>)>, ApiError> {
    let now = crate::domain::now();
    let mut tx = pool.begin().await?;
    let (members, next) = ask.members(&mut tx, tenant, cursor).await?;
    if members.is_empty() {
        return Ok(None);
    }
    let customers = store::customers(&mut tx, tenant, &members, now).await?;
    let mut setting = Setting::read(&mut tx, tenant).await?;
    let mut stored = Vec::new();
    let mut decisions = Vec::with_capacity(customers.len());
    for customer in customers {
        let decided = setting.decide(&customer, ask.channel, ask.limit, now);
        let treatments = setting.for_rung(customer.ladder_rung);
        let mut action_ids = vec![None; decided.actions.len()];
        if !ask.preview {
            let r = rows(&customer, &treatments, &decided, now);
            for (k, d) in r.iter().take(decided.actions.len()).enumerate() {
                action_ids[k] = Some(d.decision_id);
            }
            stored.extend(r);
        }
        summary.customers += 1;
        summary.actions += decided.actions.len() as i64;
        summary.customers_with_actions += i64::from(!decided.actions.is_empty());
        for f in &decided.filtered {
            *summary.filtered.entry(f.reason as i32).or_default() += 1;
        }
        decisions.push(Decision {
            customer,
            treatments,
            decided,
            action_ids,
        });
    }
    summary.members += members.len() as i64;
    store::insert_decisions(&mut tx, tenant, &stored).await?;
    tx.commit().await?;
    Ok(Some((next, decisions)))
}

/// The reasons of a summary in the order of the contract.
pub fn reasons(s: &Summary) -> Vec<(FilterReason, i64)> {
    s.filtered
        .iter()
        .filter_map(|(r, n)| Some((FilterReason::try_from(*r).ok()?, *n)))
        .collect()
}
