//! In-memory evaluation of a rule for one customer, with explanations. The
//! semantics are those of the SQL compiler (rule.proto, MEANING); the
//! integration test tests/rule_sql.rs checks that both agree.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rapport_proto::rapport::segmentation::v1 as proto;
use rapport_proto::rapport::segmentation::v1::FieldType;
use rust_decimal::Decimal;
use uuid::Uuid;

use proto::scalar_value::Kind;
use proto::{ConditionExplanation, ExplanationNodeKind};

use super::catalog::{Catalog, Storage, measure_type};
use super::check::num;
use super::print::{self, print_condition};
use super::sql::{ago, source_types};
use super::{AggFn, Aggregate, CmpOp, Cond, Expr, Literal, Operand, SegmentRef, TimeOp, TimeRef};

/// A customer's value of a field.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Decimal(Decimal),
    Text(String),
    Time(DateTime<Utc>),
    List(Vec<String>),
}

/// One row of `events`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `events.type`.
    pub kind: String,
    pub occur_time: DateTime<Utc>,
    pub amount: Option<Decimal>,
    pub margin: Option<Decimal>,
    pub csat: Option<i32>,
    pub nps: Option<i32>,
}

/// A customer's place among the tenant's customers that have a value for a
/// ranked field: how many have a greater value, how many a smaller one, and
/// how many have a value at all (the customer included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RankFacts {
    pub greater: i64,
    pub smaller: i64,
    pub total: i64,
}

/// Everything a rule can test about one customer.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Field name (as in the catalogue, e.g. "clv", "rfm.segment",
    /// "attr.tier") to value; absent means missing.
    pub values: HashMap<String, Value>,
    /// (channel, purpose) to (granted, time) of the record in force, as in
    /// `features.consents`.
    pub consents: HashMap<(String, String), (bool, DateTime<Utc>)>,
    /// The customer's rows of `events`.
    pub events: Vec<Event>,
    /// The segments the customer is currently a member of.
    pub segments: HashSet<Uuid>,
    /// For each field of `ranked_fields`, the customer's rank facts (only
    /// meaningful when the customer has a value).
    pub ranks: HashMap<String, RankFacts>,
}

/// A numeric operand's value.
#[derive(Clone, Copy, Debug)]
enum Num {
    Missing,
    Value(Decimal),
    /// An average kept as sum / count (count > 0), compared exactly.
    Ratio(Decimal, Decimal),
    /// A percentile 100 * s / (n - 1), 0 when n = 1.
    Pct(i64, i64),
}

fn cmp(op: CmpOp, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => o == Equal,
        CmpOp::Ne => o != Equal,
        CmpOp::Lt => o == Less,
        CmpOp::Le => o != Greater,
        CmpOp::Gt => o == Greater,
        CmpOp::Ge => o != Less,
    }
}

/// Exact a * b compared with c * d (products of decimals that may overflow
/// are compared as 128-bit-free rationals through f64 as a last resort).
fn cmp_products(a: Decimal, b: Decimal, c: Decimal, d: Decimal) -> std::cmp::Ordering {
    match (a.checked_mul(b), c.checked_mul(d)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let x = f64::try_from(a).unwrap_or(0.0) * f64::try_from(b).unwrap_or(0.0);
            let y = f64::try_from(c).unwrap_or(0.0) * f64::try_from(d).unwrap_or(0.0);
            x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
        }
    }
}

impl Num {
    fn test(&self, op: CmpOp, l: Decimal) -> bool {
        match *self {
            Num::Missing => false,
            Num::Value(v) => cmp(op, v.cmp(&l)),
            Num::Ratio(s, c) => cmp(op, cmp_products(s, Decimal::ONE, l, c)),
            Num::Pct(s, n) => {
                if n <= 1 {
                    cmp(op, Decimal::ZERO.cmp(&l))
                } else {
                    cmp(
                        op,
                        cmp_products(
                            Decimal::ONE_HUNDRED,
                            Decimal::from(s),
                            l,
                            Decimal::from(n - 1),
                        ),
                    )
                }
            }
        }
    }

    fn shown(&self) -> Option<Decimal> {
        match *self {
            Num::Missing => None,
            Num::Value(v) => Some(v),
            Num::Ratio(s, c) => s.checked_div(c).map(|d| d.round_dp(6).normalize()),
            Num::Pct(s, n) => Some(if n <= 1 {
                Decimal::ZERO
            } else {
                (Decimal::ONE_HUNDRED * Decimal::from(s) / Decimal::from(n - 1))
                    .round_dp(2)
                    .normalize()
            }),
        }
    }
}

fn as_num(v: Option<&Value>) -> Option<Decimal> {
    match v? {
        Value::Int(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

fn events_in<'a>(a: &Aggregate, facts: &'a Facts, now: DateTime<Utc>) -> Vec<&'a Event> {
    let types = source_types(&a.source);
    let from = ago(now, u64::from(a.window_days) * 24);
    facts
        .events
        .iter()
        .filter(|e| types.contains(&e.kind) && e.occur_time > from && e.occur_time <= now)
        .collect()
}

fn measure(e: &Event, m: &str) -> Option<Decimal> {
    match m {
        "amount" => e.amount,
        "margin" => e.margin,
        "csat" => e.csat.map(Decimal::from),
        "nps" => e.nps.map(Decimal::from),
        _ => None,
    }
}

/// The value of an aggregate, and how many interactions / measures it saw.
fn aggregate(a: &Aggregate, facts: &Facts, now: DateTime<Utc>) -> (Num, usize) {
    let evs = events_in(a, facts, now);
    if a.function == AggFn::Count {
        return (Num::Value(Decimal::from(evs.len() as u64)), evs.len());
    }
    let Some(m) = &a.measure else {
        return (Num::Missing, evs.len());
    };
    let vals: Vec<Decimal> = evs.iter().filter_map(|e| measure(e, m)).collect();
    let n = vals.len();
    let v = match a.function {
        AggFn::Sum => Num::Value(vals.iter().copied().sum()),
        AggFn::Avg if n > 0 => Num::Ratio(vals.iter().copied().sum(), Decimal::from(n as u64)),
        AggFn::Min => vals.iter().min().map_or(Num::Missing, |v| Num::Value(*v)),
        AggFn::Max => vals.iter().max().map_or(Num::Missing, |v| Num::Value(*v)),
        _ => Num::Missing,
    };
    (v, n)
}

fn operand_num(o: &Operand, facts: &Facts, now: DateTime<Utc>) -> Num {
    match o {
        Operand::Field(f) => as_num(facts.values.get(f)).map_or(Num::Missing, Num::Value),
        Operand::Aggregate(a) => aggregate(a, facts, now).0,
        Operand::Percentile(f) => match (as_num(facts.values.get(f)), facts.ranks.get(f)) {
            (Some(_), Some(r)) if r.total > 0 => Num::Pct(r.smaller, r.total),
            _ => Num::Missing,
        },
    }
}

fn lit_matches(v: &Value, l: &Literal) -> Option<std::cmp::Ordering> {
    match (v, l) {
        (Value::Text(a), Literal::Str(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Value::Time(a), Literal::Time(b)) => Some(a.cmp(b)),
        (v, l) => Some(as_num(Some(v))?.cmp(&num(l)?)),
    }
}

fn consent(facts: &Facts, channel: &str, purpose: &str) -> (bool, String) {
    let any = facts
        .consents
        .get(&("any".to_string(), purpose.to_string()));
    let own = if channel == "any" {
        None
    } else {
        facts
            .consents
            .get(&(channel.to_string(), purpose.to_string()))
    };
    let deciding = match (own, any) {
        (Some(o), Some(a)) => Some(if a.1 > o.1 { ("any", a) } else { (channel, o) }),
        (Some(o), None) => Some((channel, o)),
        (None, Some(a)) => Some(("any", a)),
        (None, None) => None,
    };
    match deciding {
        None => {
            let allowed = purpose == "service";
            let why = if allowed {
                "no consent record: service contacts are allowed by default"
            } else {
                "no consent record: an opt-in is required"
            };
            (allowed, why.to_string())
        }
        Some((ch, (granted, time))) => (
            *granted,
            format!(
                "{} on {} (channel {ch})",
                if *granted { "granted" } else { "not granted" },
                print::time(time)
            ),
        ),
    }
}

/// Whether the rule holds for the customer at `now`.
pub fn evaluate(expr: &Expr, facts: &Facts, now: DateTime<Utc>) -> bool {
    match expr {
        Expr::And(items) => items.iter().all(|e| evaluate(e, facts, now)),
        Expr::Or(items) => items.iter().any(|e| evaluate(e, facts, now)),
        Expr::Not(inner) => !evaluate(inner, facts, now),
        Expr::Cond(c) => cond(&c.kind, facts, now),
    }
}

fn cond(c: &Cond, facts: &Facts, now: DateTime<Utc>) -> bool {
    match c {
        Cond::Compare { left, op, value } => match left {
            Operand::Field(f) => match facts.values.get(f) {
                Some(v) => lit_matches(v, value).is_some_and(|o| cmp(*op, o)),
                None => false,
            },
            o => num(value).is_some_and(|l| operand_num(o, facts, now).test(*op, l)),
        },
        Cond::Between { operand, low, high } => match operand {
            Operand::Field(f) => match facts.values.get(f) {
                Some(v) => {
                    lit_matches(v, low).is_some_and(|o| cmp(CmpOp::Ge, o))
                        && lit_matches(v, high).is_some_and(|o| cmp(CmpOp::Le, o))
                }
                None => false,
            },
            o => {
                let n = operand_num(o, facts, now);
                match (num(low), num(high)) {
                    (Some(a), Some(b)) => n.test(CmpOp::Ge, a) && n.test(CmpOp::Le, b),
                    _ => false,
                }
            }
        },
        Cond::In {
            operand,
            values,
            negated,
        } => {
            let hit = match operand {
                Operand::Field(f) => match facts.values.get(f) {
                    Some(v) => values
                        .iter()
                        .any(|l| lit_matches(v, l) == Some(std::cmp::Ordering::Equal)),
                    None => return false,
                },
                o => {
                    let n = operand_num(o, facts, now);
                    if matches!(n, Num::Missing) {
                        return false;
                    }
                    values
                        .iter()
                        .any(|l| num(l).is_some_and(|l| n.test(CmpOp::Eq, l)))
                }
            };
            hit != *negated
        }
        Cond::Contains { field, value } => match facts.values.get(field) {
            Some(Value::List(items)) => items.iter().any(|i| i == value),
            Some(Value::Text(s)) => s.contains(value.as_str()),
            _ => false,
        },
        Cond::StartsWith { field, prefix } => {
            matches!(facts.values.get(field), Some(Value::Text(s)) if s.starts_with(prefix.as_str()))
        }
        Cond::Exists { field } => match facts.values.get(field) {
            Some(Value::List(items)) => !items.is_empty(),
            Some(_) => true,
            None => false,
        },
        Cond::Time {
            field,
            op,
            reference,
        } => {
            let Some(Value::Time(t)) = facts.values.get(field) else {
                return false;
            };
            match (op, reference) {
                (TimeOp::Within, TimeRef::Ago { hours }) => *t >= ago(now, *hours) && *t <= now,
                (TimeOp::Within, TimeRef::At(_)) => false,
                (op, r) => {
                    let at = match r {
                        TimeRef::Ago { hours } => ago(now, *hours),
                        TimeRef::At(x) => *x,
                    };
                    if *op == TimeOp::Before {
                        *t < at
                    } else {
                        *t > at
                    }
                }
            }
        }
        Cond::TopPercent { field, percent } => top(facts, field, *percent).0,
        Cond::Consent { channel, purpose } => consent(facts, channel, purpose).0,
        Cond::InSegment(r) => match r {
            SegmentRef::Id(id) => facts.segments.contains(id),
            SegmentRef::Name(_) => false,
        },
    }
}

/// (holds, rank, cut-off, total) of `x in top P%`.
fn top(facts: &Facts, field: &str, percent: Decimal) -> (bool, i64, i64, i64) {
    let (Some(_), Some(r)) = (as_num(facts.values.get(field)), facts.ranks.get(field)) else {
        return (false, 0, 0, 0);
    };
    let cut = (Decimal::from(r.total) * percent / Decimal::ONE_HUNDRED).ceil();
    let cut = i64::try_from(cut).unwrap_or(i64::MAX);
    let rank = r.greater + 1;
    (r.total > 0 && rank <= cut, rank, cut, r.total)
}

fn thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn scalar(kind: Kind) -> proto::ScalarValue {
    proto::ScalarValue { kind: Some(kind) }
}

fn value_scalars(v: &Value) -> Vec<proto::ScalarValue> {
    match v {
        Value::Bool(b) => vec![scalar(Kind::BoolValue(*b))],
        Value::Int(i) => vec![scalar(Kind::IntegerValue(*i))],
        Value::Decimal(d) => vec![scalar(Kind::DecimalValue(d.to_string()))],
        Value::Text(s) => vec![scalar(Kind::StringValue(s.clone()))],
        Value::Time(t) => vec![scalar(Kind::TimeValue(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
        }))],
        Value::List(items) => items
            .iter()
            .map(|s| scalar(Kind::StringValue(s.clone())))
            .collect(),
    }
}

/// The rule's explanation tree for the customer: every node evaluated (no
/// short-circuit), with the canonical text of the node, whether it held, the
/// customer's values tested and a note.
pub fn explain(
    expr: &Expr,
    facts: &Facts,
    now: DateTime<Utc>,
    names: &dyn Fn(Uuid) -> Option<String>,
) -> ConditionExplanation {
    let text = super::print::print(expr, names);
    match expr {
        Expr::And(items) | Expr::Or(items) => {
            let children: Vec<ConditionExplanation> = items
                .iter()
                .map(|e| explain(e, facts, now, names))
                .collect();
            let and = matches!(expr, Expr::And(_));
            let held = if and {
                children.iter().all(|c| c.held)
            } else {
                children.iter().any(|c| c.held)
            };
            let n = children.iter().filter(|c| c.held).count();
            ConditionExplanation {
                kind: if and {
                    ExplanationNodeKind::AllOf
                } else {
                    ExplanationNodeKind::AnyOf
                } as i32,
                condition: text,
                held,
                customer_values: Vec::new(),
                detail: format!("{n} of {} held", children.len()),
                children,
            }
        }
        Expr::Not(inner) => {
            let child = explain(inner, facts, now, names);
            ConditionExplanation {
                kind: ExplanationNodeKind::Not as i32,
                condition: text,
                held: !child.held,
                customer_values: Vec::new(),
                detail: String::new(),
                children: vec![child],
            }
        }
        Expr::Cond(c) => {
            let (values, detail) = condition_values(&c.kind, facts, now, names);
            ConditionExplanation {
                kind: ExplanationNodeKind::Condition as i32,
                condition: print_condition(c, names),
                held: cond(&c.kind, facts, now),
                customer_values: values,
                detail,
                children: Vec::new(),
            }
        }
    }
}

fn operand_values(
    o: &Operand,
    facts: &Facts,
    now: DateTime<Utc>,
) -> (Vec<proto::ScalarValue>, String) {
    match o {
        Operand::Field(f) => match facts.values.get(f) {
            Some(v) => (value_scalars(v), String::new()),
            None => (Vec::new(), "no value".to_string()),
        },
        Operand::Aggregate(a) => {
            let (n, seen) = aggregate(a, facts, now);
            let what = match &a.measure {
                Some(m) => format!("{}.{m}", a.source),
                None => a.source.clone(),
            };
            let detail = format!(
                "{} {} interaction{} in the last {}d",
                seen,
                if a.function == AggFn::Count {
                    a.source.as_str()
                } else {
                    what.as_str()
                },
                if seen == 1 { "" } else { "s" },
                a.window_days
            );
            let integer = a.function == AggFn::Count
                || (a.function != AggFn::Avg
                    && a.measure
                        .as_deref()
                        .and_then(|m| measure_type(&a.source, m))
                        == Some(FieldType::Integer));
            match n.shown() {
                Some(d) if integer => (
                    vec![scalar(Kind::IntegerValue(i64::try_from(d).unwrap_or(0)))],
                    detail,
                ),
                Some(d) => (vec![scalar(Kind::DecimalValue(d.to_string()))], detail),
                None => (Vec::new(), format!("no value: {detail}")),
            }
        }
        Operand::Percentile(f) => {
            let n = operand_num(o, facts, now);
            match (n.shown(), facts.ranks.get(f)) {
                (Some(d), Some(r)) => (
                    vec![scalar(Kind::DecimalValue(d.to_string()))],
                    format!(
                        "{} of {} customers with a value have a smaller {f}",
                        thousands(r.smaller),
                        thousands(r.total)
                    ),
                ),
                _ => (Vec::new(), "no value".to_string()),
            }
        }
    }
}

fn condition_values(
    c: &Cond,
    facts: &Facts,
    now: DateTime<Utc>,
    names: &dyn Fn(Uuid) -> Option<String>,
) -> (Vec<proto::ScalarValue>, String) {
    let field_values = |f: &str| match facts.values.get(f) {
        Some(v) => (value_scalars(v), String::new()),
        None => (Vec::new(), "no value".to_string()),
    };
    match c {
        Cond::Compare { left, .. } => operand_values(left, facts, now),
        Cond::Between { operand, .. } | Cond::In { operand, .. } => {
            operand_values(operand, facts, now)
        }
        Cond::Contains { field, .. }
        | Cond::StartsWith { field, .. }
        | Cond::Exists { field }
        | Cond::Time { field, .. } => field_values(field),
        Cond::TopPercent { field, percent } => {
            let (values, _) = field_values(field);
            let (_, rank, cut, total) = top(facts, field, *percent);
            if values.is_empty() || total == 0 {
                (values, "no value".to_string())
            } else {
                (
                    values,
                    format!(
                        "rank {} of {} (cut-off for top {percent}%: {})",
                        thousands(rank),
                        thousands(total),
                        thousands(cut)
                    ),
                )
            }
        }
        Cond::Consent { channel, purpose } => {
            let (allowed, why) = consent(facts, channel, purpose);
            (vec![scalar(Kind::BoolValue(allowed))], why)
        }
        Cond::InSegment(r) => {
            let (member, shown) = match r {
                SegmentRef::Id(id) => (
                    facts.segments.contains(id),
                    names(*id).unwrap_or_else(|| id.to_string()),
                ),
                SegmentRef::Name(n) => (false, n.clone()),
            };
            let detail = if member {
                format!("member of {}", super::lex::quote(&shown))
            } else {
                format!("not a member of {}", super::lex::quote(&shown))
            };
            (vec![scalar(Kind::BoolValue(member))], detail)
        }
    }
}

/// SQL for the select list that gives `facts_from_row` a `features f` row
/// with exact numbers: `to_jsonb(f)` with every numeric column as text.
pub const FEATURES_ROW_SQL: &str = "to_jsonb(f) || jsonb_build_object(\
'monetary', f.monetary::text, 'avg_order_value', f.avg_order_value::text, \
'campaign_response_rate', f.campaign_response_rate::text, 'clv', f.clv::text, \
'p_alive', f.p_alive::text, 'expected_purchases', f.expected_purchases::text, \
'net_clv', f.net_clv::text, 'cost_to_serve', f.cost_to_serve::text, 'net_profit', f.net_profit::text)";

fn json_decimal(v: &serde_json::Value) -> Option<Decimal> {
    match v {
        serde_json::Value::Number(n) => n
            .to_string()
            .parse::<Decimal>()
            .ok()
            .or_else(|| Decimal::from_scientific(&n.to_string()).ok()),
        serde_json::Value::String(s) => {
            let body = s.strip_prefix('-').unwrap_or(s);
            let (i, f) = body.split_once('.').unwrap_or((body, "0"));
            let digits = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit());
            if digits(i) && digits(f) {
                s.parse::<Decimal>().ok()
            } else {
                None
            }
        }
        _ => None,
    }
}

fn json_time(v: &serde_json::Value, strict: bool) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    if strict && !s.contains('T') && !s.contains('t') {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%:z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn typed(v: &serde_json::Value, ty: FieldType, attribute: bool) -> Option<Value> {
    if v.is_null() {
        return None;
    }
    match ty {
        FieldType::Integer => v.as_i64().map(Value::Int),
        FieldType::Decimal | FieldType::Money => json_decimal(v).map(Value::Decimal),
        FieldType::String | FieldType::Enum => v.as_str().map(|s| Value::Text(s.to_string())),
        FieldType::Bool => v.as_bool().map(Value::Bool),
        FieldType::Timestamp => json_time(v, attribute).map(Value::Time),
        FieldType::StringList => v.as_array().map(|a| {
            Value::List(
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
            )
        }),
        FieldType::Unspecified => None,
    }
}

/// The `Facts.values` of one `features` row given as JSON (select
/// `FEATURES_ROW_SQL` for exact numbers; plain `to_jsonb(f)` also works): every
/// catalogue field the row has a value of the field's type for. See
/// `consents_from_row` for `Facts.consents`.
pub fn facts_from_row(row: &serde_json::Value, catalog: &Catalog) -> HashMap<String, Value> {
    let mut values = HashMap::new();
    for d in catalog.fields() {
        let Some(f) = catalog.field(&d.name) else {
            continue;
        };
        let (v, attribute) = match &f.storage {
            Storage::Column(col) => (row.get(*col), false),
            Storage::Attribute(name) => (row.get("attributes").and_then(|a| a.get(name)), true),
        };
        if let Some(value) = v.and_then(|v| typed(v, f.ty, attribute)) {
            values.insert(f.name.clone(), value);
        }
    }
    values
}

/// The `Facts.consents` of one `features` row given as JSON (its `consents`
/// object: "<channel>:<purpose>" -> {"granted": bool, "time": RFC 3339}).
pub fn consents_from_row(
    row: &serde_json::Value,
) -> HashMap<(String, String), (bool, DateTime<Utc>)> {
    let mut out = HashMap::new();
    if let Some(obj) = row.get("consents").and_then(|c| c.as_object()) {
        for (key, rec) in obj {
            let Some((channel, purpose)) = key.split_once(':') else {
                continue;
            };
            let granted = rec.get("granted").and_then(|g| g.as_bool());
            let time = rec.get("time").and_then(|t| json_time(t, false));
            if let (Some(g), Some(t)) = (granted, time) {
                out.insert((channel.to_string(), purpose.to_string()), (g, t));
            }
        }
    }
    out
}
