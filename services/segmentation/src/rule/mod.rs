//! The segment rule language (proto/rapport/segmentation/v1/rule.proto):
//! parsing, canonical printing, proto conversion, type checking against the
//! field catalogue, compilation to SQL over the `features` projection, and
//! in-memory evaluation with explanations. Pure: no I/O.
//!
//! # Public API (used by the service)
//!
//! ```text
//! // Tree
//! pub enum Expr { And(Vec<Expr>), Or(Vec<Expr>), Not(Box<Expr>), Cond(Condition) }
//! pub struct Condition { pub kind: Cond, pub span: Span }   // span: text positions, ignored by ==
//! pub enum Cond { Compare{..}, Between{..}, In{..,negated}, Contains{..}, StartsWith{..},
//!                 Exists{..}, Time{..}, TopPercent{..}, Consent{..}, InSegment(SegmentRef) }
//! pub enum SegmentRef { Name(String), Id(Uuid) }
//!
//! // Errors
//! pub struct RuleError { pub location: Location, pub message: String }
//! pub enum Location { Text(Pos /* line, column: 1-based, characters */), Node(String /* "all_of.rules[2].comparison.value", "" = root */) }
//! impl RuleError { pub fn field_violation(&self, request_field: &str) -> (String, String) }
//! //   Text: (request_field, "line L, column C: <message>")
//! //   Node: (request_field + "." + path (just request_field for the root), <message>)
//! impl Display for RuleError                                  // the description above
//!
//! // Text and structured forms
//! pub fn parse(text: &str) -> Result<Expr, RuleError>;         // syntax + text LIMITS
//! pub fn print(expr: &Expr, names: &dyn Fn(Uuid) -> Option<String>) -> String; // canonical text
//! pub fn from_proto(rule: &proto::Rule) -> Result<Expr, RuleError>;
//! pub fn to_proto(expr: &Expr) -> proto::Rule;
//!
//! // Catalogue and type checking (check also enforces every LIMIT and low <= high)
//! pub struct AttributeField { pub name: String, pub ty: proto::FieldType, pub description: String }
//! impl Catalog {
//!     pub fn new(attributes: Vec<AttributeField>, custom_types: Vec<String>) -> Catalog;
//!     pub fn fields(&self) -> Vec<proto::FieldDescriptor>;
//!     pub fn aggregate_sources(&self) -> Vec<proto::AggregateSource>;
//!     pub fn field(&self, name: &str) -> Option<Field>;
//! }
//! pub fn check(expr: &Expr, catalog: &Catalog) -> Result<(), RuleError>;
//!
//! // Segment references
//! pub fn segment_refs(expr: &Expr) -> Vec<SegmentRef>;        // in order, duplicates kept
//! pub fn resolve_segments(expr: &mut Expr, resolve: &dyn Fn(&str) -> Option<Uuid>) -> Result<(), RuleError>;
//! //   names -> ids, ids checked; an unknown name or id is an error at its position/path
//! //   ("in_segment.segment_name" / "in_segment.segment_id")
//!
//! // SQL
//! pub struct Sql { pub condition: String, pub params: Vec<SqlParam> }
//! pub enum SqlParam { Uuid(Uuid), Text(String), TextArray(Vec<String>), Decimal(Decimal), Int(i64), Bool(bool), Time(DateTime<Utc>) }
//! pub fn compile_sql(expr: &Expr, catalog: &Catalog, now: DateTime<Utc>) -> Sql;
//! //   run: SELECT f.customer_id FROM features f WHERE f.tenant_id = $1 AND (<condition>)
//! //   with $1 = tenant id and params bound as $2, $3, ... in order. Tables used:
//! //   features (aliases f and r), events e, memberships m (search_path must reach them).
//!
//! // Evaluation
//! pub struct Facts { values, consents, events, segments, ranks }   // see the struct
//! pub enum Value { Bool, Int, Decimal, Text, Time, List }
//! pub struct Event { kind, occur_time, amount, margin, csat, nps }
//! pub struct RankFacts { pub greater: i64, pub smaller: i64, pub total: i64 }
//! pub fn ranked_fields(expr: &Expr) -> Vec<String>;            // fields under `in top` / percentile()
//! pub fn evaluate(expr: &Expr, facts: &Facts, now: DateTime<Utc>) -> bool;
//! pub fn explain(expr: &Expr, facts: &Facts, now: DateTime<Utc>, names: &dyn Fn(Uuid) -> Option<String>) -> proto::ConditionExplanation;
//! pub const FEATURES_ROW_SQL: &str;   // select list giving a features f row as JSON with exact numbers
//! pub fn facts_from_row(row: &serde_json::Value, catalog: &Catalog) -> HashMap<String, Value>; // Facts.values (FINAL)
//! pub fn consents_from_row(row: &serde_json::Value) -> HashMap<(String, String), (bool, DateTime<Utc>)>; // Facts.consents
//! ```
//!
//! Typical use: `parse` (or `from_proto`), then `check`, then
//! `resolve_segments`, then store `to_proto` and show `print`; evaluate with
//! `compile_sql` (whole tenant) or `evaluate`/`explain` (one customer).

mod catalog;
mod check;
mod convert;
mod eval;
mod lex;
mod parse;
mod print;
mod sql;

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

pub use catalog::{AttributeField, Catalog, Field, Storage};
pub use check::check;
pub use convert::{from_proto, to_proto};
pub use eval::{
    Event, FEATURES_ROW_SQL, Facts, RankFacts, Value, consents_from_row, evaluate, explain,
    facts_from_row,
};
pub use parse::parse;
pub use print::{print, print_condition};
pub use sql::{Sql, SqlParam, compile_sql, kept_count_sql};

/// A text position: 1-based line and column (columns counted in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// Where an error is: a text position, or the path of a structured node
/// relative to the rule ("all_of.rules[2].comparison.value"; "" for the root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Text(Pos),
    Node(String),
}

/// An invalid rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub location: Location,
    pub message: String,
}

/// A rule tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cond(Condition),
}

/// Text positions of a condition's parts (empty for a structured rule).
/// Ignored by equality.
#[derive(Clone, Debug, Default)]
pub struct Span {
    pub start: Option<Pos>,
    pub op: Option<Pos>,
    pub operand: Vec<Pos>,
    pub items: Vec<Pos>,
}

impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        true
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub kind: Cond,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    Compare {
        left: Operand,
        op: CmpOp,
        value: Literal,
    },
    Between {
        operand: Operand,
        low: Literal,
        high: Literal,
    },
    In {
        operand: Operand,
        values: Vec<Literal>,
        negated: bool,
    },
    Contains {
        field: String,
        value: String,
    },
    StartsWith {
        field: String,
        prefix: String,
    },
    Exists {
        field: String,
    },
    Time {
        field: String,
        op: TimeOp,
        reference: TimeRef,
    },
    TopPercent {
        field: String,
        percent: Decimal,
    },
    Consent {
        channel: String,
        purpose: String,
    },
    InSegment(SegmentRef),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Field(String),
    Aggregate(Aggregate),
    Percentile(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    pub function: AggFn,
    pub source: String,
    pub measure: Option<String>,
    pub window_days: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFn {
    Sum,
    Count,
    Avg,
    Min,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeOp {
    Within,
    Before,
    After,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeRef {
    Ago { hours: u64 },
    At(DateTime<Utc>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Dec(Decimal),
    Bool(bool),
    Time(DateTime<Utc>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SegmentRef {
    Name(String),
    Id(Uuid),
}

impl RuleError {
    /// The BadRequest field violation for this error, for the request field
    /// that carried the rule (`rule_text`, `rule`, `segment.rule`, ...).
    pub fn field_violation(&self, request_field: &str) -> (String, String) {
        match &self.location {
            Location::Text(_) => (request_field.to_string(), self.to_string()),
            Location::Node(path) if path.is_empty() => {
                (request_field.to_string(), self.message.clone())
            }
            Location::Node(path) => (format!("{request_field}.{path}"), self.message.clone()),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Text(p) => {
                write!(f, "line {}, column {}: {}", p.line, p.column, self.message)
            }
            Location::Node(path) if path.is_empty() => f.write_str(&self.message),
            Location::Node(path) => write!(f, "{path}: {}", self.message),
        }
    }
}

impl std::error::Error for RuleError {}

fn conditions<'a>(e: &'a Expr, out: &mut Vec<&'a Condition>) {
    match e {
        Expr::And(items) | Expr::Or(items) => items.iter().for_each(|i| conditions(i, out)),
        Expr::Not(inner) => conditions(inner, out),
        Expr::Cond(c) => out.push(c),
    }
}

/// The `in_segment` references of the rule, in order (duplicates kept).
pub fn segment_refs(expr: &Expr) -> Vec<SegmentRef> {
    let mut cs = Vec::new();
    conditions(expr, &mut cs);
    cs.into_iter()
        .filter_map(|c| match &c.kind {
            Cond::InSegment(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// Replaces every `in_segment` name by the id `resolve` gives; an unknown
/// name is an error at the reference.
pub fn resolve_segments(
    expr: &mut Expr,
    resolve: &dyn Fn(&str) -> Option<Uuid>,
) -> Result<(), RuleError> {
    resolve_at(expr, resolve, "")
}

fn resolve_at(
    expr: &mut Expr,
    resolve: &dyn Fn(&str) -> Option<Uuid>,
    path: &str,
) -> Result<(), RuleError> {
    let join = |s: &str| {
        if path.is_empty() {
            s.to_string()
        } else {
            format!("{path}.{s}")
        }
    };
    let and = matches!(expr, Expr::And(_));
    match expr {
        Expr::And(items) | Expr::Or(items) => {
            let name = if and { "all_of" } else { "any_of" };
            for (i, item) in items.iter_mut().enumerate() {
                resolve_at(item, resolve, &join(&format!("{name}.rules[{i}]")))?;
            }
            Ok(())
        }
        Expr::Not(inner) => resolve_at(inner, resolve, &join("negate")),
        Expr::Cond(c) => {
            // A name is resolved to its id; an id is checked like a name, so
            // that an unknown id (or another tenant's) is refused too.
            let reference = match &c.kind {
                Cond::InSegment(SegmentRef::Name(n)) => Some(n.clone()),
                Cond::InSegment(SegmentRef::Id(id)) => Some(id.to_string()),
                _ => None,
            };
            if let Some(n) = reference {
                match resolve(&n) {
                    Some(id) => c.kind = Cond::InSegment(SegmentRef::Id(id)),
                    None => {
                        return Err(RuleError {
                            location: match (c.span.items.first(), &c.kind) {
                                (Some(p), _) => Location::Text(*p),
                                (None, Cond::InSegment(SegmentRef::Id(_))) => {
                                    Location::Node(join("in_segment.segment_id"))
                                }
                                (None, _) => Location::Node(join("in_segment.segment_name")),
                            },
                            message: format!(
                                "unknown segment {}: expected the name or id of an existing segment",
                                lex::quote(&n)
                            ),
                        });
                    }
                }
            }
            Ok(())
        }
    }
}

/// The fields ranked by the rule (`x in top P%`, `percentile(x)`), each once,
/// in order of first use: the caller fills `Facts.ranks` for them.
pub fn ranked_fields(expr: &Expr) -> Vec<String> {
    let mut cs = Vec::new();
    conditions(expr, &mut cs);
    let mut out: Vec<String> = Vec::new();
    for c in cs {
        let f = match &c.kind {
            Cond::TopPercent { field, .. } => Some(field),
            Cond::Compare {
                left: Operand::Percentile(f),
                ..
            }
            | Cond::Between {
                operand: Operand::Percentile(f),
                ..
            }
            | Cond::In {
                operand: Operand::Percentile(f),
                ..
            } => Some(f),
            _ => None,
        };
        if let Some(f) = f
            && !out.contains(f)
        {
            out.push(f.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
