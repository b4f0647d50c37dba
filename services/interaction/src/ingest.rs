//! Recording interactions, one or a batch at a time: customers resolved
//! (identifier sets once each, through the profile service), campaigns
//! checked, idempotency keys claimed, rows written with COPY and their feed
//! events appended, all in one transaction per batch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Utc};
use rapport_kit::context::CallContext;
use rapport_kit::error::{ApiError, Violation};
use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::interaction::v1::RejectionReason;
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::model::{StoredInteraction, envelope};
use crate::domain::validate::{CustomerInput, NewInteraction};
use crate::peers::{Profile, Resolution};
use crate::store::{self, KeyClaim};

/// An interaction ready to record: validated, with its content hash.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The interaction.
    pub new: NewInteraction,
    /// Its content hash.
    pub hash: [u8; 32],
}

impl Prepared {
    /// Prepares a validated interaction.
    pub fn new(new: NewInteraction) -> Self {
        let hash = new.content_hash();
        Self { new, hash }
    }
}

/// Why an interaction was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The category.
    pub reason: RejectionReason,
    /// For people.
    pub message: String,
    /// For INVALID: one per problem.
    pub violations: Vec<Violation>,
    /// The id that was not found (customer or campaign), when that is why.
    pub missing_id: Option<Uuid>,
}

impl Refusal {
    fn new(reason: RejectionReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            violations: Vec::new(),
            missing_id: None,
        }
    }

    /// An INVALID refusal with its violations.
    pub fn invalid(violations: Vec<Violation>) -> Self {
        let message = violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            reason: RejectionReason::Invalid,
            message,
            violations,
            missing_id: None,
        }
    }

    /// The error `RecordInteraction` answers for this refusal.
    pub fn into_error(self) -> ApiError {
        match self.reason {
            RejectionReason::Invalid => ApiError::InvalidArgument(self.violations),
            RejectionReason::IdempotencyConflict => ApiError::AlreadyExists(self.message),
            RejectionReason::CustomerNotFound => ApiError::not_found(
                "customer",
                self.missing_id.map(|u| u.to_string()).unwrap_or_default(),
            ),
            RejectionReason::CampaignNotFound => ApiError::not_found(
                "campaign",
                self.missing_id.map(|u| u.to_string()).unwrap_or_default(),
            ),
            _ => ApiError::FailedPrecondition(self.message),
        }
    }
}

/// What became of one interaction.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Recorded now.
    Accepted {
        /// As stored.
        stored: Box<StoredInteraction>,
        /// Resolving its identifiers created the customer.
        customer_created: bool,
    },
    /// Already recorded under its key with the same content.
    Duplicate {
        /// The stored interaction's id.
        interaction_id: Uuid,
        /// And time.
        occur_time: DateTime<Utc>,
    },
    /// Refused.
    Rejected(Refusal),
}

/// What one call has learnt about customers, so each identifier set and each
/// customer id is looked up once per call.
#[derive(Default)]
pub struct CallCache {
    sets: HashMap<String, Result<(Uuid, bool), Refusal>>,
    reported_created: HashSet<Uuid>,
    known: HashSet<Uuid>,
    missing: HashSet<Uuid>,
}

/// Records interactions.
#[derive(Clone)]
pub struct Recorder {
    pool: PgPool,
    profile: Option<Profile>,
    partitions: Arc<Mutex<HashSet<i32>>>,
}

impl Recorder {
    /// A recorder writing to `pool`, resolving customers with `profile`
    /// (without one, customer ids are taken as given and identifiers cannot
    /// be resolved).
    pub fn new(pool: PgPool, profile: Option<Profile>) -> Self {
        Self {
            pool,
            profile,
            partitions: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Makes sure the partitions of these years exist.
    pub async fn ensure_partitions(
        &self,
        years: impl IntoIterator<Item = i32>,
    ) -> Result<(), ApiError> {
        let wanted: Vec<i32> = {
            let known = self
                .partitions
                .lock()
                .map_err(|_| ApiError::internal("partition cache poisoned"))?;
            let mut w: Vec<i32> = years.into_iter().filter(|y| !known.contains(y)).collect();
            w.sort_unstable();
            w.dedup();
            w
        };
        for y in wanted {
            store::ensure_partition(&self.pool, y).await?;
            if let Ok(mut known) = self.partitions.lock() {
                known.insert(y);
            }
        }
        Ok(())
    }

    async fn resolve_sets(
        &self,
        ctx: &CallContext,
        items: &[Result<Prepared, Refusal>],
        cache: &mut CallCache,
    ) -> Result<(), ApiError> {
        let mut wanted: Vec<(String, Vec<crate::domain::validate::IdentifierInput>)> = Vec::new();
        let mut seen = HashSet::new();
        for p in items.iter().flatten() {
            if let (Some(key), CustomerInput::Identifiers(ids)) =
                (p.new.identifier_set_key(), &p.new.customer)
                && !cache.sets.contains_key(&key)
                && seen.insert(key.clone())
            {
                wanted.push((key, ids.clone()));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let Some(profile) = &self.profile else {
            return Err(ApiError::Unavailable(
                "identifiers cannot be resolved: no profile service is configured (RAPPORT_PROFILE_URL)".into(),
            ));
        };
        // One ResolveIdentities call per 1,000 distinct sets: a batch of new
        // customers costs one round trip, not one per customer.
        let (keys, sets): (Vec<String>, Vec<_>) = wanted.into_iter().unzip();
        let results = profile.resolve_many(ctx, &sets).await?;
        for (key, r) in keys.into_iter().zip(results) {
            let entry = match r {
                Resolution::Customer { id, created } => Ok((id, created)),
                Resolution::Conflict(m) => Err(Refusal::new(RejectionReason::IdentityConflict, m)),
                Resolution::Invalid(v) => Err(Refusal::invalid(v)),
            };
            cache.sets.insert(key, entry);
        }
        Ok(())
    }

    async fn check_ids(
        &self,
        ctx: &CallContext,
        items: &[Result<Prepared, Refusal>],
        cache: &mut CallCache,
    ) -> Result<(), ApiError> {
        let mut wanted: Vec<Uuid> = items
            .iter()
            .flatten()
            .filter_map(|p| match p.new.customer {
                CustomerInput::Id(id)
                    if !cache.known.contains(&id) && !cache.missing.contains(&id) =>
                {
                    Some(id)
                }
                _ => None,
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let Some(profile) = &self.profile else {
            // Without a profile service, ids are taken as given.
            cache.known.extend(wanted);
            return Ok(());
        };
        let mut conn = self.pool.acquire().await?;
        let known = store::known_customers(&mut conn, ctx.tenant_id, &wanted).await?;
        drop(conn);
        let unknown: Vec<Uuid> = wanted
            .iter()
            .filter(|id| !known.contains_key(id))
            .copied()
            .collect();
        cache.known.extend(known.keys());
        if unknown.is_empty() {
            return Ok(());
        }
        let found = profile.existing(ctx, &unknown).await?;
        let found_list: Vec<Uuid> = found.iter().copied().collect();
        store::remember_customers(&self.pool, ctx.tenant_id, &found_list).await?;
        for id in unknown {
            if found.contains(&id) {
                cache.known.insert(id);
            } else {
                cache.missing.insert(id);
            }
        }
        Ok(())
    }

    /// Records a batch. Outcomes come in the order of `items`; an error is a
    /// failure of the whole batch (nothing of it was written).
    pub async fn record(
        &self,
        ctx: &CallContext,
        items: Vec<Result<Prepared, Refusal>>,
        cache: &mut CallCache,
    ) -> Result<Vec<Outcome>, ApiError> {
        let tenant = ctx.tenant_id;
        self.resolve_sets(ctx, &items, cache).await?;
        self.check_ids(ctx, &items, cache).await?;

        // Who each interaction is for, as given or resolved.
        let mut slots: Vec<Result<(Prepared, Uuid, bool), Refusal>> =
            Vec::with_capacity(items.len());
        for item in items {
            slots.push(item.and_then(|p| match &p.new.customer {
                CustomerInput::Id(id) => {
                    if cache.missing.contains(id) {
                        Err(Refusal {
                            missing_id: Some(*id),
                            ..Refusal::new(
                                RejectionReason::CustomerNotFound,
                                format!("customer {id} not found"),
                            )
                        })
                    } else {
                        let id = *id;
                        Ok((p, id, false))
                    }
                }
                CustomerInput::Identifiers(_) => {
                    let key = p.new.identifier_set_key().unwrap_or_default();
                    match cache.sets.get(&key) {
                        Some(Ok((id, created))) => {
                            let id = *id;
                            let first = *created && cache.reported_created.insert(id);
                            Ok((p, id, first))
                        }
                        Some(Err(r)) => Err(r.clone()),
                        None => Err(Refusal::new(
                            RejectionReason::CustomerNotFound,
                            "the identifiers were not resolved",
                        )),
                    }
                }
            }));
        }

        // Campaigns must exist.
        let mut campaigns: Vec<Uuid> = slots
            .iter()
            .flatten()
            .filter_map(|(p, _, _)| p.new.campaign_id)
            .collect();
        campaigns.sort_unstable();
        campaigns.dedup();
        let existing = store::existing_campaigns(&self.pool, tenant, &campaigns).await?;
        for slot in slots.iter_mut() {
            if let Ok((p, _, _)) = slot
                && let Some(c) = p.new.campaign_id
                && !existing.contains(&c)
            {
                *slot = Err(Refusal {
                    missing_id: Some(c),
                    ..Refusal::new(
                        RejectionReason::CampaignNotFound,
                        format!("campaign {c} not found"),
                    )
                });
            }
        }

        self.ensure_partitions(
            slots
                .iter()
                .flatten()
                .map(|(p, _, _)| p.new.occur_time.year()),
        )
        .await?;

        let mut tx = self.pool.begin().await?;
        rapport_kit::db::prefer_key_lookups(&mut tx).await?;
        store::lock_customers_shared(&mut tx, tenant).await?;
        let mut originals: Vec<Uuid> = slots.iter().flatten().map(|(_, id, _)| *id).collect();
        originals.sort_unstable();
        originals.dedup();
        let known = store::known_customers(&mut tx, tenant, &originals).await?;

        let now = crate::domain::validate::to_micros(Utc::now());
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(slots.len());
        // (index, stored, key, hash) of the interactions to write.
        let mut fresh: Vec<(usize, StoredInteraction, bool)> = Vec::new();
        let mut hashes: Vec<[u8; 32]> = Vec::new();
        for (n, slot) in slots.into_iter().enumerate() {
            match slot {
                Err(r) => outcomes.push(Some(Outcome::Rejected(r))),
                Ok((p, original, created)) => {
                    let k = known.get(&original);
                    if k.is_some_and(|k| k.erased) {
                        outcomes.push(Some(Outcome::Rejected(Refusal::new(
                            RejectionReason::CustomerErased,
                            format!("customer {original} has been erased"),
                        ))));
                        continue;
                    }
                    let current = k.map_or(original, |k| k.current);
                    let stored =
                        StoredInteraction::from_new(&p.new, Uuid::now_v7(), original, current, now);
                    outcomes.push(None);
                    fresh.push((n, stored, created));
                    hashes.push(p.hash);
                }
            }
        }

        // Idempotency keys: the first interaction with a key claims it; later
        // ones with the same key in this batch share its fate when their
        // content is the same, and conflict otherwise.
        let mut first_of_key: HashMap<&str, usize> = HashMap::new();
        let mut followers: Vec<(usize, usize)> = Vec::new();
        for (f, (_, stored, _)) in fresh.iter().enumerate() {
            if let Some(k) = stored.idempotency_key.as_deref() {
                match first_of_key.get(k) {
                    None => {
                        first_of_key.insert(k, f);
                    }
                    Some(&lead) => followers.push((f, lead)),
                }
            }
        }
        let claims: Vec<KeyClaim<'_>> = first_of_key
            .iter()
            .map(|(k, &f)| KeyClaim {
                key: k,
                interaction_id: fresh[f].1.interaction_id,
                occur_time: fresh[f].1.occur_time,
                hash: &hashes[f],
            })
            .collect();
        let claimed = store::claim_keys(&mut tx, tenant, &claims).await?;
        let taken: Vec<&str> = first_of_key
            .keys()
            .filter(|k| !claimed.contains(**k))
            .copied()
            .collect();
        let existing_keys = store::claimed_keys(&mut tx, tenant, &taken).await?;
        // Fate of each fresh interaction: None = write it.
        let mut fate: Vec<Option<Outcome>> = vec![None; fresh.len()];
        for (k, &f) in &first_of_key {
            if claimed.contains(*k) {
                continue;
            }
            fate[f] = Some(match existing_keys.get(*k) {
                Some(e) if e.content_hash == hashes[f] => Outcome::Duplicate {
                    interaction_id: e.interaction_id,
                    occur_time: e.occur_time,
                },
                _ => Outcome::Rejected(Refusal::new(
                    RejectionReason::IdempotencyConflict,
                    format!(
                        "idempotency key {k:?} is already used by an interaction with different content"
                    ),
                )),
            });
        }
        for (f, lead) in followers {
            let key = fresh[f].1.idempotency_key.clone().unwrap_or_default();
            fate[f] = Some(if hashes[f] != hashes[lead] {
                Outcome::Rejected(Refusal::new(
                    RejectionReason::IdempotencyConflict,
                    format!(
                        "idempotency key {key:?} is already used by an interaction with different content"
                    ),
                ))
            } else {
                match &fate[lead] {
                    None => Outcome::Duplicate {
                        interaction_id: fresh[lead].1.interaction_id,
                        occur_time: fresh[lead].1.occur_time,
                    },
                    Some(o) => o.clone(),
                }
            });
        }

        let mut to_write: Vec<StoredInteraction> = Vec::new();
        let mut events: Vec<NewEvent> = Vec::with_capacity(fresh.len());
        let mut written: Vec<(usize, bool)> = Vec::new();
        for (f, (n, stored, created)) in fresh.into_iter().enumerate() {
            match fate[f].take() {
                Some(o) => outcomes[n] = Some(o),
                None => {
                    events.push(NewEvent::new(
                        tenant,
                        "interaction",
                        stored.interaction_id.to_string(),
                        "InteractionRecorded",
                        &envelope(Event::InteractionRecorded(stored.recorded_event())),
                    ));
                    written.push((n, created));
                    to_write.push(stored);
                }
            }
        }
        store::copy_interactions(&mut tx, tenant, &to_write).await?;
        feed::append(&mut tx, &events).await?;
        tx.commit().await?;
        for ((n, created), stored) in written.into_iter().zip(to_write) {
            outcomes[n] = Some(Outcome::Accepted {
                stored: Box::new(stored),
                customer_created: created,
            });
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::Rejected(Refusal::new(RejectionReason::Unspecified, "not processed"))
                })
            })
            .collect();
        count_outcomes(&outcomes);
        Ok(outcomes)
    }
}

/// Counts recorded interactions by outcome
/// (`rapport_interaction_ingested_total{outcome}`): its rate is the
/// ingestion rate operators watch.
fn count_outcomes(outcomes: &[Outcome]) {
    let (mut accepted, mut duplicate, mut rejected) = (0u64, 0u64, 0u64);
    for o in outcomes {
        match o {
            Outcome::Accepted { .. } => accepted += 1,
            Outcome::Duplicate { .. } => duplicate += 1,
            Outcome::Rejected(_) => rejected += 1,
        }
    }
    for (outcome, n) in [
        ("accepted", accepted),
        ("duplicate", duplicate),
        ("rejected", rejected),
    ] {
        if n > 0 {
            metrics::counter!("rapport_interaction_ingested_total", "outcome" => outcome)
                .increment(n);
        }
    }
}
