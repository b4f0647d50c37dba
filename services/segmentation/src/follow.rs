//! The three feed consumers that keep the feature projection current: the
//! profile service (descriptive data, consents, merges, deletions), the
//! interaction service (every interaction, service request status,
//! reassignments) and the valuation service (CLV, P(alive), ...). Each batch
//! of one tenant's events is applied in the consumer's transaction together
//! with its cursor: set-based statements for the batch, interaction counters
//! updated incrementally, then each changed customer rescored, reclassified
//! and re-evaluated for the dynamic segments once. Every writer of a tenant's
//! projection takes the tenant's lock first (`store::lock_tenant`), so the
//! consumers never deadlock with one another or with refreshes.
//!
//! Events are typed (each service's envelope of `events.proto`, decoded with
//! [`feed::decode`]); events without a typed body (appended before typed
//! events) and redacted events are skipped. The conversions from the
//! generated messages to the store's values are pure functions.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rapport_kit::convert::from_timestamp;
use rapport_kit::feed;
use rapport_proto::rapport::common::v1::{ChangeEvent, Money, RelationshipStage};
use rapport_proto::rapport::interaction::v1::{
    self as interaction, InteractionEvent, InteractionType, ServiceRequestStatus, interaction_event,
};
use rapport_proto::rapport::profile::v1::{
    ConsentChannel, ConsentPurpose, ConsentStatus, Customer, CustomerKind, ProfileEvent,
    attribute_value, profile_event,
};
use rapport_proto::rapport::segmentation::v1::MembershipChangeReason;
use rapport_proto::rapport::valuation::v1::{
    CustomerValueChanged, ValuationEvent, ValueTier, valuation_event,
};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::removal::Removal;
use crate::domain::segment::Kind;
use crate::engine;
use crate::store::{self, Change, EventRow, ProfileFacts, ValueFacts};

/// Cursor names.
pub const PROFILE_CURSOR: &str = "profile";
/// Cursor names.
pub const INTERACTION_CURSOR: &str = "interaction";
/// Cursor names.
pub const VALUATION_CURSOR: &str = "valuation";

type Result<T> = std::result::Result<T, sqlx::Error>;

/// A UUID field of an event; None when empty or malformed.
fn uuid(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(from_timestamp)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// An enum value's name without its prefix, lower case
/// ("CUSTOMER_KIND_PERSON" -> "person"); None for UNSPECIFIED or an unknown
/// value.
fn short(name: Option<&str>, prefix: &str) -> Option<String> {
    let s = name?;
    let s = s.strip_prefix(prefix).unwrap_or(s).to_ascii_lowercase();
    (!s.is_empty() && s != "unspecified").then_some(s)
}

/// A decimal from a double, through its shortest round-trip text (0.83 is
/// 0.83, not its binary expansion), normalised; None when not finite or out
/// of the decimal range.
pub fn decimal_of(x: f64) -> Option<Decimal> {
    if !x.is_finite() {
        return None;
    }
    let s = x.to_string();
    Decimal::from_str(&s)
        .or_else(|_| Decimal::from_scientific(&s))
        .ok()
        .map(|d| d.normalize())
}

/// The exact amount of a Money, `units + nanos / 10^9`, normalised; None
/// when `nanos` is out of range or of the other sign than `units`.
pub fn amount(m: &Money) -> Option<Decimal> {
    let nanos_ok = (-999_999_999..=999_999_999).contains(&m.nanos)
        && !(m.units > 0 && m.nanos < 0)
        && !(m.units < 0 && m.nanos > 0);
    if !nanos_ok {
        return None;
    }
    Decimal::from(m.units)
        .checked_add(Decimal::new(i64::from(m.nanos), 9))
        .map(|d| d.normalize())
}

/// The currency and amount of a Money; None when unset, without a currency
/// or malformed.
pub fn money(m: Option<&Money>) -> Option<(String, Decimal)> {
    let m = m?;
    if m.currency_code.is_empty() {
        return None;
    }
    Some((m.currency_code.clone(), amount(m)?))
}

// ---------------------------------------------------------------------------
// Profile.

/// The stored form of an attribute value and its type; None when unset or
/// not representable (a number out of the decimal range, a bad time).
fn attribute(v: &attribute_value::Value) -> Option<(Value, &'static str)> {
    use attribute_value::Value as V;
    Some(match v {
        V::StringValue(s) => (Value::String(s.clone()), "string"),
        V::NumberValue(n) => (Value::String(decimal_of(*n)?.to_string()), "decimal"),
        V::BoolValue(b) => (Value::Bool(*b), "bool"),
        V::TimestampValue(t) => (Value::String(rfc3339(from_timestamp(t)?)), "timestamp"),
        V::StringListValue(l) => (json!(l.values), "string_list"),
    })
}

/// The features a profile customer snapshot gives, with the attribute types
/// seen on it (in order of name).
pub fn profile_facts(c: &Customer) -> (ProfileFacts, Vec<(String, &'static str)>) {
    let kind = short(
        CustomerKind::try_from(c.kind).ok().map(|k| k.as_str_name()),
        "CUSTOMER_KIND_",
    );
    let country = (!c.country_code.is_empty()).then(|| c.country_code.to_ascii_uppercase());
    let tags = c.tags.iter().map(|t| t.to_lowercase()).collect();
    let profile_stage = short(
        RelationshipStage::try_from(c.relationship_stage)
            .ok()
            .map(|s| s.as_str_name()),
        "RELATIONSHIP_STAGE_",
    );
    let mut names: Vec<&String> = c.attributes.keys().collect();
    names.sort();
    let mut attributes = Map::new();
    let mut types = Vec::new();
    for name in names {
        let Some((value, ty)) = c
            .attributes
            .get(name)
            .and_then(|v| v.value.as_ref())
            .and_then(attribute)
        else {
            continue;
        };
        attributes.insert(name.clone(), value);
        types.push((name.clone(), ty));
    }
    // The record in force for each (channel, purpose): the latest.
    let mut latest: std::collections::BTreeMap<String, (bool, DateTime<Utc>)> =
        std::collections::BTreeMap::new();
    for r in &c.consents {
        let (Some(key), Some(t)) = (
            consent_key(r.channel, r.purpose),
            time(r.effective_time.as_ref()),
        ) else {
            continue;
        };
        let granted = r.status == ConsentStatus::Granted as i32;
        if latest.get(&key).is_none_or(|(_, old)| t >= *old) {
            latest.insert(key, (granted, t));
        }
    }
    let consents = latest
        .into_iter()
        .map(|(k, (granted, t))| (k, json!({"granted": granted, "time": rfc3339(t)})))
        .collect();
    (
        ProfileFacts {
            kind,
            country,
            tags,
            profile_stage,
            attributes: Value::Object(attributes),
            consents: Value::Object(consents),
        },
        types,
    )
}

/// The stored key of a consent, "channel:purpose" (e.g. "email:marketing");
/// None when either is unspecified or unknown.
pub fn consent_key(channel: i32, purpose: i32) -> Option<String> {
    let ch = short(
        ConsentChannel::try_from(channel)
            .ok()
            .map(|c| c.as_str_name()),
        "CONSENT_CHANNEL_",
    )?;
    let pu = short(
        ConsentPurpose::try_from(purpose)
            .ok()
            .map(|p| p.as_str_name()),
        "CONSENT_PURPOSE_",
    )?;
    Some(format!("{ch}:{pu}"))
}

/// Customers whose features a batch changed, with whether their purchases
/// may have changed and why: rescored, reclassified and re-evaluated once
/// each, at the end of the batch.
#[derive(Default)]
struct Changed(Vec<(Uuid, bool, MembershipChangeReason)>);

impl Changed {
    fn add(&mut self, customers: &[Uuid], purchases: bool, reason: MembershipChangeReason) {
        self.0
            .extend(customers.iter().map(|c| (*c, purchases, reason)));
    }

    async fn apply(self, tx: &mut PgConnection, tenant: Uuid, now: DateTime<Utc>) -> Result<()> {
        let mut reasons: Vec<MembershipChangeReason> = self.0.iter().map(|c| c.2).collect();
        reasons.sort_by_key(|r| *r as i32);
        reasons.dedup();
        for reason in reasons {
            let customers: Vec<(Uuid, bool)> = self
                .0
                .iter()
                .filter(|c| c.2 == reason)
                .map(|c| (c.0, c.1))
                .collect();
            engine::customers_changed(tx, tenant, &customers, reason, now).await?;
        }
        Ok(())
    }
}

/// Profile snapshots and consent decisions of a batch, written together.
#[derive(Default)]
struct ProfileWrites {
    /// The latest snapshot per customer, in order of first appearance.
    snapshots: Vec<(Uuid, ProfileFacts)>,
    index: std::collections::HashMap<Uuid, usize>,
    types: Vec<(String, &'static str)>,
    /// Customers created without a snapshot.
    bare: Vec<Uuid>,
    consents: Vec<store::ConsentRow>,
}

impl ProfileWrites {
    fn snapshot(&mut self, customer: Uuid, snapshot: Option<&Customer>) {
        let Some(c) = snapshot else {
            self.bare.push(customer);
            return;
        };
        let (facts, types) = profile_facts(c);
        self.types.extend(types);
        match self.index.get(&customer) {
            Some(&i) => self.snapshots[i].1 = facts,
            None => {
                self.index.insert(customer, self.snapshots.len());
                self.snapshots.push((customer, facts));
            }
        }
    }

    /// Writes what was gathered; the customers whose features changed go to
    /// `changed`.
    async fn flush(
        &mut self,
        tx: &mut PgConnection,
        tenant: Uuid,
        changed: &mut Changed,
    ) -> Result<()> {
        let reason = MembershipChangeReason::FeaturesChanged;
        if !self.types.is_empty() {
            let mut types = std::mem::take(&mut self.types);
            types.sort();
            types.dedup_by(|a, b| a.0 == b.0);
            store::note_attribute_types(tx, tenant, &types).await?;
        }
        let written = store::set_profiles(tx, tenant, &self.snapshots).await?;
        changed.add(&written, false, reason);
        let bare = store::ensure_features_many(tx, tenant, &self.bare).await?;
        changed.add(&bare, false, reason);
        let consented = store::set_consents(tx, tenant, &self.consents).await?;
        changed.add(&consented, false, reason);
        *self = Self::default();
        Ok(())
    }
}

/// Writes one customer's snapshot; whether the customer has features.
async fn write_snapshot(
    tx: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    snapshot: Option<&Customer>,
) -> Result<bool> {
    let mut one = ProfileWrites::default();
    one.snapshot(customer, snapshot);
    let mut changed = Changed::default();
    one.flush(tx, tenant, &mut changed).await?;
    Ok(!changed.0.is_empty())
}

/// A removed customer (deleted or erased) leaves every segment.
async fn remove_customer(
    tx: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    erased: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    engine::customer_removed(
        tx,
        tenant,
        customer,
        if erased {
            Removal::Erased
        } else {
            Removal::Deleted
        },
        None,
        MembershipChangeReason::CustomerRemoved,
        now,
    )
    .await?;
    if erased {
        store::delete_events(tx, tenant, customer).await?;
    }
    store::mark_rfm_dirty(tx, tenant).await
}

/// Applies profile events.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProfileFollower;

impl ProfileFollower {
    /// Applies a batch of one tenant's profile events at `now`: snapshots
    /// and consents in one statement each, deletions, erasures, merges and
    /// unmerges (rare) in feed order after what came before them, and each
    /// changed customer re-evaluated once.
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
        now: DateTime<Utc>,
    ) -> Result<()> {
        store::lock_tenant(tx, tenant).await?;
        let mut writes = ProfileWrites::default();
        let mut changed = Changed::default();
        let feature_reason = MembershipChangeReason::FeaturesChanged;
        use profile_event::Event as E;
        for event in events {
            let Some(ProfileEvent { event: Some(e) }) = feed::decode::<ProfileEvent>(event) else {
                continue;
            };
            match e {
                E::CustomerCreated(e) => {
                    if let Some(c) = uuid(&e.customer_id) {
                        writes.snapshot(c, e.customer.as_ref());
                    }
                }
                E::CustomerUpdated(e) => {
                    if let Some(c) = uuid(&e.customer_id) {
                        writes.snapshot(c, e.customer.as_ref());
                    }
                }
                E::ConsentChanged(e) => {
                    if let (Some(c), Some(key), Some(t)) = (
                        uuid(&e.customer_id),
                        consent_key(e.channel, e.purpose),
                        time(e.effective_time.as_ref()),
                    ) {
                        let granted = e.status == ConsentStatus::Granted as i32;
                        writes.consents.push((c, key, granted, t));
                    }
                }
                E::CustomerUndeleted(e) => {
                    let Some(c) = uuid(&e.customer_id) else {
                        continue;
                    };
                    writes.flush(tx, tenant, &mut changed).await?;
                    store::restore_customer(tx, tenant, c).await?;
                    if write_snapshot(tx, tenant, c, e.customer.as_ref()).await? {
                        store::recompute_summaries(tx, tenant, &[c]).await?;
                        changed.add(&[c], true, feature_reason);
                    }
                }
                E::CustomerDeleted(e) => {
                    let Some(c) = uuid(&e.customer_id).or_else(|| uuid(&event.aggregate_id)) else {
                        continue;
                    };
                    writes.flush(tx, tenant, &mut changed).await?;
                    remove_customer(tx, tenant, c, false, now).await?;
                }
                E::CustomerErased(e) => {
                    let Some(c) = uuid(&e.customer_id).or_else(|| uuid(&event.aggregate_id)) else {
                        continue;
                    };
                    writes.flush(tx, tenant, &mut changed).await?;
                    remove_customer(tx, tenant, c, true, now).await?;
                }
                E::CustomerMerged(e) => {
                    let (Some(merged), Some(survivor)) =
                        (uuid(&e.merged_customer_id), uuid(&e.survivor_customer_id))
                    else {
                        continue;
                    };
                    writes.flush(tx, tenant, &mut changed).await?;
                    let left = engine::customer_removed(
                        tx,
                        tenant,
                        merged,
                        Removal::Merged,
                        Some(survivor),
                        MembershipChangeReason::CustomerMerged,
                        now,
                    )
                    .await?;
                    store::move_events(tx, tenant, merged, survivor, None).await?;
                    if write_snapshot(tx, tenant, survivor, e.survivor.as_ref()).await? {
                        // The survivor enters the static segments the merged one was in.
                        let statics: Vec<(Uuid, String)> = left
                            .into_iter()
                            .filter(|(_, _, kind)| *kind == Kind::Static)
                            .map(|(id, name, _)| (id, name))
                            .collect();
                        let mut changes = Vec::new();
                        for (seg, name) in &statics {
                            if !store::add_members(tx, tenant, *seg, &[survivor], now)
                                .await?
                                .is_empty()
                            {
                                changes.push(Change {
                                    segment_id: *seg,
                                    segment_name: name.clone(),
                                    customer_id: survivor,
                                    entered: true,
                                    reason: MembershipChangeReason::CustomerMerged,
                                });
                            }
                        }
                        store::record_changes(tx, tenant, &changes, now).await?;
                        store::recompute_summaries(tx, tenant, &[survivor]).await?;
                        changed.add(&[survivor], true, MembershipChangeReason::CustomerMerged);
                    }
                }
                E::CustomerUnmerged(e) => {
                    let (Some(restored), Some(survivor)) =
                        (uuid(&e.restored_customer_id), uuid(&e.survivor_customer_id))
                    else {
                        continue;
                    };
                    writes.flush(tx, tenant, &mut changed).await?;
                    store::restore_customer(tx, tenant, restored).await?;
                    if write_snapshot(tx, tenant, restored, e.customer.as_ref()).await? {
                        store::recompute_summaries(tx, tenant, &[restored]).await?;
                        changed.add(&[restored], true, feature_reason);
                    }
                    if write_snapshot(tx, tenant, survivor, e.survivor.as_ref()).await? {
                        changed.add(&[survivor], false, feature_reason);
                    }
                }
                E::ContactLinked(_) | E::ContactUnlinked(_) | E::Redacted(_) => {}
            }
        }
        writes.flush(tx, tenant, &mut changed).await?;
        changed.apply(tx, tenant, now).await
    }
}

rapport_kit::feed_handler!(ProfileFollower => apply_batch, Utc::now());

// ---------------------------------------------------------------------------
// Interaction.

/// The stored type of an interaction: the built-in type in lower case
/// ("survey_response"), or the custom type (with `true`); None for
/// UNSPECIFIED, an unknown value or a custom type without its name.
pub fn event_kind(r#type: i32, custom_type: &str) -> Option<(String, bool)> {
    let t = InteractionType::try_from(r#type).ok()?;
    if t == InteractionType::Custom {
        return (!custom_type.is_empty()).then(|| (custom_type.to_string(), true));
    }
    short(Some(t.as_str_name()), "INTERACTION_TYPE_").map(|s| (s, false))
}

/// Whether a service request status counts as open.
pub fn is_open(status: i32) -> bool {
    matches!(
        ServiceRequestStatus::try_from(status),
        Ok(ServiceRequestStatus::Open | ServiceRequestStatus::InProgress)
    )
}

/// The interactions an `InteractionsReassigned` names; None when it moved
/// too many to list (then everything of the giving customer moved).
pub fn reassigned_ids(e: &interaction::InteractionsReassigned) -> Option<Vec<Uuid>> {
    (e.ids_complete || !e.interaction_ids.is_empty())
        .then(|| e.interaction_ids.iter().filter_map(|s| uuid(s)).collect())
}

/// The tenant's currency as a batch learns it: read once, claimed by the
/// first purchase with an amount when the tenant has none yet.
struct Currency(Option<Option<String>>);

impl Currency {
    async fn of(
        &mut self,
        tx: &mut PgConnection,
        tenant: Uuid,
        claim: Option<&str>,
    ) -> Result<Option<String>> {
        let known = match self.0.take() {
            Some(c) => c,
            None => store::currency(tx, tenant).await?,
        };
        let now = match (known, claim) {
            (None, Some(code)) => Some(store::claim_currency(tx, tenant, code).await?),
            (known, _) => known,
        };
        self.0 = Some(now.clone());
        Ok(now)
    }
}

/// Applies interaction events: a batch's new interactions are stored and
/// added to their customers' features in one statement (incrementally: the
/// customers' older interactions are not read again), status changes of
/// service requests likewise, and each changed customer is re-evaluated
/// once. Reassignments and erasures (rare) apply in feed order.
#[derive(Debug, Default, Clone, Copy)]
pub struct InteractionFollower;

impl InteractionFollower {
    /// Applies a batch of one tenant's interaction events at `now`.
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
        now: DateTime<Utc>,
    ) -> Result<()> {
        store::lock_tenant(tx, tenant).await?;
        let reason = MembershipChangeReason::FeaturesChanged;
        let mut currency = Currency(None);
        let mut rows: Vec<EventRow> = Vec::new();
        let mut opens: Vec<(Uuid, bool)> = Vec::new();
        let mut changed = Changed::default();
        use interaction_event::Event as E;
        for event in events {
            let Some(InteractionEvent { event: Some(e) }) = feed::decode::<InteractionEvent>(event)
            else {
                continue;
            };
            match e {
                E::InteractionRecorded(e) => {
                    let (Some(i), Some(c), Some((kind, custom)), Some(at)) = (
                        uuid(&e.interaction_id),
                        uuid(&e.customer_id),
                        event_kind(e.r#type, &e.custom_type),
                        time(e.occur_time.as_ref()),
                    ) else {
                        continue;
                    };
                    let purchase = kind == "purchase";
                    let amount = money(e.amount.as_ref());
                    let claim = amount
                        .as_ref()
                        .filter(|_| purchase)
                        .map(|(c, _)| c.as_str());
                    let tenant_currency = currency.of(tx, tenant, claim).await?;
                    let in_currency = |m: Option<(String, Decimal)>| {
                        m.filter(|(code, _)| Some(code) == tenant_currency.as_ref())
                            .map(|(_, d)| d)
                    };
                    rows.push(EventRow {
                        customer_id: c,
                        interaction_id: i,
                        kind,
                        custom,
                        occur_time: at,
                        amount: in_currency(amount),
                        margin: in_currency(money(e.margin.as_ref())),
                        csat: e.csat,
                        nps: e.nps,
                        campaign_id: uuid(&e.campaign_id),
                        open: is_open(e.service_request_status),
                    });
                }
                E::ServiceRequestUpdated(e) => {
                    if let Some(i) = uuid(&e.interaction_id) {
                        opens.push((i, is_open(e.status)));
                    }
                }
                E::InteractionsReassigned(e) => {
                    let (Some(from), Some(to)) =
                        (uuid(&e.from_customer_id), uuid(&e.to_customer_id))
                    else {
                        continue;
                    };
                    flush(tx, tenant, &mut rows, &mut opens, &mut changed).await?;
                    let ids = reassigned_ids(&e);
                    store::move_events(tx, tenant, from, to, ids.as_deref()).await?;
                    let both = store::recompute_summaries(tx, tenant, &[from, to]).await?;
                    changed.add(&both, true, reason);
                }
                E::CustomerInteractionsErased(e) => {
                    if let Some(c) = uuid(&e.customer_id) {
                        flush(tx, tenant, &mut rows, &mut opens, &mut changed).await?;
                        store::delete_events(tx, tenant, c).await?;
                    }
                }
                E::CampaignCreated(_) | E::CampaignUpdated(_) | E::Redacted(_) => {}
            }
        }
        flush(tx, tenant, &mut rows, &mut opens, &mut changed).await?;
        changed.apply(tx, tenant, now).await
    }
}

/// Stores gathered interactions and status changes; the customers whose
/// features changed go to `changed`.
async fn flush(
    tx: &mut PgConnection,
    tenant: Uuid,
    rows: &mut Vec<EventRow>,
    opens: &mut Vec<(Uuid, bool)>,
    changed: &mut Changed,
) -> Result<()> {
    let reason = MembershipChangeReason::FeaturesChanged;
    if !rows.is_empty() {
        let customers: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
        store::ensure_features_many(tx, tenant, &customers).await?;
        for (c, bought) in store::record_interactions(tx, tenant, rows).await? {
            changed.add(&[c], bought, reason);
        }
        rows.clear();
    }
    if !opens.is_empty() {
        let moved = store::set_open_many(tx, tenant, opens).await?;
        changed.add(&moved, false, reason);
        opens.clear();
    }
    Ok(())
}

rapport_kit::feed_handler!(InteractionFollower => apply_batch, Utc::now());

// ---------------------------------------------------------------------------
// Valuation.

/// The stored name of a value tier ("top", "high", "medium", "low"); None
/// when unspecified or unknown.
pub fn tier_name(tier: i32) -> Option<String> {
    short(
        ValueTier::try_from(tier).ok().map(|t| t.as_str_name()),
        "VALUE_TIER_",
    )
}

/// The valuation columns of a `CustomerValueChanged`, with the CLV kept
/// only in the tenant's currency (or when either currency is unknown).
pub fn value_facts(e: &CustomerValueChanged, tenant_currency: Option<&str>) -> ValueFacts {
    let clv = e.clv.as_ref().and_then(|m| {
        let same = match tenant_currency {
            Some(t) => m.currency_code.is_empty() || m.currency_code == t,
            None => true,
        };
        if same { amount(m) } else { None }
    });
    let money = |m: &Option<rapport_proto::rapport::common::v1::Money>| {
        m.as_ref().and_then(|m| {
            let same = match tenant_currency {
                Some(t) => m.currency_code.is_empty() || m.currency_code == t,
                None => true,
            };
            if same { amount(m) } else { None }
        })
    };
    ValueFacts {
        clv,
        p_alive: decimal_of(e.p_alive),
        expected_purchases: decimal_of(e.expected_purchases),
        value_tier: tier_name(e.value_tier),
        net_clv: money(&e.net_clv),
        cost_to_serve: money(&e.cost_to_serve),
        net_profit: money(&e.net_profit),
        profit_decile: i16::try_from(e.profit_decile)
            .ok()
            .filter(|d| (1..=10).contains(d)),
    }
}

/// Applies valuation events: each customer's latest value in the batch, in
/// one statement, and the customers whose values changed re-evaluated once.
#[derive(Debug, Default, Clone, Copy)]
pub struct ValuationFollower;

impl ValuationFollower {
    /// Applies a batch of one tenant's valuation events at `now`.
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
        now: DateTime<Utc>,
    ) -> Result<()> {
        store::lock_tenant(tx, tenant).await?;
        let mut currency = Currency(None);
        let mut values: Vec<(Uuid, ValueFacts)> = Vec::new();
        use valuation_event::Event as E;
        for event in events {
            let Some(ValuationEvent { event: Some(e) }) = feed::decode::<ValuationEvent>(event)
            else {
                continue;
            };
            let (customer, facts) = match e {
                E::CustomerValueChanged(e) => {
                    let c = currency.of(tx, tenant, None).await?;
                    (e.customer_id.clone(), value_facts(&e, c.as_deref()))
                }
                E::CustomerValueRemoved(e) => (e.customer_id, ValueFacts::default()),
                E::ModelFitted(_) | E::ModelActivated(_) | E::Redacted(_) => continue,
            };
            if let Some(c) = uuid(&customer) {
                values.push((c, facts));
            }
        }
        let written = store::set_values(tx, tenant, &values).await?;
        let mut changed = Changed::default();
        changed.add(&written, false, MembershipChangeReason::FeaturesChanged);
        changed.apply(tx, tenant, now).await
    }
}

rapport_kit::feed_handler!(ValuationFollower => apply_batch, Utc::now());

#[cfg(test)]
mod tests {
    use super::*;

    use rapport_proto::rapport::profile::v1::{AttributeValue, ConsentRecord, StringList};

    fn ts(seconds: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos: 0 }
    }

    fn eur(units: i64, nanos: i32) -> Money {
        Money {
            currency_code: "EUR".into(),
            units,
            nanos,
        }
    }

    #[test]
    fn snapshots_become_features() {
        use attribute_value::Value as V;
        let attr = |v: V| AttributeValue { value: Some(v) };
        let consent = |channel: ConsentChannel, status: ConsentStatus, at: i64| ConsentRecord {
            channel: channel as i32,
            purpose: ConsentPurpose::Marketing as i32,
            status: status as i32,
            effective_time: Some(ts(at)),
            ..Default::default()
        };
        let c = Customer {
            customer_id: "x".into(),
            kind: CustomerKind::Organization as i32,
            country_code: "es".into(),
            tags: vec!["VIP".into(), "golf".into()],
            relationship_stage: RelationshipStage::Commitment as i32,
            attributes: [
                ("tier".to_string(), attr(V::StringValue("gold".into()))),
                ("score".to_string(), attr(V::NumberValue(12.5))),
                ("active".to_string(), attr(V::BoolValue(true))),
                (
                    "since".to_string(),
                    attr(V::TimestampValue(ts(1_735_787_045))),
                ),
                (
                    "hobbies".to_string(),
                    attr(V::StringListValue(StringList {
                        values: vec!["golf".into()],
                    })),
                ),
                ("unset".to_string(), AttributeValue { value: None }),
                ("huge".to_string(), attr(V::NumberValue(f64::MAX))),
            ]
            .into_iter()
            .collect(),
            consents: vec![
                consent(ConsentChannel::Email, ConsentStatus::Granted, 1_735_689_600),
                consent(ConsentChannel::Any, ConsentStatus::Withdrawn, 1_738_368_000),
                // An older record of the same pair does not win.
                consent(ConsentChannel::Any, ConsentStatus::Granted, 1_700_000_000),
            ],
            ..Default::default()
        };
        let (f, types) = profile_facts(&c);
        assert_eq!(f.kind.as_deref(), Some("organization"));
        assert_eq!(f.country.as_deref(), Some("ES"));
        assert_eq!(f.tags, vec!["vip", "golf"]);
        assert_eq!(f.profile_stage.as_deref(), Some("commitment"));
        assert_eq!(f.attributes["tier"], "gold");
        assert_eq!(f.attributes["score"], "12.5");
        assert_eq!(f.attributes["active"], true);
        assert_eq!(f.attributes["since"], "2025-01-02T03:04:05Z");
        assert_eq!(f.attributes["hobbies"], json!(["golf"]));
        assert!(f.attributes.get("unset").is_none());
        assert!(
            f.attributes.get("huge").is_none(),
            "beyond the decimal range"
        );
        assert_eq!(f.consents["email:marketing"]["granted"], true);
        assert_eq!(f.consents["any:marketing"]["granted"], false);
        assert_eq!(types.len(), 5);
        assert!(types.contains(&("score".to_string(), "decimal")));
    }

    #[test]
    fn unspecified_values_are_absent() {
        let (f, _) = profile_facts(&Customer::default());
        assert!(f.kind.is_none() && f.country.is_none() && f.profile_stage.is_none());
        let (f, _) = profile_facts(&Customer {
            kind: 999,
            relationship_stage: -3,
            ..Default::default()
        });
        assert!(f.kind.is_none() && f.profile_stage.is_none());
    }

    #[test]
    fn interaction_kinds() {
        assert_eq!(
            event_kind(InteractionType::SurveyResponse as i32, ""),
            Some(("survey_response".into(), false))
        );
        assert_eq!(
            event_kind(InteractionType::Custom as i32, "acme.webinar"),
            Some(("acme.webinar".into(), true))
        );
        assert_eq!(event_kind(InteractionType::Custom as i32, ""), None);
        assert_eq!(event_kind(InteractionType::Unspecified as i32, ""), None);
        assert_eq!(event_kind(12_345, ""), None);
        assert!(is_open(ServiceRequestStatus::InProgress as i32));
        assert!(!is_open(ServiceRequestStatus::Resolved as i32));
    }

    #[test]
    fn money_is_exact() {
        // EUR 10.50: the cents that JSON doubles used to drop.
        assert_eq!(
            money(Some(&eur(10, 500_000_000))),
            Some(("EUR".into(), Decimal::new(1050, 2)))
        );
        assert_eq!(
            money(Some(&eur(-7, -10_000_000))),
            Some(("EUR".into(), Decimal::new(-701, 2)))
        );
        assert_eq!(
            money(Some(&eur(0, 1))),
            Some(("EUR".into(), Decimal::new(1, 9)))
        );
        assert_eq!(
            amount(&eur(i64::MAX, 999_999_999)),
            Decimal::from(i64::MAX).checked_add(Decimal::new(999_999_999, 9))
        );
        // Malformed: nanos out of range or of the other sign; no currency.
        assert_eq!(money(Some(&eur(1, 1_000_000_000))), None);
        assert_eq!(money(Some(&eur(1, -5))), None);
        assert_eq!(money(Some(&eur(-1, 5))), None);
        assert_eq!(
            money(Some(&Money {
                currency_code: String::new(),
                units: 1,
                nanos: 0
            })),
            None
        );
        assert_eq!(money(None), None);
    }

    #[test]
    fn value_events() {
        let e = CustomerValueChanged {
            customer_id: "c".into(),
            clv: Some(eur(812, 400_000_000)),
            p_alive: 0.83,
            expected_purchases: 2.5,
            value_tier: ValueTier::Top as i32,
            ..Default::default()
        };
        let v = value_facts(&e, Some("EUR"));
        assert_eq!(v.clv, Some(Decimal::new(8124, 1)));
        assert_eq!(v.p_alive, Some(Decimal::new(83, 2)));
        assert_eq!(v.expected_purchases, Some(Decimal::new(25, 1)));
        assert_eq!(v.value_tier.as_deref(), Some("top"));
        // Another currency: no CLV.
        assert_eq!(value_facts(&e, Some("USD")).clv, None);
        // No CLV, a non-finite P(alive), no tier: those columns are empty.
        let empty = value_facts(
            &CustomerValueChanged {
                p_alive: f64::NAN,
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            (empty.clv, empty.p_alive, empty.value_tier),
            (None, None, None)
        );
    }
}
