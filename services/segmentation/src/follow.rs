//! The three feed consumers that keep the feature projection current: the
//! profile service (descriptive data, consents, merges, deletions), the
//! interaction service (every interaction, service request status,
//! reassignments) and the valuation service (CLV, P(alive), ...). Each event
//! is applied in the consumer's transaction together with its cursor, and is
//! followed at once by re-scoring, re-classification and re-evaluation of
//! the customer's dynamic segments.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rapport_kit::convert::struct_to_json;
use rapport_kit::feed::FeedHandler;
use rapport_proto::rapport::common::v1::ChangeEvent;
use rapport_proto::rapport::segmentation::v1::MembershipChangeReason;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine;
use crate::store::{self, Change, EventRow, ProfileFacts, ValueFacts};

/// Cursor names.
pub const PROFILE_CURSOR: &str = "profile";
/// Cursor names.
pub const INTERACTION_CURSOR: &str = "interaction";
/// Cursor names.
pub const VALUATION_CURSOR: &str = "valuation";

type Result<T> = std::result::Result<T, sqlx::Error>;

fn id(payload: &Value, key: &str) -> Option<Uuid> {
    payload
        .get(key)?
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn payload_of(event: &ChangeEvent) -> Value {
    event
        .payload
        .as_ref()
        .map(struct_to_json)
        .unwrap_or(Value::Null)
}

fn tenant_of(event: &ChangeEvent) -> Option<Uuid> {
    let t = Uuid::parse_str(&event.tenant_id).ok();
    if t.is_none() {
        tracing::warn!(
            sequence = event.sequence,
            "feed event without a tenant; skipped"
        );
    }
    t
}

/// A decimal from a JSON number or string (exact for strings).
pub fn decimal(v: &Value) -> Option<Decimal> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Decimal::from_str(&s)
        .or_else(|_| Decimal::from_scientific(&s))
        .ok()
        .map(|d| d.normalize())
}

/// A JSON enum name without its prefix, lower case ("CUSTOMER_KIND_PERSON"
/// -> "person"); None for UNSPECIFIED or absent.
fn short(v: Option<&Value>, prefix: &str) -> Option<String> {
    let s = v?.as_str()?;
    let s = s.strip_prefix(prefix).unwrap_or(s).to_ascii_lowercase();
    (!s.is_empty() && s != "unspecified").then_some(s)
}

// ---------------------------------------------------------------------------
// Profile.

/// The features a profile customer snapshot gives, with the attribute types
/// seen on it.
pub fn profile_facts(c: &Value) -> (ProfileFacts, Vec<(String, &'static str)>) {
    let kind = short(c.get("kind"), "CUSTOMER_KIND_");
    let country = c
        .get("country_code")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_uppercase());
    let tags = c
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let profile_stage = short(c.get("relationship_stage"), "RELATIONSHIP_STAGE_");
    let mut attributes = Map::new();
    let mut types = Vec::new();
    if let Some(attrs) = c.get("attributes").and_then(Value::as_object) {
        for (name, v) in attrs {
            let (value, ty) = if let Some(s) = v.get("string_value") {
                (s.clone(), "string")
            } else if let Some(n) = v.get("number_value") {
                match decimal(n) {
                    Some(d) => (Value::String(d.to_string()), "decimal"),
                    None => continue,
                }
            } else if let Some(b) = v.get("bool_value") {
                (b.clone(), "bool")
            } else if let Some(t) = v.get("timestamp_value") {
                match time(t) {
                    Some(t) => (
                        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                        "timestamp",
                    ),
                    None => continue,
                }
            } else if let Some(l) = v.get("string_list_value") {
                (
                    l.get("values").cloned().unwrap_or_else(|| json!([])),
                    "string_list",
                )
            } else {
                continue;
            };
            attributes.insert(name.clone(), value);
            types.push((name.clone(), ty));
        }
    }
    let mut consents = Map::new();
    for r in c
        .get("consents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(ch), Some(pu)) = (
            short(r.get("channel"), "CONSENT_CHANNEL_"),
            short(r.get("purpose"), "CONSENT_PURPOSE_"),
        ) else {
            continue;
        };
        let granted = r.get("status").and_then(Value::as_str) == Some("CONSENT_STATUS_GRANTED");
        let Some(t) = r.get("effective_time").and_then(time) else {
            continue;
        };
        let key = format!("{ch}:{pu}");
        let newer = consents
            .get(&key)
            .and_then(|o: &Value| o.get("time"))
            .and_then(time)
            .is_none_or(|old| t >= old);
        if newer {
            consents.insert(
                key,
                json!({"granted": granted, "time": t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)}),
            );
        }
    }
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

/// Writes a customer snapshot; returns whether the customer has features.
async fn write_snapshot(
    tx: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    snapshot: Option<&Value>,
) -> Result<bool> {
    match snapshot {
        Some(c) if c.is_object() => {
            let (facts, types) = profile_facts(c);
            store::note_attribute_types(tx, tenant, &types).await?;
            store::set_profile(tx, tenant, customer, &facts).await
        }
        _ => store::ensure_features(tx, tenant, customer).await,
    }
}

/// Applies profile events.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProfileFollower;

impl ProfileFollower {
    /// Applies one profile event at `now`.
    pub async fn apply_at(
        &self,
        tx: &mut PgConnection,
        event: &ChangeEvent,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(tenant) = tenant_of(event) else {
            return Ok(());
        };
        let p = payload_of(event);
        let feature_reason = MembershipChangeReason::FeaturesChanged;
        match event.event_type.as_str() {
            "CustomerCreated" | "CustomerUpdated" => {
                let Some(c) = id(&p, "customer_id") else {
                    return Ok(());
                };
                if write_snapshot(tx, tenant, c, p.get("customer")).await? {
                    engine::customer_changed(tx, tenant, c, false, feature_reason, now).await?;
                }
            }
            "CustomerUndeleted" => {
                let Some(c) = id(&p, "customer_id") else {
                    return Ok(());
                };
                store::restore_customer(tx, tenant, c).await?;
                if write_snapshot(tx, tenant, c, p.get("customer")).await? {
                    store::recompute_summary(tx, tenant, c).await?;
                    engine::customer_changed(tx, tenant, c, true, feature_reason, now).await?;
                }
            }
            "CustomerDeleted" | "CustomerErased" => {
                let Some(c) =
                    id(&p, "customer_id").or_else(|| Uuid::parse_str(&event.aggregate_id).ok())
                else {
                    return Ok(());
                };
                let erased = event.event_type == "CustomerErased";
                engine::customer_removed(
                    tx,
                    tenant,
                    c,
                    if erased { "erased" } else { "deleted" },
                    None,
                    MembershipChangeReason::CustomerRemoved,
                    now,
                )
                .await?;
                if erased {
                    store::delete_events(tx, tenant, c).await?;
                }
                store::mark_rfm_dirty(tx, tenant).await?;
            }
            "CustomerMerged" => {
                let (Some(merged), Some(survivor)) =
                    (id(&p, "merged_customer_id"), id(&p, "survivor_customer_id"))
                else {
                    return Ok(());
                };
                let left = engine::customer_removed(
                    tx,
                    tenant,
                    merged,
                    "merged",
                    Some(survivor),
                    MembershipChangeReason::CustomerMerged,
                    now,
                )
                .await?;
                store::move_events(tx, tenant, merged, survivor, None).await?;
                if write_snapshot(tx, tenant, survivor, p.get("survivor")).await? {
                    // The survivor enters the static segments the merged one was in.
                    let statics: Vec<(Uuid, String)> = left
                        .into_iter()
                        .filter(|(_, _, kind)| kind == "static")
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
                    store::recompute_summary(tx, tenant, survivor).await?;
                    engine::customer_changed(
                        tx,
                        tenant,
                        survivor,
                        true,
                        MembershipChangeReason::CustomerMerged,
                        now,
                    )
                    .await?;
                }
            }
            "CustomerUnmerged" => {
                let (Some(restored), Some(survivor)) = (
                    id(&p, "restored_customer_id"),
                    id(&p, "survivor_customer_id"),
                ) else {
                    return Ok(());
                };
                store::restore_customer(tx, tenant, restored).await?;
                if write_snapshot(tx, tenant, restored, p.get("customer")).await? {
                    store::recompute_summary(tx, tenant, restored).await?;
                    engine::customer_changed(tx, tenant, restored, true, feature_reason, now)
                        .await?;
                }
                if write_snapshot(tx, tenant, survivor, p.get("survivor")).await? {
                    engine::customer_changed(tx, tenant, survivor, false, feature_reason, now)
                        .await?;
                }
            }
            "ConsentChanged" => {
                let Some(c) = id(&p, "customer_id") else {
                    return Ok(());
                };
                let (Some(ch), Some(pu), Some(t)) = (
                    short(p.get("channel"), "CONSENT_CHANNEL_"),
                    short(p.get("purpose"), "CONSENT_PURPOSE_"),
                    p.get("effective_time").and_then(time),
                ) else {
                    return Ok(());
                };
                let granted =
                    p.get("status").and_then(Value::as_str) == Some("CONSENT_STATUS_GRANTED");
                if store::set_consent(tx, tenant, c, &format!("{ch}:{pu}"), granted, t).await? {
                    engine::customer_changed(tx, tenant, c, false, feature_reason, now).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl FeedHandler for ProfileFollower {
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ChangeEvent,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.apply_at(tx, event, Utc::now()))
    }
}

// ---------------------------------------------------------------------------
// Interaction.

/// The amount of a Money JSON object ({currency_code, units, nanos}).
fn money(v: Option<&Value>) -> Option<(String, Decimal)> {
    let v = v?;
    let code = v.get("currency_code")?.as_str()?.to_string();
    let units = decimal(v.get("units")?)?;
    let nanos = v.get("nanos").and_then(Value::as_i64).unwrap_or(0);
    Some((code, units + Decimal::new(nanos, 9)))
}

/// The stored type of an interaction payload: the built-in type in lower
/// case, or the custom type string.
pub fn event_kind(p: &Value) -> Option<(String, bool)> {
    let t = p.get("type")?.as_str()?;
    if t == "INTERACTION_TYPE_CUSTOM" {
        let c = p.get("custom_type")?.as_str()?;
        return Some((c.to_string(), true));
    }
    let s = t.strip_prefix("INTERACTION_TYPE_")?.to_ascii_lowercase();
    (s != "unspecified").then_some((s, false))
}

fn is_open(status: Option<&Value>) -> bool {
    matches!(
        status.and_then(Value::as_str),
        Some("SERVICE_REQUEST_STATUS_OPEN" | "SERVICE_REQUEST_STATUS_IN_PROGRESS")
    )
}

/// Applies interaction events. Recorded interactions are stored as they
/// come; the customers they touch are recomputed once per batch (see
/// [`FeedHandler::finish_batch`]), so a bulk upload of many interactions per
/// customer costs one recomputation per customer, not one per interaction.
#[derive(Debug, Default)]
pub struct InteractionFollower {
    /// Customers touched by the batch being applied: (tenant, customer) →
    /// whether a purchase was among their events.
    pending: std::sync::Mutex<std::collections::HashMap<(Uuid, Uuid), bool>>,
}

impl InteractionFollower {
    /// Applies one interaction event at `now`.
    pub async fn apply_at(
        &self,
        tx: &mut PgConnection,
        event: &ChangeEvent,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(tenant) = tenant_of(event) else {
            return Ok(());
        };
        let p = payload_of(event);
        let reason = MembershipChangeReason::FeaturesChanged;
        match event.event_type.as_str() {
            "InteractionRecorded" => {
                let (Some(i), Some(c), Some((kind, custom)), Some(at)) = (
                    id(&p, "interaction_id"),
                    id(&p, "customer_id"),
                    event_kind(&p),
                    p.get("occur_time").and_then(time),
                ) else {
                    return Ok(());
                };
                let purchase = kind == "purchase";
                let amount = money(p.get("amount"));
                let currency = match (&amount, purchase) {
                    (Some((code, _)), true) => Some(store::claim_currency(tx, tenant, code).await?),
                    _ => store::currency(tx, tenant).await?,
                };
                let in_currency = |m: Option<(String, Decimal)>| {
                    m.filter(|(code, _)| Some(code) == currency.as_ref())
                        .map(|(_, d)| d)
                };
                let row = EventRow {
                    customer_id: c,
                    interaction_id: i,
                    kind,
                    custom,
                    occur_time: at,
                    amount: in_currency(amount),
                    margin: in_currency(money(p.get("margin"))),
                    csat: p.get("csat").and_then(Value::as_i64).map(|v| v as i32),
                    nps: p.get("nps").and_then(Value::as_i64).map(|v| v as i32),
                    campaign_id: id(&p, "campaign_id"),
                    open: is_open(p.get("service_request_status")),
                };
                store::ensure_features(tx, tenant, c).await?;
                store::insert_event(tx, tenant, &row).await?;
                if let Ok(mut pending) = self.pending.lock() {
                    *pending.entry((tenant, c)).or_insert(false) |= purchase;
                }
            }
            "ServiceRequestUpdated" => {
                let Some(i) = id(&p, "interaction_id") else {
                    return Ok(());
                };
                let open = is_open(p.get("status"));
                if let Some(c) = store::set_event_open(tx, tenant, i, open).await?
                    && store::recompute_summary(tx, tenant, c).await?
                {
                    engine::customer_changed(tx, tenant, c, false, reason, now).await?;
                }
            }
            "InteractionsReassigned" => {
                let (Some(from), Some(to)) = (id(&p, "from_customer_id"), id(&p, "to_customer_id"))
                else {
                    return Ok(());
                };
                let ids: Option<Vec<Uuid>> =
                    p.get("interaction_ids").and_then(Value::as_array).map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .filter_map(|s| Uuid::parse_str(s).ok())
                            .collect()
                    });
                store::move_events(tx, tenant, from, to, ids.as_deref()).await?;
                for c in [from, to] {
                    if store::recompute_summary(tx, tenant, c).await? {
                        engine::customer_changed(tx, tenant, c, true, reason, now).await?;
                    }
                }
            }
            "CustomerInteractionsErased" => {
                if let Some(c) = id(&p, "customer_id") {
                    if let Ok(mut pending) = self.pending.lock() {
                        pending.remove(&(tenant, c));
                    }
                    store::delete_events(tx, tenant, c).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Recomputes, once each, the customers the applied events touched.
    pub async fn finish_at(&self, tx: &mut PgConnection, now: DateTime<Utc>) -> Result<()> {
        let pending = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Ok(()),
        };
        let mut by_tenant: std::collections::BTreeMap<Uuid, Vec<(Uuid, bool)>> =
            std::collections::BTreeMap::new();
        for ((tenant, c), purchase) in pending {
            by_tenant.entry(tenant).or_default().push((c, purchase));
        }
        for (tenant, mut customers) in by_tenant {
            customers.sort();
            let mut changed = Vec::with_capacity(customers.len());
            for (c, purchase) in customers {
                if store::recompute_summary(tx, tenant, c).await? {
                    changed.push((c, purchase));
                }
            }
            engine::customers_changed(
                tx,
                tenant,
                &changed,
                MembershipChangeReason::FeaturesChanged,
                now,
            )
            .await?;
        }
        Ok(())
    }
}

impl FeedHandler for InteractionFollower {
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ChangeEvent,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.apply_at(tx, event, Utc::now()))
    }

    fn finish_batch<'a>(&'a self, tx: &'a mut PgConnection) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.finish_at(tx, Utc::now()))
    }
}

// ---------------------------------------------------------------------------
// Valuation.

/// The valuation columns of a `CustomerValueChanged` payload, with the CLV
/// kept only in the tenant's currency.
pub fn value_facts(p: &Value, tenant_currency: Option<&str>) -> ValueFacts {
    let currency = p.get("currency_code").and_then(Value::as_str);
    let clv = p
        .get("clv")
        .and_then(decimal)
        .filter(|_| match (currency, tenant_currency) {
            (Some(c), Some(t)) => c.is_empty() || c == t,
            _ => true,
        });
    let tier = p
        .get("value_tier")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .filter(|t| matches!(t.as_str(), "top" | "high" | "medium" | "low"));
    ValueFacts {
        clv,
        p_alive: p.get("p_alive").and_then(decimal),
        expected_purchases: p.get("expected_purchases").and_then(decimal),
        value_tier: tier,
    }
}

/// Applies valuation events.
#[derive(Debug, Default, Clone, Copy)]
pub struct ValuationFollower;

impl ValuationFollower {
    /// Applies one valuation event at `now`.
    pub async fn apply_at(
        &self,
        tx: &mut PgConnection,
        event: &ChangeEvent,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(tenant) = tenant_of(event) else {
            return Ok(());
        };
        let p = payload_of(event);
        let facts = match event.event_type.as_str() {
            "CustomerValueChanged" => {
                let currency = store::currency(tx, tenant).await?;
                value_facts(&p, currency.as_deref())
            }
            "CustomerValueRemoved" => ValueFacts::default(),
            _ => return Ok(()),
        };
        let Some(c) = id(&p, "customer_id") else {
            return Ok(());
        };
        if store::set_value(tx, tenant, c, &facts).await? {
            engine::customer_changed(
                tx,
                tenant,
                c,
                false,
                MembershipChangeReason::FeaturesChanged,
                now,
            )
            .await?;
        }
        Ok(())
    }
}

impl FeedHandler for ValuationFollower {
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ChangeEvent,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.apply_at(tx, event, Utc::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_become_features() {
        let c = json!({
            "customer_id": "x",
            "kind": "CUSTOMER_KIND_ORGANIZATION",
            "country_code": "es",
            "tags": ["VIP", "golf"],
            "relationship_stage": "RELATIONSHIP_STAGE_COMMITMENT",
            "attributes": {
                "tier": {"string_value": "gold"},
                "score": {"number_value": 12.5},
                "active": {"bool_value": true},
                "since": {"timestamp_value": "2025-01-02T03:04:05Z"},
                "hobbies": {"string_list_value": {"values": ["golf"]}}
            },
            "consents": [
                {"channel": "CONSENT_CHANNEL_EMAIL", "purpose": "CONSENT_PURPOSE_MARKETING",
                 "status": "CONSENT_STATUS_GRANTED", "effective_time": "2025-01-01T00:00:00Z"},
                {"channel": "CONSENT_CHANNEL_ANY", "purpose": "CONSENT_PURPOSE_MARKETING",
                 "status": "CONSENT_STATUS_WITHDRAWN", "effective_time": "2025-02-01T00:00:00Z"}
            ]
        });
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
        assert_eq!(f.consents["email:marketing"]["granted"], true);
        assert_eq!(f.consents["any:marketing"]["granted"], false);
        assert_eq!(types.len(), 5);
        assert!(types.contains(&("score".to_string(), "decimal")));
    }

    #[test]
    fn unspecified_values_are_absent() {
        let (f, _) =
            profile_facts(&json!({"kind": "CUSTOMER_KIND_UNSPECIFIED", "country_code": ""}));
        assert!(f.kind.is_none() && f.country.is_none() && f.profile_stage.is_none());
    }

    #[test]
    fn interaction_kinds() {
        assert_eq!(
            event_kind(&json!({"type": "INTERACTION_TYPE_SURVEY_RESPONSE"})),
            Some(("survey_response".into(), false))
        );
        assert_eq!(
            event_kind(&json!({"type": "INTERACTION_TYPE_CUSTOM", "custom_type": "acme.webinar"})),
            Some(("acme.webinar".into(), true))
        );
        assert_eq!(
            event_kind(&json!({"type": "INTERACTION_TYPE_UNSPECIFIED"})),
            None
        );
    }

    #[test]
    fn money_is_exact() {
        let m = money(Some(
            &json!({"currency_code": "EUR", "units": "12", "nanos": 500_000_000}),
        ));
        assert_eq!(m, Some(("EUR".into(), Decimal::new(125, 1))));
    }

    #[test]
    fn value_payloads() {
        let p = json!({"customer_id": "c", "clv": "812.40", "currency_code": "EUR", "p_alive": 0.83,
                       "expected_purchases": 2.5, "value_tier": "top"});
        let v = value_facts(&p, Some("EUR"));
        assert_eq!(v.clv, Some(Decimal::new(8124, 1)));
        assert_eq!(v.p_alive, Some(Decimal::new(83, 2)));
        assert_eq!(v.value_tier.as_deref(), Some("top"));
        // Another currency: no CLV.
        assert_eq!(value_facts(&p, Some("USD")).clv, None);
        assert_eq!(
            value_facts(&json!({"customer_id": "c"}), None),
            ValueFacts::default()
        );
    }
}
