//! Input rules of `Interaction` (see interaction.proto), normalisation, and the
//! content hash that makes recording idempotent.

use chrono::{DateTime, Duration, Timelike, Utc};
use rapport_kit::convert::{from_timestamp, struct_to_json};
use rapport_kit::error::{ApiError, Violation, Violations};
use rapport_proto::rapport::common::v1::{IdentifierKind, Money, customer_ref};
use rapport_proto::rapport::interaction::v1::{
    Channel, Initiator, Interaction, InteractionType, ServiceRequestStatus,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::money::{Amount, is_currency, money_nanos};
use super::types::{is_campaign_type, is_tracked_request};

/// Largest number of line items on one interaction.
pub const MAX_LINE_ITEMS: usize = 500;
/// Largest number of identifiers in one customer reference.
pub const MAX_IDENTIFIERS: usize = 20;
/// Largest JSON size of an interaction's attributes.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// How far in the future an `occur_time` may be (clock skew).
pub const FUTURE_SKEW: Duration = Duration::minutes(5);

/// The customer an interaction is recorded for, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerInput {
    /// A customer id.
    Id(Uuid),
    /// Identifiers for `ProfileService.ResolveIdentity`.
    Identifiers(Vec<IdentifierInput>),
}

/// One identifier, trimmed (e-mails also lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentifierInput {
    /// `IdentifierKind` value.
    pub kind: i32,
    /// Issuing system (EXTERNAL only).
    pub system: String,
    /// The identifier.
    pub value: String,
}

/// One line of a purchase or return, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLineItem {
    /// Stock-keeping unit.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Product category.
    pub category: String,
    /// Units, > 0.
    pub quantity: f64,
    /// Price of one unit.
    pub unit_price: Amount,
}

/// An interaction that passed every input rule, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInteraction {
    /// Who it is with.
    pub customer: CustomerInput,
    /// `InteractionType` value.
    pub kind: InteractionType,
    /// The tenant-defined type (CUSTOM only).
    pub custom_type: Option<String>,
    /// When it happened.
    pub occur_time: DateTime<Utc>,
    /// `Channel` value.
    pub channel: i32,
    /// `Initiator` value.
    pub initiator: i32,
    /// Money value.
    pub amount: Option<Amount>,
    /// Gross margin, same currency as `amount`.
    pub margin: Option<Amount>,
    /// Goods bought or returned.
    pub line_items: Vec<NewLineItem>,
    /// The campaign it belongs to.
    pub campaign_id: Option<Uuid>,
    /// The engagement decision it answers.
    pub decision_id: Option<Uuid>,
    /// The agent who handled it.
    pub agent_id: Option<String>,
    /// CSAT score.
    pub csat: Option<i32>,
    /// NPS score.
    pub nps: Option<i32>,
    /// Survey comment.
    pub comment: Option<String>,
    /// `ServiceRequestStatus` value (UNSPECIFIED for untracked types).
    pub status: i32,
    /// When the request was resolved.
    pub resolve_time: Option<DateTime<Utc>>,
    /// Free attributes, a JSON object.
    pub attributes: Option<serde_json::Value>,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
}

/// Turns collected violations into their list.
pub fn violation_list(v: Violations) -> Vec<Violation> {
    match v.finish() {
        Ok(()) => Vec::new(),
        Err(ApiError::InvalidArgument(list)) => list,
        Err(_) => Vec::new(),
    }
}

fn path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// True when `s` holds a NUL character, which PostgreSQL cannot store in
/// text (nor in `jsonb`): such input is refused as invalid, never left to
/// fail in the database.
pub fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// True when a string or a key anywhere in `v` holds a NUL character.
pub fn json_has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => has_nul(s),
        serde_json::Value::Array(a) => a.iter().any(json_has_nul),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| has_nul(k) || json_has_nul(v)),
        _ => false,
    }
}

/// Records a violation on `field` when `s` holds a NUL character.
pub fn check_no_nul(v: &mut Violations, field: &str, s: &str) {
    v.check(has_nul(s), field, "must not contain NUL characters");
}

/// Checks an agent id: at most 128 characters, no NUL.
pub fn check_agent_id(v: &mut Violations, field: &str, agent_id: &str) {
    if agent_id.chars().count() > 128 {
        v.add(field, "at most 128 characters");
    } else {
        check_no_nul(v, field, agent_id);
    }
}

/// True for 1..=128 printable ASCII characters (0x21..=0x7E).
pub fn is_printable_key(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// True for a namespaced custom type such as `acme.loyalty_redemption`.
pub fn is_custom_type(s: &str) -> bool {
    if !(3..=128).contains(&s.len()) {
        return false;
    }
    let segments: Vec<&str> = s.split('.').collect();
    segments.len() >= 2
        && segments[0] != "rapport"
        && segments.iter().all(|seg| {
            let mut b = seg.bytes();
            b.next().is_some_and(|c| c.is_ascii_lowercase())
                && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        })
}

/// Checks a `Money` field: currency and number. Returns its amount when valid.
pub fn check_money(v: &mut Violations, field: &str, m: &Money) -> Option<Amount> {
    let mut ok = true;
    if !is_currency(&m.currency_code) {
        v.add(
            format!("{field}.currency_code"),
            "must be an ISO 4217 currency code in upper case, e.g. \"EUR\"",
        );
        ok = false;
    }
    match money_nanos(m) {
        Ok(n) if ok => Some(Amount {
            currency: m.currency_code.clone(),
            nanos: n,
        }),
        Ok(_) => None,
        Err(e) => {
            v.add(format!("{field}.nanos"), e);
            None
        }
    }
}

/// `t` truncated to the microsecond, the precision times are kept with.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

fn check_time(
    v: &mut Violations,
    field: &str,
    t: &prost_types::Timestamp,
) -> Option<DateTime<Utc>> {
    match from_timestamp(t) {
        Some(t) => Some(to_micros(t)),
        None => {
            v.add(field, "is not a valid timestamp");
            None
        }
    }
}

/// Validates and normalises one interaction. `prefix` is the path of the
/// interaction in the request (`interaction`, or empty for rejections).
pub fn validate_interaction(
    i: &Interaction,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<NewInteraction, Vec<Violation>> {
    let mut v = Violations::new();
    let p = |f: &str| path(prefix, f);

    // Customer.
    let customer = match i.customer.as_ref().and_then(|c| c.r#ref.as_ref()) {
        None => {
            v.add(p("customer"), "required: a customer_id or identifiers");
            None
        }
        Some(customer_ref::Ref::CustomerId(id)) => match Uuid::parse_str(id.trim()) {
            Ok(id) => Some(CustomerInput::Id(id)),
            Err(_) => {
                v.add(p("customer.customer_id"), "must be a UUID");
                None
            }
        },
        Some(customer_ref::Ref::Identifiers(set)) => {
            let ids = &set.identifiers;
            if ids.is_empty() || ids.len() > MAX_IDENTIFIERS {
                v.add(
                    p("customer.identifiers.identifiers"),
                    "must hold 1 to 20 identifiers",
                );
            }
            let mut out = Vec::new();
            for (n, id) in ids.iter().enumerate() {
                let f = |x: &str| p(&format!("customer.identifiers.identifiers[{n}].{x}"));
                let value = id.value.trim();
                let system = id.system.trim();
                let kind = IdentifierKind::try_from(id.kind).ok();
                match kind {
                    None | Some(IdentifierKind::Unspecified) => {
                        v.add(f("kind"), "required: EMAIL, PHONE or EXTERNAL");
                    }
                    Some(IdentifierKind::External) => {
                        let good = (1..=64).contains(&system.len())
                            && system.bytes().all(|b| {
                                b.is_ascii_lowercase()
                                    || b.is_ascii_digit()
                                    || matches!(b, b'_' | b'.' | b'-')
                            });
                        v.check(
                            !good,
                            f("system"),
                            "required for EXTERNAL identifiers: 1 to 64 characters of [a-z0-9_.-]",
                        );
                    }
                    Some(_) => {
                        v.check(
                            !system.is_empty(),
                            f("system"),
                            "must be empty for EMAIL and PHONE identifiers",
                        );
                    }
                }
                let len = value.chars().count();
                if !(1..=256).contains(&len) {
                    v.add(f("value"), "must be 1 to 256 characters");
                } else {
                    check_no_nul(&mut v, &f("value"), value);
                }
                let value = if kind == Some(IdentifierKind::Email) {
                    value.to_lowercase()
                } else {
                    value.to_string()
                };
                out.push(IdentifierInput {
                    kind: id.kind,
                    system: system.to_string(),
                    value,
                });
            }
            Some(CustomerInput::Identifiers(out))
        }
    };

    // Type.
    let kind = match InteractionType::try_from(i.r#type) {
        Ok(InteractionType::Unspecified) | Err(_) => {
            v.add(p("type"), "required: one of the InteractionType values");
            None
        }
        Ok(k) => Some(k),
    };
    let custom_type = if kind == Some(InteractionType::Custom) {
        if !is_custom_type(&i.custom_type) {
            v.add(
                p("custom_type"),
                "required with CUSTOM: two or more dot-separated segments of [a-z][a-z0-9_]*, 3 to 128 characters, not in the \"rapport\" namespace",
            );
        }
        Some(i.custom_type.clone())
    } else {
        v.check(
            !i.custom_type.is_empty(),
            p("custom_type"),
            "only allowed when type is CUSTOM",
        );
        None
    };

    // Time.
    let occur_time = match &i.occur_time {
        None => {
            v.add(p("occur_time"), "required");
            None
        }
        Some(t) => match check_time(&mut v, &p("occur_time"), t) {
            Some(t) if t < DateTime::UNIX_EPOCH => {
                v.add(p("occur_time"), "must not be before 1970-01-01T00:00:00Z");
                None
            }
            Some(t) if t > now + FUTURE_SKEW => {
                v.add(
                    p("occur_time"),
                    "is in the future (more than 5 minutes after the server's clock)",
                );
                None
            }
            other => other,
        },
    };

    v.check(
        Channel::try_from(i.channel).is_err(),
        p("channel"),
        "not a Channel value",
    );
    v.check(
        Initiator::try_from(i.initiator).is_err(),
        p("initiator"),
        "not an Initiator value",
    );

    // Money.
    let money_type = matches!(
        kind,
        Some(InteractionType::Purchase) | Some(InteractionType::Return)
    );
    let amount = match &i.amount {
        None => {
            v.check(
                money_type,
                p("amount"),
                "required for PURCHASE and RETURN interactions",
            );
            None
        }
        Some(m) => {
            let a = check_money(&mut v, &p("amount"), m);
            if money_type && a.as_ref().is_some_and(|a| a.nanos < 0) {
                v.add(
                    p("amount"),
                    "must not be negative for PURCHASE and RETURN (a refund is given as a positive RETURN amount)",
                );
            }
            a
        }
    };
    let margin = match &i.margin {
        None => None,
        Some(m) => {
            let a = check_money(&mut v, &p("margin"), m);
            if i.amount.is_none() {
                v.add(p("margin"), "only allowed when amount is set");
            } else if i
                .amount
                .as_ref()
                .is_some_and(|am| am.currency_code != m.currency_code)
            {
                v.add(p("margin.currency_code"), "must be the currency of amount");
            }
            a
        }
    };

    // Line items.
    if !i.line_items.is_empty() && !money_type {
        v.add(
            p("line_items"),
            "only allowed on PURCHASE and RETURN interactions",
        );
    }
    if i.line_items.len() > MAX_LINE_ITEMS {
        v.add(p("line_items"), "at most 500 line items");
    }
    let mut line_items = Vec::with_capacity(i.line_items.len());
    for (n, li) in i.line_items.iter().enumerate().take(MAX_LINE_ITEMS) {
        let f = |x: &str| p(&format!("line_items[{n}].{x}"));
        if !(1..=128).contains(&li.sku.chars().count()) {
            v.add(f("sku"), "required, 1 to 128 characters");
        } else {
            check_no_nul(&mut v, &f("sku"), &li.sku);
        }
        if li.name.chars().count() > 512 {
            v.add(f("name"), "at most 512 characters");
        } else {
            check_no_nul(&mut v, &f("name"), &li.name);
        }
        if li.category.chars().count() > 256 {
            v.add(f("category"), "at most 256 characters");
        } else {
            check_no_nul(&mut v, &f("category"), &li.category);
        }
        v.check(
            !(li.quantity.is_finite() && li.quantity > 0.0 && li.quantity <= 1e9),
            f("quantity"),
            "must be greater than 0 and at most 1000000000",
        );
        let price = match &li.unit_price {
            None => {
                v.add(f("unit_price"), "required");
                None
            }
            Some(m) => {
                let a = check_money(&mut v, &f("unit_price"), m);
                if a.as_ref().is_some_and(|a| a.nanos < 0) {
                    v.add(f("unit_price"), "must not be negative");
                }
                if i.amount
                    .as_ref()
                    .is_some_and(|am| am.currency_code != m.currency_code)
                {
                    v.add(
                        f("unit_price.currency_code"),
                        "must be the currency of amount",
                    );
                }
                a
            }
        };
        if let Some(unit_price) = price {
            line_items.push(NewLineItem {
                sku: li.sku.clone(),
                name: li.name.clone(),
                category: li.category.clone(),
                quantity: li.quantity,
                unit_price,
            });
        }
    }

    // Campaign.
    let campaign_id = if i.campaign_id.is_empty() {
        v.check(
            kind.is_some_and(is_campaign_type),
            p("campaign_id"),
            "required for CAMPAIGN_* interactions",
        );
        None
    } else {
        match Uuid::parse_str(&i.campaign_id) {
            Ok(id) => Some(id),
            Err(_) => {
                v.add(p("campaign_id"), "must be a UUID");
                None
            }
        }
    };

    let decision_id = if i.decision_id.is_empty() {
        None
    } else {
        let d = Uuid::parse_str(&i.decision_id).ok();
        v.check(
            d.is_none(),
            p("decision_id"),
            "must be a UUID (a NextBestAction's decision_id)",
        );
        d
    };

    check_agent_id(&mut v, &p("agent_id"), &i.agent_id);

    // Survey.
    let (mut csat, mut nps, mut comment) = (None, None, None);
    match (&i.survey, kind) {
        (None, Some(InteractionType::SurveyResponse)) => {
            v.add(p("survey"), "required for SURVEY_RESPONSE interactions");
        }
        (Some(_), Some(k)) if k != InteractionType::SurveyResponse => {
            v.add(p("survey"), "only allowed on SURVEY_RESPONSE interactions");
        }
        (Some(s), _) => {
            if s.csat.is_none() && s.nps.is_none() {
                v.add(p("survey"), "needs a csat or an nps score, or both");
            }
            if let Some(c) = s.csat {
                v.check(!(1..=5).contains(&c), p("survey.csat"), "must be 1 to 5");
            }
            if let Some(n) = s.nps {
                v.check(!(0..=10).contains(&n), p("survey.nps"), "must be 0 to 10");
            }
            if s.comment.chars().count() > 4000 {
                v.add(p("survey.comment"), "at most 4000 characters");
            } else {
                check_no_nul(&mut v, &p("survey.comment"), &s.comment);
            }
            csat = s.csat;
            nps = s.nps;
            comment = (!s.comment.is_empty()).then(|| s.comment.clone());
        }
        _ => {}
    }

    // Service request status.
    let tracked = kind.is_some_and(is_tracked_request);
    let status = match ServiceRequestStatus::try_from(i.service_request_status) {
        Err(_) => {
            v.add(
                p("service_request_status"),
                "not a ServiceRequestStatus value",
            );
            0
        }
        Ok(ServiceRequestStatus::Unspecified) if tracked => ServiceRequestStatus::Open as i32,
        Ok(s) => {
            if !tracked && s != ServiceRequestStatus::Unspecified {
                v.add(
                    p("service_request_status"),
                    "only allowed on SERVICE_REQUEST and COMPLAINT interactions",
                );
            }
            s as i32
        }
    };
    let resolve_time = match &i.resolve_time {
        None => None,
        Some(t) => {
            let rt = check_time(&mut v, &p("resolve_time"), t);
            let closed = status == ServiceRequestStatus::Resolved as i32
                || status == ServiceRequestStatus::Closed as i32;
            if !tracked || !closed {
                v.add(
                    p("resolve_time"),
                    "only allowed on a SERVICE_REQUEST or COMPLAINT with status RESOLVED or CLOSED",
                );
            }
            if let (Some(r), Some(o)) = (rt, occur_time)
                && r < o
            {
                v.add(p("resolve_time"), "must not be before occur_time");
            }
            rt
        }
    };

    // Attributes.
    let attributes = match &i.attributes {
        None => None,
        Some(s) if s.fields.is_empty() => None,
        Some(s) => {
            if s.fields.len() > 64 {
                v.add(p("attributes"), "at most 64 top-level keys");
            }
            for k in s.fields.keys() {
                if !(1..=64).contains(&k.chars().count()) {
                    v.add(
                        p(&format!("attributes[{k}]")),
                        "keys must be 1 to 64 characters",
                    );
                }
            }
            let json = struct_to_json(s);
            if serde_json::to_vec(&json).map_or(usize::MAX, |b| b.len()) > MAX_ATTRIBUTES_BYTES {
                v.add(p("attributes"), "at most 16 KiB as JSON");
            } else if json_has_nul(&json) {
                v.add(
                    p("attributes"),
                    "keys and string values must not contain NUL characters",
                );
            }
            Some(json)
        }
    };

    let idempotency_key = if i.idempotency_key.is_empty() {
        None
    } else {
        v.check(
            !is_printable_key(&i.idempotency_key),
            p("idempotency_key"),
            "must be 1 to 128 printable ASCII characters (0x21 to 0x7E)",
        );
        Some(i.idempotency_key.clone())
    };

    let list = violation_list(v);
    match (customer, kind, occur_time) {
        (Some(customer), Some(kind), Some(occur_time)) if list.is_empty() => Ok(NewInteraction {
            customer,
            kind,
            custom_type,
            occur_time,
            channel: i.channel,
            initiator: i.initiator,
            amount,
            margin,
            line_items,
            campaign_id,
            decision_id,
            agent_id: (!i.agent_id.is_empty()).then(|| i.agent_id.clone()),
            csat,
            nps,
            comment,
            status,
            resolve_time,
            attributes,
            idempotency_key,
        }),
        _ => Err(list),
    }
}

/// Feeds a canonical, unambiguous encoding of values into a hash.
struct Canon(Sha256);

impl Canon {
    fn tag(&mut self, t: u8) {
        self.0.update([t]);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.tag(0),
            Some(s) => {
                self.tag(1);
                self.str(s);
            }
        }
    }
    fn int(&mut self, n: i128) {
        self.0.update(n.to_be_bytes());
    }
    fn opt_int(&mut self, n: Option<i128>) {
        match n {
            None => self.tag(0),
            Some(n) => {
                self.tag(1);
                self.int(n);
            }
        }
    }
    fn time(&mut self, t: Option<DateTime<Utc>>) {
        self.opt_int(t.map(|t| {
            i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
        }));
    }
    fn amount(&mut self, a: Option<&Amount>) {
        match a {
            None => self.tag(0),
            Some(a) => {
                self.tag(1);
                self.str(&a.currency);
                self.int(a.nanos);
            }
        }
    }
    fn json(&mut self, v: &serde_json::Value) {
        match v {
            serde_json::Value::Null => self.tag(b'n'),
            serde_json::Value::Bool(b) => {
                self.tag(b'b');
                self.tag(u8::from(*b));
            }
            serde_json::Value::Number(n) => {
                self.tag(b'#');
                self.0
                    .update(n.as_f64().unwrap_or(0.0).to_bits().to_be_bytes());
            }
            serde_json::Value::String(s) => {
                self.tag(b's');
                self.str(s);
            }
            serde_json::Value::Array(a) => {
                self.tag(b'[');
                self.int(a.len() as i128);
                for x in a {
                    self.json(x);
                }
            }
            serde_json::Value::Object(m) => {
                self.tag(b'{');
                self.int(m.len() as i128);
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    self.str(k);
                    self.json(&m[k]);
                }
            }
        }
    }
}

impl NewInteraction {
    /// SHA-256 of every input field, canonically encoded: two recordings
    /// with the same key are "the same content" when their hashes are equal.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut c = Canon(Sha256::new());
        c.str("rapport.interaction.v1");
        match &self.customer {
            CustomerInput::Id(id) => {
                c.tag(1);
                c.bytes(id.as_bytes());
            }
            CustomerInput::Identifiers(ids) => {
                c.tag(2);
                c.int(ids.len() as i128);
                for i in ids {
                    c.int(i128::from(i.kind));
                    c.str(&i.system);
                    c.str(&i.value);
                }
            }
        }
        c.int(self.kind as i128);
        c.opt_str(self.custom_type.as_deref());
        c.time(Some(self.occur_time));
        c.int(i128::from(self.channel));
        c.int(i128::from(self.initiator));
        c.amount(self.amount.as_ref());
        c.amount(self.margin.as_ref());
        c.int(self.line_items.len() as i128);
        for li in &self.line_items {
            c.str(&li.sku);
            c.str(&li.name);
            c.str(&li.category);
            c.0.update(li.quantity.to_bits().to_be_bytes());
            c.amount(Some(&li.unit_price));
        }
        c.opt_str(self.campaign_id.map(|u| u.to_string()).as_deref());
        // Only when given, so fingerprints of interactions without one stay
        // as they were before decision ids existed.
        if let Some(d) = self.decision_id {
            c.str("decision_id");
            c.str(&d.to_string());
        }
        c.opt_str(self.agent_id.as_deref());
        c.opt_int(self.csat.map(i128::from));
        c.opt_int(self.nps.map(i128::from));
        c.opt_str(self.comment.as_deref());
        c.int(i128::from(self.status));
        c.time(self.resolve_time);
        match &self.attributes {
            None => c.tag(0),
            Some(a) => {
                c.tag(1);
                c.json(a);
            }
        }
        c.opt_str(self.idempotency_key.as_deref());
        c.0.finalize().into()
    }

    /// A key naming the identifier set (order and duplicates ignored), so
    /// that each distinct set is resolved once.
    pub fn identifier_set_key(&self) -> Option<String> {
        match &self.customer {
            CustomerInput::Id(_) => None,
            CustomerInput::Identifiers(ids) => {
                let mut sorted: Vec<&IdentifierInput> = ids.iter().collect();
                sorted.sort();
                sorted.dedup();
                Some(
                    sorted
                        .iter()
                        .map(|i| format!("{}\u{1f}{}\u{1f}{}", i.kind, i.system, i.value))
                        .collect::<Vec<_>>()
                        .join("\u{1e}"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;
    use rapport_proto::rapport::common::v1::{CustomerRef, Identifier, IdentifierSet};
    use rapport_proto::rapport::interaction::v1::{LineItem, Survey};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn eur(units: i64, nanos: i32) -> Money {
        Money {
            currency_code: "EUR".into(),
            units,
            nanos,
        }
    }

    fn purchase() -> Interaction {
        Interaction {
            customer: Some(CustomerRef {
                r#ref: Some(customer_ref::Ref::CustomerId(Uuid::nil().to_string())),
            }),
            r#type: InteractionType::Purchase as i32,
            occur_time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            amount: Some(eur(12, 500_000_000)),
            line_items: vec![LineItem {
                sku: "sku-1".into(),
                name: "Shoe".into(),
                category: "shoes".into(),
                quantity: 1.0,
                unit_price: Some(eur(12, 500_000_000)),
            }],
            idempotency_key: "pos:1".into(),
            ..Default::default()
        }
    }

    fn fields(r: Result<NewInteraction, Vec<Violation>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn a_good_purchase_passes() {
        let n = validate_interaction(&purchase(), "interaction", now()).unwrap();
        assert_eq!(n.amount.unwrap().nanos, 12_500_000_000);
        assert_eq!(n.status, 0);
    }

    #[test]
    fn every_problem_is_reported_once_with_its_path() {
        let mut i = purchase();
        i.amount = None;
        i.occur_time = Some(Timestamp {
            seconds: 1_750_000_000 + 3600,
            nanos: 0,
        });
        i.custom_type = "acme.x".into();
        i.survey = Some(Survey {
            csat: Some(9),
            nps: None,
            comment: String::new(),
        });
        i.idempotency_key = "has space".into();
        let f = fields(validate_interaction(&i, "interaction", now()));
        assert_eq!(
            f,
            [
                "interaction.custom_type",
                "interaction.occur_time",
                "interaction.amount",
                "interaction.survey",
                "interaction.idempotency_key"
            ]
        );
    }

    #[test]
    fn type_specific_rules() {
        let mut i = purchase();
        i.r#type = InteractionType::CampaignSent as i32;
        i.amount = None;
        i.line_items.clear();
        assert_eq!(fields(validate_interaction(&i, "", now())), ["campaign_id"]);
        let mut i = purchase();
        i.r#type = InteractionType::ServiceRequest as i32;
        i.line_items.clear();
        let n = validate_interaction(&i, "", now()).unwrap();
        assert_eq!(n.status, ServiceRequestStatus::Open as i32);
        i.resolve_time = Some(Timestamp {
            seconds: 1_700_000_100,
            nanos: 0,
        });
        assert_eq!(
            fields(validate_interaction(&i, "", now())),
            ["resolve_time"]
        );
        i.service_request_status = ServiceRequestStatus::Resolved as i32;
        assert!(validate_interaction(&i, "", now()).is_ok());
        let mut i = purchase();
        i.amount = Some(eur(-1, 0));
        i.margin = Some(Money {
            currency_code: "USD".into(),
            units: 1,
            nanos: 0,
        });
        assert_eq!(
            fields(validate_interaction(&i, "", now())),
            ["amount", "margin.currency_code"]
        );
    }

    #[test]
    fn custom_types_are_namespaced() {
        assert!(is_custom_type("acme.loyalty_redemption"));
        assert!(is_custom_type("acme.events.webinar_attended"));
        assert!(!is_custom_type("acme"));
        assert!(!is_custom_type("rapport.x"));
        assert!(!is_custom_type("Acme.x"));
        assert!(!is_custom_type("acme..x"));
        assert!(!is_custom_type("acme.1x"));
    }

    #[test]
    fn the_hash_sees_every_field_and_normalisation() {
        let base = validate_interaction(&purchase(), "", now()).unwrap();
        let mut other = purchase();
        other.agent_id = "a-1".into();
        let other = validate_interaction(&other, "", now()).unwrap();
        assert_ne!(base.content_hash(), other.content_hash());
        assert_eq!(
            base.content_hash(),
            validate_interaction(&purchase(), "", now())
                .unwrap()
                .content_hash()
        );

        let by_email = |e: &str| {
            let mut i = purchase();
            i.customer = Some(CustomerRef {
                r#ref: Some(customer_ref::Ref::Identifiers(IdentifierSet {
                    identifiers: vec![Identifier {
                        kind: IdentifierKind::Email as i32,
                        system: String::new(),
                        value: e.into(),
                    }],
                })),
            });
            validate_interaction(&i, "", now()).unwrap()
        };
        let a = by_email(" Ann@Example.com ");
        let b = by_email("ann@example.com");
        assert_eq!(a.content_hash(), b.content_hash());
        assert_eq!(a.identifier_set_key(), b.identifier_set_key());
    }

    #[test]
    fn printable_keys() {
        assert!(is_printable_key("pos:store-12:receipt-000981"));
        assert!(!is_printable_key(""));
        assert!(!is_printable_key("a b"));
        assert!(!is_printable_key(&"x".repeat(129)));
        assert!(!is_printable_key("é"));
    }
}
