//! The type checker: a rule against the field catalogue.

use proto::FieldType;
use rapport_proto::rapport::segmentation::v1 as proto;
use rust_decimal::Decimal;

use super::catalog::*;
use super::lex::{MAX_STRING_CHARS, quote};
use super::parse::{MAX_CONDITIONS, MAX_DEPTH, MAX_LIST};
use super::print;
use super::{
    AggFn, Cond, Condition, Expr, Literal, Location, Operand, Pos, RuleError, SegmentRef, TimeOp,
    TimeRef,
};

fn operators_of(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Integer | FieldType::Decimal | FieldType::Money => {
            "=, !=, <, <=, >, >=, between, in, not in, exists, in top"
        }
        FieldType::String => "=, !=, in, not in, contains, starts_with, exists",
        FieldType::Enum => "=, !=, in, not in, exists",
        FieldType::Bool => "=, !=, exists",
        FieldType::Timestamp => "within, before, after, between, exists",
        FieldType::StringList => "contains, exists",
        FieldType::Unspecified => "",
    }
}

/// Levenshtein distance in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggestion(name: &str, candidates: &[String]) -> String {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let best = candidates
        .iter()
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

/// A literal as named in "found ..." messages.
pub fn describe_literal(l: &Literal) -> String {
    match l {
        Literal::Str(s) => format!("string {}", quote(s)),
        Literal::Int(_) | Literal::Dec(_) => format!("number {}", print::literal(l)),
        Literal::Bool(b) => b.to_string(),
        Literal::Time(t) => format!("timestamp {}", print::time(t)),
    }
}

/// Checks the rule against the catalogue: every field known, operators
/// allowed for the field's type, literals of the right type (ENUM values
/// among the allowed ones), durations and windows in range, aggregate
/// measures, top percentages, `between` bounds in order, and the LIMITS.
/// Errors point at the text position when the rule was parsed from text, or
/// at the structured node path otherwise.
pub fn check(expr: &Expr, catalog: &Catalog) -> Result<(), RuleError> {
    let mut c = Checker {
        catalog,
        conditions: 0,
    };
    c.expr(expr, "", 0)
}

struct Checker<'a> {
    catalog: &'a Catalog,
    conditions: usize,
}

fn join(path: &str, suffix: &str) -> String {
    if path.is_empty() {
        suffix.to_string()
    } else if suffix.is_empty() {
        path.to_string()
    } else {
        format!("{path}.{suffix}")
    }
}

fn first_pos(e: &Expr) -> Option<Pos> {
    match e {
        Expr::And(v) | Expr::Or(v) => v.first().and_then(first_pos),
        Expr::Not(inner) => first_pos(inner),
        Expr::Cond(c) => c.span.start,
    }
}

fn at(pos: Option<Pos>, path: String, message: String) -> RuleError {
    RuleError {
        location: match pos {
            Some(p) => Location::Text(p),
            None => Location::Node(path),
        },
        message,
    }
}

/// The proto oneof name of a condition.
pub(crate) fn node_name(c: &Cond) -> &'static str {
    match c {
        Cond::Compare { .. } => "comparison",
        Cond::Between { .. } => "between",
        Cond::In { negated: false, .. } => "in_list",
        Cond::In { negated: true, .. } => "not_in_list",
        Cond::Contains { .. } => "contains",
        Cond::StartsWith { .. } => "starts_with",
        Cond::Exists { .. } => "exists",
        Cond::Time { .. } => "time",
        Cond::TopPercent { .. } => "top_percent",
        Cond::Consent { .. } => "consent",
        Cond::InSegment(_) => "in_segment",
    }
}

/// The type an operand yields.
struct OperandType {
    ty: FieldType,
    name: String,
    allowed: Vec<String>,
    is_field: bool,
}

impl Checker<'_> {
    fn expr(&mut self, e: &Expr, path: &str, depth: usize) -> Result<(), RuleError> {
        match e {
            Expr::And(items) | Expr::Or(items) => {
                let (name, word) = if matches!(e, Expr::And(_)) {
                    ("all_of", "and")
                } else {
                    ("any_of", "or")
                };
                self.depth(e, path, depth + 1)?;
                if items.len() < 2 || items.len() > 100 {
                    return Err(at(
                        first_pos(e),
                        join(path, &format!("{name}.rules")),
                        format!(
                            "expected 2 to 100 rules combined by one \"{word}\", found {}",
                            items.len()
                        ),
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    self.expr(item, &join(path, &format!("{name}.rules[{i}]")), depth + 1)?;
                }
                Ok(())
            }
            Expr::Not(inner) => {
                self.depth(e, path, depth + 1)?;
                self.expr(inner, &join(path, "negate"), depth + 1)
            }
            Expr::Cond(c) => {
                self.conditions += 1;
                if self.conditions > MAX_CONDITIONS {
                    return Err(at(
                        c.span.start,
                        path.to_string(),
                        format!("expected at most {MAX_CONDITIONS} conditions, found more"),
                    ));
                }
                self.condition(c, &join(path, node_name(&c.kind)))
            }
        }
    }

    fn depth(&self, e: &Expr, path: &str, depth: usize) -> Result<(), RuleError> {
        if depth > MAX_DEPTH {
            return Err(at(
                first_pos(e),
                path.to_string(),
                format!(
                    "expected and/or/not nested at most {MAX_DEPTH} deep, found deeper nesting"
                ),
            ));
        }
        Ok(())
    }

    fn field(
        &self,
        name: &str,
        pos: Option<Pos>,
        path: String,
    ) -> Result<super::catalog::Field, RuleError> {
        match self.catalog.field(name) {
            Some(f) => Ok(f),
            None => {
                let shown = if name.is_empty() {
                    "a field path".to_string()
                } else {
                    format!("unknown field \"{name}\"")
                };
                Err(at(
                    pos,
                    path,
                    format!(
                        "{shown}: expected a field listed by ListFields{}",
                        suggestion(name, &self.catalog.field_names())
                    ),
                ))
            }
        }
    }

    fn operand(&self, o: &Operand, span: &[Pos], path: &str) -> Result<OperandType, RuleError> {
        let p = |i: usize| span.get(i).copied();
        match o {
            Operand::Field(name) => {
                let f = self.field(name, p(0), join(path, "field"))?;
                Ok(OperandType {
                    ty: f.ty,
                    name: name.clone(),
                    allowed: f.allowed,
                    is_field: true,
                })
            }
            Operand::Percentile(name) => {
                let fpath = join(path, "percentile.field");
                let f = self.field(name, p(1), fpath.clone())?;
                if !is_numeric(f.ty) {
                    return Err(at(
                        p(1),
                        fpath,
                        format!(
                            "expected a numeric field (INTEGER, DECIMAL or MONEY) for \"percentile\", found \"{name}\" ({})",
                            type_name(f.ty)
                        ),
                    ));
                }
                Ok(OperandType {
                    ty: FieldType::Decimal,
                    name: format!("percentile({name})"),
                    allowed: Vec::new(),
                    is_field: false,
                })
            }
            Operand::Aggregate(a) => {
                let apath = join(path, "aggregate");
                let spos = p(1);
                let known_builtin = BUILTIN_SOURCES.iter().any(|(n, _)| *n == a.source);
                if !known_builtin && !self.catalog.is_custom(&a.source) {
                    return Err(at(
                        spos,
                        join(&apath, "interaction_type"),
                        format!(
                            "unknown interaction type {}: expected a source listed by ListFields{}",
                            quote(&a.source),
                            suggestion(&a.source, &self.catalog.source_names())
                        ),
                    ));
                }
                let ty = match (&a.function, &a.measure) {
                    (AggFn::Count, None) => FieldType::Integer,
                    (AggFn::Count, Some(m)) => {
                        return Err(at(
                            spos,
                            join(&apath, "measure"),
                            format!(
                                "expected a source without a measure for \"count\" (e.g. count({}, 30d)), found measure \"{m}\"",
                                a.source
                            ),
                        ));
                    }
                    (f, None) => {
                        return Err(at(
                            spos,
                            join(&apath, "measure"),
                            format!(
                                "expected a source with a measure for \"{}\" (e.g. {}(purchase.amount, 90d)), found {}",
                                print::agg_fn(*f),
                                print::agg_fn(*f),
                                if known_builtin {
                                    a.source.clone()
                                } else {
                                    quote(&a.source)
                                }
                            ),
                        ));
                    }
                    (_, Some(m)) => match measure_type(&a.source, m) {
                        Some(ty) => ty,
                        None => {
                            let ms: Vec<String> = BUILTIN_SOURCES
                                .iter()
                                .find(|(n, _)| *n == a.source)
                                .map(|(_, ms)| {
                                    ms.iter().map(|(m, _, _)| format!("\"{m}\"")).collect()
                                })
                                .unwrap_or_default();
                            let expected = if ms.is_empty() {
                                format!("no measure on \"{}\" (it can only be counted)", a.source)
                            } else {
                                format!("one of {} for \"{}\"", ms.join(", "), a.source)
                            };
                            return Err(at(
                                spos,
                                join(&apath, "measure"),
                                format!("expected {expected}, found measure \"{m}\""),
                            ));
                        }
                    },
                };
                if !(1..=3650).contains(&a.window_days) {
                    return Err(at(
                        p(2),
                        join(&apath, "window_days"),
                        format!("expected a window of 1d to 3650d, found {}d", a.window_days),
                    ));
                }
                Ok(OperandType {
                    ty,
                    name: print::operand(o),
                    allowed: Vec::new(),
                    is_field: false,
                })
            }
        }
    }

    fn literal(
        &self,
        t: &OperandType,
        l: &Literal,
        pos: Option<Pos>,
        path: String,
    ) -> Result<(), RuleError> {
        let ok = match t.ty {
            FieldType::Integer | FieldType::Decimal | FieldType::Money => {
                matches!(l, Literal::Int(_) | Literal::Dec(_))
            }
            FieldType::String | FieldType::Enum => matches!(l, Literal::Str(_)),
            FieldType::Bool => matches!(l, Literal::Bool(_)),
            FieldType::Timestamp => matches!(l, Literal::Time(_)),
            _ => false,
        };
        if !ok {
            let what = match t.ty {
                FieldType::Integer | FieldType::Decimal | FieldType::Money => "a number",
                FieldType::String | FieldType::Enum => "a string",
                FieldType::Bool => "true or false",
                FieldType::Timestamp => "a timestamp",
                _ => "a literal",
            };
            return Err(at(
                pos,
                path,
                format!(
                    "expected {what} for \"{}\" ({}), found {}",
                    t.name,
                    type_name(t.ty),
                    describe_literal(l)
                ),
            ));
        }
        if let Literal::Str(s) = l {
            if s.chars().count() > MAX_STRING_CHARS {
                return Err(at(
                    pos,
                    path,
                    format!(
                        "expected a string of at most {MAX_STRING_CHARS} characters, found a longer one"
                    ),
                ));
            }
            if s.contains('\0') {
                return Err(at(pos, path, NUL_IN_STRING.to_string()));
            }
            if t.ty == FieldType::Enum && !t.allowed.iter().any(|a| a == s) {
                let list: Vec<String> = t.allowed.iter().map(|a| quote(a)).collect();
                return Err(at(
                    pos,
                    path,
                    format!(
                        "expected one of {} for \"{}\", found {}",
                        list.join(", "),
                        t.name,
                        quote(s)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn op_error(&self, t: &OperandType, op: &str, pos: Option<Pos>, path: String) -> RuleError {
        let allowed = if t.is_field {
            operators_of(t.ty)
        } else {
            "=, !=, <, <=, >, >=, between, in, not in"
        };
        at(
            pos,
            path,
            format!(
                "expected one of {allowed} for \"{}\" ({}), found \"{op}\"",
                t.name,
                type_name(t.ty)
            ),
        )
    }

    fn condition(&mut self, c: &Condition, path: &str) -> Result<(), RuleError> {
        let s = &c.span;
        let item = |i: usize| s.items.get(i).copied();
        match &c.kind {
            Cond::Compare { left, op, value } => {
                let t = self.operand(left, &s.operand, &join(path, "left"))?;
                let eq_only = matches!(op, super::CmpOp::Eq | super::CmpOp::Ne);
                let allowed = match t.ty {
                    FieldType::Integer | FieldType::Decimal | FieldType::Money => true,
                    FieldType::String | FieldType::Enum | FieldType::Bool => eq_only,
                    _ => false,
                };
                if !allowed {
                    return Err(self.op_error(&t, print::cmp_op(*op), s.op, join(path, "op")));
                }
                self.literal(&t, value, item(0), join(path, "value"))
            }
            Cond::Between { operand, low, high } => {
                let t = self.operand(operand, &s.operand, &join(path, "operand"))?;
                if !(is_numeric(t.ty) || t.ty == FieldType::Timestamp) {
                    return Err(self.op_error(&t, "between", s.op, join(path, "operand")));
                }
                self.literal(&t, low, item(0), join(path, "low"))?;
                self.literal(&t, high, item(1), join(path, "high"))?;
                let in_order = match (low, high) {
                    (Literal::Time(a), Literal::Time(b)) => a <= b,
                    (a, b) => match (num(a), num(b)) {
                        (Some(a), Some(b)) => a <= b,
                        _ => true,
                    },
                };
                if !in_order {
                    return Err(at(
                        item(1),
                        join(path, "high"),
                        format!(
                            "expected an upper bound not lower than {}, found {}",
                            print::literal(low),
                            print::literal(high)
                        ),
                    ));
                }
                Ok(())
            }
            Cond::In {
                operand,
                values,
                negated,
            } => {
                let t = self.operand(operand, &s.operand, &join(path, "operand"))?;
                if !(is_numeric(t.ty) || matches!(t.ty, FieldType::String | FieldType::Enum)) {
                    let op = if *negated { "not in" } else { "in" };
                    return Err(self.op_error(&t, op, s.op, join(path, "operand")));
                }
                if values.is_empty() || values.len() > MAX_LIST {
                    return Err(at(
                        s.op,
                        join(path, "values"),
                        format!(
                            "expected 1 to {MAX_LIST} literals in the list, found {}",
                            values.len()
                        ),
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    self.literal(&t, v, item(i), join(path, &format!("values[{i}]")))?;
                }
                Ok(())
            }
            Cond::Contains { field, value } => {
                let f = self.field(field, s.start, join(path, "field"))?;
                if !matches!(f.ty, FieldType::String | FieldType::StringList) {
                    let t = OperandType {
                        ty: f.ty,
                        name: field.clone(),
                        allowed: Vec::new(),
                        is_field: true,
                    };
                    return Err(self.op_error(&t, "contains", s.op, join(path, "field")));
                }
                text_arg(value, item(0), join(path, "value"), "contains")
            }
            Cond::StartsWith { field, prefix } => {
                let f = self.field(field, s.start, join(path, "field"))?;
                if f.ty != FieldType::String {
                    let t = OperandType {
                        ty: f.ty,
                        name: field.clone(),
                        allowed: Vec::new(),
                        is_field: true,
                    };
                    return Err(self.op_error(&t, "starts_with", s.op, join(path, "field")));
                }
                text_arg(prefix, item(0), join(path, "prefix"), "starts_with")
            }
            Cond::Exists { field } => {
                self.field(field, item(0), join(path, "field"))?;
                Ok(())
            }
            Cond::Time {
                field,
                op,
                reference,
            } => {
                let f = self.field(field, s.start, join(path, "field"))?;
                if f.ty != FieldType::Timestamp {
                    let t = OperandType {
                        ty: f.ty,
                        name: field.clone(),
                        allowed: Vec::new(),
                        is_field: true,
                    };
                    let w = match op {
                        TimeOp::Within => "within",
                        TimeOp::Before => "before",
                        TimeOp::After => "after",
                    };
                    return Err(self.op_error(&t, w, s.op, join(path, "field")));
                }
                match reference {
                    TimeRef::Ago { hours } => {
                        if !(1..=36_500 * 24).contains(hours) {
                            return Err(at(
                                item(0),
                                join(path, "ago"),
                                format!(
                                    "expected a duration of 1h to 36500d, found {}",
                                    print::duration_hours(*hours)
                                ),
                            ));
                        }
                    }
                    TimeRef::At(_) => {
                        if *op == TimeOp::Within {
                            return Err(at(
                                item(0),
                                join(path, "time"),
                                "expected a duration after \"within\" (e.g. 90d), found a timestamp".to_string(),
                            ));
                        }
                    }
                }
                Ok(())
            }
            Cond::TopPercent { field, percent } => {
                let f = self.field(field, s.start, join(path, "field"))?;
                if !is_numeric(f.ty) {
                    return Err(at(
                        s.start,
                        join(path, "field"),
                        format!(
                            "expected a numeric field (INTEGER, DECIMAL or MONEY) for \"in top\", found \"{field}\" ({})",
                            type_name(f.ty)
                        ),
                    ));
                }
                if *percent <= Decimal::ZERO || *percent > Decimal::ONE_HUNDRED {
                    return Err(at(
                        item(0),
                        join(path, "percent"),
                        format!(
                            "expected a percentage greater than 0 and at most 100, found {percent}"
                        ),
                    ));
                }
                Ok(())
            }
            Cond::Consent { channel, purpose } => {
                if !CHANNELS.contains(&channel.as_str()) {
                    return Err(at(
                        item(0),
                        join(path, "channel"),
                        format!(
                            "expected a channel (email, sms, phone, post, push or any), found \"{channel}\""
                        ),
                    ));
                }
                if !PURPOSES.contains(&purpose.as_str()) {
                    return Err(at(
                        item(1),
                        join(path, "purpose"),
                        format!(
                            "expected a purpose (marketing, profiling, service or research), found \"{purpose}\""
                        ),
                    ));
                }
                Ok(())
            }
            Cond::InSegment(r) => match r {
                SegmentRef::Name(n) if n.is_empty() || n.chars().count() > MAX_STRING_CHARS => {
                    Err(at(
                        item(0),
                        join(path, "segment_name"),
                        "expected a segment name or id, found an empty or too long string"
                            .to_string(),
                    ))
                }
                _ => Ok(()),
            },
        }
    }
}

fn text_arg(v: &str, pos: Option<Pos>, path: String, op: &str) -> Result<(), RuleError> {
    let n = v.chars().count();
    if n == 0 || n > MAX_STRING_CHARS {
        return Err(at(
            pos,
            path,
            format!(
                "expected a string of 1 to {MAX_STRING_CHARS} characters after \"{op}\", found {}",
                if n == 0 {
                    "an empty string".to_string()
                } else {
                    format!("{n} characters")
                }
            ),
        ));
    }
    if v.contains('\0') {
        return Err(at(pos, path, NUL_IN_STRING.to_string()));
    }
    Ok(())
}

/// Why a string with U+0000 is refused: no value in the projection can hold
/// one, and PostgreSQL text cannot either.
const NUL_IN_STRING: &str = "expected a string without NUL characters (U+0000)";

pub(crate) fn num(l: &Literal) -> Option<Decimal> {
    match l {
        Literal::Int(i) => Some(Decimal::from(*i)),
        Literal::Dec(d) => Some(*d),
        _ => None,
    }
}
