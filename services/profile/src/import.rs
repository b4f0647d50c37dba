//! ImportCustomers, one batch at a time: the use case that owns the batch's
//! transaction. Items are upserted by their identifiers with
//! ResolveIdentity's rules (the bulk resolution of
//! [`store::resolve_identities_in`]), existing customers get the item's
//! masked fields, and each item's request_id is remembered with its outcome,
//! all in one transaction: a batch is stored whole or not at all, and an
//! item refused while it is applied is left out and the batch tried again
//! without it, so a refused item never changes anything.

use std::collections::{BTreeMap, HashMap};

use rapport_kit::{ApiError, Violations};
use rapport_proto::rapport::profile::v1::Customer;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::attributes::{AttributeRules, Definitions};
use crate::domain::customer::{self as cust, Ident, Source, Stored, Validated};
use crate::domain::mask;
use crate::error::{Error, Result};
use crate::store::{self, Resolution};

/// The idempotency method name of import items.
const METHOD: &str = "ImportCustomers";
/// How many times a batch is retried after losing a race.
const RACE_ATTEMPTS: usize = 8;

/// One validated item of a batch.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its position in the stream.
    pub index: i64,
    /// Its request_id and the fingerprint of its content, when given.
    pub key: Option<store::RequestKey>,
    /// The customer to create when no identifier is known (validated as by
    /// CreateCustomer); its identifiers are the ones matched.
    pub create: Validated,
    /// The item as sent, the source of the masked fields.
    pub customer: Customer,
    /// The fields to set on an existing customer.
    pub paths: Vec<String>,
}

/// Why an item was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Invalid input.
    Invalid,
    /// The identifiers lead to several customers.
    IdentityConflict,
    /// They lead to a soft-deleted customer.
    CustomerDeleted,
    /// The request_id was used for other content.
    RequestIdConflict,
}

/// What happened to one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A customer was created.
    Created(Uuid),
    /// An existing customer changed.
    Updated(Uuid),
    /// An existing customer matched and nothing changed.
    Unchanged(Uuid),
    /// Refused: nothing changed for it.
    Rejected {
        /// Why.
        reason: Refused,
        /// For people.
        message: String,
        /// For `Invalid`: (field, description), relative to the item.
        violations: Vec<(String, String)>,
    },
}

impl Outcome {
    fn stored(&self) -> Option<(&'static str, Uuid)> {
        match self {
            Outcome::Created(id) => Some(("created", *id)),
            Outcome::Updated(id) => Some(("updated", *id)),
            Outcome::Unchanged(id) => Some(("unchanged", *id)),
            Outcome::Rejected { .. } => None,
        }
    }

    fn from_stored(outcome: &str, id: Uuid) -> Self {
        match outcome {
            "created" => Outcome::Created(id),
            "updated" => Outcome::Updated(id),
            _ => Outcome::Unchanged(id),
        }
    }

    fn rejected(reason: Refused, message: impl Into<String>) -> Self {
        Outcome::Rejected {
            reason,
            message: message.into(),
            violations: Vec::new(),
        }
    }
}

/// An existing customer's next state and the fields that changed.
type Applied = (Validated, Vec<&'static str>);

/// An existing customer's next state under an item: `Ok(None)` when nothing
/// changes, `Err` with the violations when the item cannot apply.
fn apply_item(
    current: &Stored,
    item: &Item,
    defs: &Definitions,
) -> std::result::Result<Option<Applied>, Vec<(String, String)>> {
    if item.paths.is_empty() {
        return Ok(None);
    }
    let mut v = Violations::new();
    let before = cust::fields_to_proto(current.kind, &current.profile, &current.idents);
    let applied = mask::apply(&before, &item.customer, &item.paths, current.kind, &mut v);
    let next = cust::validate(
        &applied.customer,
        "customer",
        current.kind,
        defs,
        AttributeRules {
            existing: &current.profile.attributes,
            enforce_required: applied.touches_attributes,
        },
        Source::Customer,
        store::today(),
        &mut v,
    );
    if let Err(ApiError::InvalidArgument(list)) = v.finish() {
        return Err(list.into_iter().map(|x| (x.field, x.description)).collect());
    }
    let after = cust::fields_to_proto(current.kind, &next.profile, &current.idents);
    let changed = cust::changed_fields(&before, &after);
    Ok((!changed.is_empty()).then_some((next, changed)))
}

/// Imports one batch (see the module docs); one outcome per item, in order.
pub async fn import_batch(pool: &PgPool, tenant: Uuid, items: &[Item]) -> Result<Vec<Outcome>> {
    let mut conn = pool.acquire().await?;
    let defs = store::definitions(&mut conn, tenant).await?;
    drop(conn);
    // Items refused while the batch was applied: left out of the next try.
    let mut refused: HashMap<usize, Outcome> = HashMap::new();
    let mut races = 0;
    loop {
        let mut tx = pool.begin().await?;
        rapport_kit::db::prefer_key_lookups(&mut tx).await?;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; items.len()];
        for (n, o) in &refused {
            outcomes[*n] = Some(o.clone());
        }
        // Retried items answer as the first time.
        let keys: Vec<&store::RequestKey> = items.iter().filter_map(|i| i.key.as_ref()).collect();
        let known = store::import_keys(&mut tx, tenant, METHOD, &keys).await?;
        let mut active: Vec<usize> = Vec::new();
        for (n, item) in items.iter().enumerate() {
            if outcomes[n].is_some() {
                continue;
            }
            match item
                .key
                .as_ref()
                .and_then(|k| known.get(&k.request_id).map(|r| (k, r)))
            {
                Some((k, (fingerprint, outcome, id))) if *fingerprint == k.fingerprint => {
                    outcomes[n] = Some(Outcome::from_stored(outcome, *id));
                }
                Some(_) => {
                    outcomes[n] = Some(Outcome::rejected(
                        Refused::RequestIdConflict,
                        "this request_id was used for an item with other content in the last 24 hours",
                    ));
                }
                None => active.push(n),
            }
        }
        // A request_id given twice in the batch: the later item answers as
        // the earlier one (same content) or is refused (other content).
        let mut first_with: HashMap<&str, usize> = HashMap::new();
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        active.retain(|&n| {
            let Some(k) = items[n].key.as_ref() else {
                return true;
            };
            match first_with.get(k.request_id.as_str()) {
                None => {
                    first_with.insert(k.request_id.as_str(), n);
                    true
                }
                Some(&f) => {
                    if items[f].key.as_ref().map(|x| &x.fingerprint) == Some(&k.fingerprint) {
                        repeats.push((n, f));
                    } else {
                        outcomes[n] = Some(Outcome::rejected(
                            Refused::RequestIdConflict,
                            "this request_id was used for an item with other content earlier in the stream",
                        ));
                    }
                    false
                }
            }
        });
        let sets: Vec<(Vec<Ident>, Validated, bool)> = active
            .iter()
            .map(|n| {
                (
                    items[*n].create.idents.clone(),
                    items[*n].create.clone(),
                    false,
                )
            })
            .collect();
        let Some(done) = store::resolve_identities_in(&mut tx, tenant, &sets).await? else {
            tx.rollback().await?;
            races += 1;
            if races >= RACE_ATTEMPTS {
                return Err(Error::Api(ApiError::Aborted(
                    "the identifiers kept changing while the batch was imported; retry".into(),
                )));
            }
            continue;
        };
        // Existing customers as the batch leaves them, item after item.
        let mut state: HashMap<Uuid, Stored> = done.customers;
        let mut updates: BTreeMap<Uuid, (Validated, Vec<&'static str>, bool)> = BTreeMap::new();
        let mut retry = false;
        for (n, result) in active.iter().copied().zip(done.results) {
            let item = &items[n];
            outcomes[n] = Some(match result {
                Some(Resolution::Resolved {
                    customer, created, ..
                }) if created => Outcome::Created(customer.customer_id),
                Some(Resolution::Resolved {
                    customer, attached, ..
                }) => {
                    let id = customer.customer_id;
                    let Some(current) = state.get(&id).cloned() else {
                        return Err(ApiError::internal("a resolved customer was not loaded").into());
                    };
                    if current.deleted {
                        Outcome::rejected(
                            Refused::CustomerDeleted,
                            format!(
                                "the identifiers lead to customer {id}, which is deleted; undelete it first"
                            ),
                        )
                    } else {
                        match apply_item(&current, item, &defs) {
                            Err(violations) => {
                                refused.insert(
                                    n,
                                    Outcome::Rejected {
                                        reason: Refused::Invalid,
                                        message:
                                            "the item cannot be applied to the existing customer"
                                                .into(),
                                        violations,
                                    },
                                );
                                retry = true;
                                continue;
                            }
                            Ok(Some((next, changed))) => {
                                let stage = next.profile.relationship_stage
                                    != current.profile.relationship_stage;
                                if let Some(s) = state.get_mut(&id) {
                                    s.profile = next.profile.clone();
                                }
                                let entry = updates
                                    .entry(id)
                                    .or_insert_with(|| (next.clone(), Vec::new(), false));
                                entry.0 = next;
                                for c in changed {
                                    if !entry.1.contains(&c) {
                                        entry.1.push(c);
                                    }
                                }
                                entry.2 |= stage;
                                Outcome::Updated(id)
                            }
                            Ok(None) if !attached.is_empty() => Outcome::Updated(id),
                            Ok(None) => Outcome::Unchanged(id),
                        }
                    }
                }
                Some(Resolution::Conflict(matches)) => {
                    let ids: Vec<String> = matches.iter().map(|(c, _)| c.to_string()).collect();
                    Outcome::rejected(
                        Refused::IdentityConflict,
                        format!(
                            "the identifiers belong to different customers: {}; merge them or fix the identifiers",
                            ids.join(", ")
                        ),
                    )
                }
                None => Outcome::rejected(Refused::Invalid, "the identifiers were not resolved"),
            });
        }
        if retry {
            // Leave the refused items out: nothing of theirs may be stored.
            tx.rollback().await?;
            continue;
        }
        let changes: Vec<(Uuid, &Validated, &[&'static str], bool)> = updates
            .iter()
            .map(|(id, (v, c, stage))| (*id, v, c.as_slice(), *stage))
            .collect();
        store::apply_import_updates(&mut tx, tenant, &changes).await?;
        for (n, f) in &repeats {
            outcomes[*n] = outcomes[*f].clone();
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::rejected(Refused::Invalid, "not processed")))
            .collect();
        let mut is_active = vec![false; items.len()];
        for &n in &active {
            is_active[n] = true;
        }
        let remembered: Vec<(&store::RequestKey, serde_json::Value, Uuid)> = items
            .iter()
            .zip(&outcomes)
            .enumerate()
            .filter(|(n, _)| is_active[*n])
            .filter_map(|(_, (item, o))| {
                let (kind, id) = o.stored()?;
                let key = item.key.as_ref()?;
                Some((
                    key,
                    json!({"outcome": kind, "customer_id": id.to_string()}),
                    id,
                ))
            })
            .collect();
        if !store::remember_import_keys(&mut tx, tenant, METHOD, &remembered).await? {
            // A concurrent import took one of the keys: answer as it did.
            tx.rollback().await?;
            races += 1;
            if races >= RACE_ATTEMPTS {
                return Err(Error::Api(ApiError::Aborted(
                    "request_ids of this batch are being imported concurrently; retry".into(),
                )));
            }
            continue;
        }
        tx.commit().await?;
        return Ok(outcomes);
    }
}
