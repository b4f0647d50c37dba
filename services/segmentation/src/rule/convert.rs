//! The structured face of a rule: conversion between the tree and
//! `rapport.segmentation.v1.Rule`.

use chrono::{DateTime, Datelike, Utc};
use rapport_proto::rapport::segmentation::v1 as proto;
use rust_decimal::Decimal;
use uuid::Uuid;

use proto::rule::Node;
use proto::scalar_value::Kind;
use proto::{AggregateFunction, ComparisonOperator, TimeOperator};

use super::parse::MAX_DEPTH;
use super::{
    AggFn, Aggregate, CmpOp, Cond, Condition, Expr, Literal, Location, Operand, RuleError,
    SegmentRef, Span, TimeOp, TimeRef,
};

fn err(path: &str, message: impl Into<String>) -> RuleError {
    RuleError {
        location: Location::Node(path.to_string()),
        message: message.into(),
    }
}

fn join(path: &str, suffix: &str) -> String {
    if path.is_empty() {
        suffix.to_string()
    } else {
        format!("{path}.{suffix}")
    }
}

fn timestamp(t: &DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn literal_to_proto(l: &Literal) -> proto::ScalarValue {
    let kind = match l {
        Literal::Str(s) => Kind::StringValue(s.clone()),
        Literal::Int(i) => Kind::IntegerValue(*i),
        Literal::Dec(d) => Kind::DecimalValue(d.to_string()),
        Literal::Bool(b) => Kind::BoolValue(*b),
        Literal::Time(t) => Kind::TimeValue(timestamp(t)),
    };
    proto::ScalarValue { kind: Some(kind) }
}

fn cmp_to(op: CmpOp) -> ComparisonOperator {
    match op {
        CmpOp::Eq => ComparisonOperator::Equal,
        CmpOp::Ne => ComparisonOperator::NotEqual,
        CmpOp::Lt => ComparisonOperator::Less,
        CmpOp::Le => ComparisonOperator::LessOrEqual,
        CmpOp::Gt => ComparisonOperator::Greater,
        CmpOp::Ge => ComparisonOperator::GreaterOrEqual,
    }
}

fn agg_to(f: AggFn) -> AggregateFunction {
    match f {
        AggFn::Sum => AggregateFunction::Sum,
        AggFn::Count => AggregateFunction::Count,
        AggFn::Avg => AggregateFunction::Avg,
        AggFn::Min => AggregateFunction::Min,
        AggFn::Max => AggregateFunction::Max,
    }
}

fn operand_to(o: &Operand) -> proto::Operand {
    use proto::operand::Operand as O;
    let o = match o {
        Operand::Field(f) => O::Field(f.clone()),
        Operand::Percentile(f) => O::Percentile(proto::Percentile { field: f.clone() }),
        Operand::Aggregate(a) => O::Aggregate(proto::Aggregate {
            function: agg_to(a.function) as i32,
            interaction_type: a.source.clone(),
            measure: a.measure.clone().unwrap_or_default(),
            window_days: i32::try_from(a.window_days).unwrap_or(i32::MAX),
        }),
    };
    proto::Operand { operand: Some(o) }
}

/// The structured form of a rule.
pub fn to_proto(expr: &Expr) -> proto::Rule {
    let node = match expr {
        Expr::And(items) => Node::AllOf(proto::RuleList {
            rules: items.iter().map(to_proto).collect(),
        }),
        Expr::Or(items) => Node::AnyOf(proto::RuleList {
            rules: items.iter().map(to_proto).collect(),
        }),
        Expr::Not(inner) => Node::Negate(Box::new(to_proto(inner))),
        Expr::Cond(c) => cond_to(&c.kind),
    };
    proto::Rule { node: Some(node) }
}

fn cond_to(c: &Cond) -> Node {
    match c {
        Cond::Compare { left, op, value } => Node::Comparison(proto::Comparison {
            left: Some(operand_to(left)),
            op: cmp_to(*op) as i32,
            value: Some(literal_to_proto(value)),
        }),
        Cond::Between { operand, low, high } => Node::Between(proto::Between {
            operand: Some(operand_to(operand)),
            low: Some(literal_to_proto(low)),
            high: Some(literal_to_proto(high)),
        }),
        Cond::In {
            operand,
            values,
            negated,
        } => {
            let l = proto::InList {
                operand: Some(operand_to(operand)),
                values: values.iter().map(literal_to_proto).collect(),
            };
            if *negated {
                Node::NotInList(l)
            } else {
                Node::InList(l)
            }
        }
        Cond::Contains { field, value } => Node::Contains(proto::Contains {
            field: field.clone(),
            value: value.clone(),
        }),
        Cond::StartsWith { field, prefix } => Node::StartsWith(proto::StartsWith {
            field: field.clone(),
            prefix: prefix.clone(),
        }),
        Cond::Exists { field } => Node::Exists(proto::Exists {
            field: field.clone(),
        }),
        Cond::Time {
            field,
            op,
            reference,
        } => {
            use proto::time_condition::Reference;
            let op = match op {
                TimeOp::Within => TimeOperator::Within,
                TimeOp::Before => TimeOperator::Before,
                TimeOp::After => TimeOperator::After,
            };
            let reference = match reference {
                TimeRef::Ago { hours } => Reference::Ago(prost_types::Duration {
                    seconds: i64::try_from(*hours).unwrap_or(i64::MAX / 3600) * 3600,
                    nanos: 0,
                }),
                TimeRef::At(t) => Reference::Time(timestamp(t)),
            };
            Node::Time(proto::TimeCondition {
                field: field.clone(),
                op: op as i32,
                reference: Some(reference),
            })
        }
        Cond::TopPercent { field, percent } => Node::TopPercent(proto::TopPercent {
            field: field.clone(),
            percent: percent.to_string().parse::<f64>().unwrap_or(f64::NAN),
        }),
        Cond::Consent { channel, purpose } => Node::Consent(proto::ConsentCondition {
            channel: channel.clone(),
            purpose: purpose.clone(),
        }),
        Cond::InSegment(r) => {
            use proto::segment_condition::Segment;
            let s = match r {
                SegmentRef::Id(id) => Segment::SegmentId(id.to_string()),
                SegmentRef::Name(n) => Segment::SegmentName(n.clone()),
            };
            Node::InSegment(proto::SegmentCondition { segment: Some(s) })
        }
    }
}

/// A timestamp of a structured rule (years 1 to 9999, as RFC 3339 allows).
fn time_from(t: &prost_types::Timestamp, path: &str) -> Result<DateTime<Utc>, RuleError> {
    let bad = || {
        err(
            path,
            "expected a timestamp between years 1 and 9999 with nanos 0..=999,999,999",
        )
    };
    let nanos = u32::try_from(t.nanos).map_err(|_| bad())?;
    let dt = DateTime::from_timestamp(t.seconds, nanos).ok_or_else(bad)?;
    if !(1..=9999).contains(&dt.year()) {
        return Err(bad());
    }
    Ok(dt)
}

/// Parses the decimal text of a ScalarValue: an optional "-", digits, an
/// optional "." with digits. Without a fraction and within 64 bits it is an
/// integer (the same tree as the text form `500`).
fn decimal_from(s: &str, path: &str) -> Result<Literal, RuleError> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(err(
            path,
            format!(
                "expected a decimal number (an optional \"-\", digits, and an optional \".\" with digits), found \"{s}\""
            ),
        ));
    }
    super::lex::parse_number(s).ok_or_else(|| {
        err(
            path,
            format!("expected a decimal number of at most 28 significant digits, found \"{s}\""),
        )
    })
}

fn literal_from(v: Option<&proto::ScalarValue>, path: &str) -> Result<Literal, RuleError> {
    let kind = v.and_then(|v| v.kind.as_ref()).ok_or_else(|| {
        err(
            path,
            "expected a value (one of string_value, integer_value, decimal_value, bool_value, time_value), found none",
        )
    })?;
    Ok(match kind {
        Kind::StringValue(s) => Literal::Str(s.clone()),
        Kind::IntegerValue(i) => Literal::Int(*i),
        Kind::DecimalValue(d) => decimal_from(d, &join(path, "decimal_value"))?,
        Kind::BoolValue(b) => Literal::Bool(*b),
        Kind::TimeValue(t) => Literal::Time(time_from(t, &join(path, "time_value"))?),
    })
}

fn operand_from(o: Option<&proto::Operand>, path: &str) -> Result<Operand, RuleError> {
    use proto::operand::Operand as O;
    let o = o.and_then(|o| o.operand.as_ref()).ok_or_else(|| {
        err(
            path,
            "expected an operand (one of field, aggregate, percentile), found none",
        )
    })?;
    Ok(match o {
        O::Field(f) => Operand::Field(f.clone()),
        O::Percentile(p) => Operand::Percentile(p.field.clone()),
        O::Aggregate(a) => {
            let apath = join(path, "aggregate");
            let function = match AggregateFunction::try_from(a.function) {
                Ok(AggregateFunction::Sum) => AggFn::Sum,
                Ok(AggregateFunction::Count) => AggFn::Count,
                Ok(AggregateFunction::Avg) => AggFn::Avg,
                Ok(AggregateFunction::Min) => AggFn::Min,
                Ok(AggregateFunction::Max) => AggFn::Max,
                _ => {
                    return Err(err(
                        &join(&apath, "function"),
                        format!("expected SUM, COUNT, AVG, MIN or MAX, found {}", a.function),
                    ));
                }
            };
            let window_days = u32::try_from(a.window_days).map_err(|_| {
                err(
                    &join(&apath, "window_days"),
                    format!(
                        "expected a window of 1 to 3650 days, found {}",
                        a.window_days
                    ),
                )
            })?;
            Operand::Aggregate(Aggregate {
                function,
                source: a.interaction_type.clone(),
                measure: (!a.measure.is_empty()).then(|| a.measure.clone()),
                window_days,
            })
        }
    })
}

/// The tree of a structured rule. Errors carry the path of the offending node
/// relative to the rule, e.g. `all_of.rules[2].comparison.value`.
pub fn from_proto(rule: &proto::Rule) -> Result<Expr, RuleError> {
    from_proto_at(rule, "", 0)
}

fn from_proto_at(rule: &proto::Rule, path: &str, depth: usize) -> Result<Expr, RuleError> {
    let node = rule.node.as_ref().ok_or_else(|| {
        err(
            path,
            "expected a rule (one of all_of, any_of, negate or a condition), found an empty rule",
        )
    })?;
    let nested = |name: &str| -> Result<usize, RuleError> {
        if depth + 1 > MAX_DEPTH {
            Err(err(
                &join(path, name),
                format!(
                    "expected and/or/not nested at most {MAX_DEPTH} deep, found deeper nesting"
                ),
            ))
        } else {
            Ok(depth + 1)
        }
    };
    let cond = |kind: Cond| {
        Expr::Cond(Condition {
            kind,
            span: Span::default(),
        })
    };
    Ok(match node {
        Node::AllOf(list) | Node::AnyOf(list) => {
            let name = if matches!(node, Node::AllOf(_)) {
                "all_of"
            } else {
                "any_of"
            };
            let d = nested(name)?;
            let lpath = join(path, &format!("{name}.rules"));
            // (more than 100 is refused by `check`, as for the text form)
            if list.rules.len() < 2 {
                return Err(err(
                    &lpath,
                    format!("expected 2 to 100 rules, found {}", list.rules.len()),
                ));
            }
            let items = list
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| from_proto_at(r, &format!("{lpath}[{i}]"), d))
                .collect::<Result<Vec<_>, _>>()?;
            if name == "all_of" {
                Expr::And(items)
            } else {
                Expr::Or(items)
            }
        }
        Node::Negate(inner) => {
            let d = nested("negate")?;
            Expr::Not(Box::new(from_proto_at(inner, &join(path, "negate"), d)?))
        }
        Node::Comparison(c) => {
            let p = join(path, "comparison");
            let left = operand_from(c.left.as_ref(), &join(&p, "left"))?;
            let op = match ComparisonOperator::try_from(c.op) {
                Ok(ComparisonOperator::Equal) => CmpOp::Eq,
                Ok(ComparisonOperator::NotEqual) => CmpOp::Ne,
                Ok(ComparisonOperator::Less) => CmpOp::Lt,
                Ok(ComparisonOperator::LessOrEqual) => CmpOp::Le,
                Ok(ComparisonOperator::Greater) => CmpOp::Gt,
                Ok(ComparisonOperator::GreaterOrEqual) => CmpOp::Ge,
                _ => {
                    return Err(err(
                        &join(&p, "op"),
                        format!(
                            "expected a comparison operator (EQUAL, NOT_EQUAL, LESS, LESS_OR_EQUAL, GREATER, GREATER_OR_EQUAL), found {}",
                            c.op
                        ),
                    ));
                }
            };
            let value = literal_from(c.value.as_ref(), &join(&p, "value"))?;
            cond(Cond::Compare { left, op, value })
        }
        Node::Between(b) => {
            let p = join(path, "between");
            cond(Cond::Between {
                operand: operand_from(b.operand.as_ref(), &join(&p, "operand"))?,
                low: literal_from(b.low.as_ref(), &join(&p, "low"))?,
                high: literal_from(b.high.as_ref(), &join(&p, "high"))?,
            })
        }
        Node::InList(l) | Node::NotInList(l) => {
            let negated = matches!(node, Node::NotInList(_));
            let p = join(path, if negated { "not_in_list" } else { "in_list" });
            let operand = operand_from(l.operand.as_ref(), &join(&p, "operand"))?;
            let values = l
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| literal_from(Some(v), &format!("{p}.values[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            cond(Cond::In {
                operand,
                values,
                negated,
            })
        }
        Node::Contains(c) => cond(Cond::Contains {
            field: c.field.clone(),
            value: c.value.clone(),
        }),
        Node::StartsWith(s) => cond(Cond::StartsWith {
            field: s.field.clone(),
            prefix: s.prefix.clone(),
        }),
        Node::Exists(e) => cond(Cond::Exists {
            field: e.field.clone(),
        }),
        Node::Time(t) => {
            use proto::time_condition::Reference;
            let p = join(path, "time");
            let op = match TimeOperator::try_from(t.op) {
                Ok(TimeOperator::Within) => TimeOp::Within,
                Ok(TimeOperator::Before) => TimeOp::Before,
                Ok(TimeOperator::After) => TimeOp::After,
                _ => {
                    return Err(err(
                        &join(&p, "op"),
                        format!("expected WITHIN, BEFORE or AFTER, found {}", t.op),
                    ));
                }
            };
            let reference = match &t.reference {
                Some(Reference::Ago(d)) => {
                    let whole = d.nanos == 0 && d.seconds > 0 && d.seconds % 3600 == 0;
                    if !whole || d.seconds / 3600 > i64::from(u32::MAX) {
                        return Err(err(
                            &join(&p, "ago"),
                            format!(
                                "expected a whole number of hours from 1 hour to 36500 days, found {}s{}",
                                d.seconds,
                                if d.nanos != 0 {
                                    format!(" and {} ns", d.nanos)
                                } else {
                                    String::new()
                                }
                            ),
                        ));
                    }
                    TimeRef::Ago {
                        hours: u64::try_from(d.seconds / 3600).unwrap_or(0),
                    }
                }
                Some(Reference::Time(ts)) => TimeRef::At(time_from(ts, &join(&p, "time"))?),
                None => {
                    return Err(err(&p, "expected a reference (ago or time), found none"));
                }
            };
            cond(Cond::Time {
                field: t.field.clone(),
                op,
                reference,
            })
        }
        Node::TopPercent(t) => {
            let p = join(path, "top_percent");
            let percent = if t.percent.is_finite() {
                format!("{}", t.percent).parse::<Decimal>().ok()
            } else {
                None
            };
            let Some(percent) = percent else {
                return Err(err(
                    &join(&p, "percent"),
                    format!(
                        "expected a percentage greater than 0 and at most 100, found {}",
                        t.percent
                    ),
                ));
            };
            cond(Cond::TopPercent {
                field: t.field.clone(),
                percent,
            })
        }
        Node::Consent(c) => cond(Cond::Consent {
            channel: c.channel.clone(),
            purpose: c.purpose.clone(),
        }),
        Node::InSegment(s) => {
            use proto::segment_condition::Segment;
            let p = join(path, "in_segment");
            match &s.segment {
                Some(Segment::SegmentId(id)) => match Uuid::parse_str(id) {
                    Ok(u) => cond(Cond::InSegment(SegmentRef::Id(u))),
                    Err(_) => {
                        return Err(err(
                            &join(&p, "segment_id"),
                            format!("expected a segment id (a UUID), found \"{id}\""),
                        ));
                    }
                },
                Some(Segment::SegmentName(n)) => match Uuid::parse_str(n) {
                    Ok(u) if n.len() == 36 => cond(Cond::InSegment(SegmentRef::Id(u))),
                    _ => cond(Cond::InSegment(SegmentRef::Name(n.clone()))),
                },
                None => {
                    return Err(err(
                        &p,
                        "expected a segment (segment_id or segment_name), found none",
                    ));
                }
            }
        }
    })
}
