//! The canonical text of a rule (rule.proto, "CANONICAL TEXT").

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::lex::quote;
use super::{AggFn, CmpOp, Cond, Condition, Expr, Literal, Operand, SegmentRef, TimeOp, TimeRef};

/// Built-in aggregate sources, printed bare (custom types are quoted).
pub(crate) fn is_builtin_source(s: &str) -> bool {
    super::catalog::BUILTIN_SOURCES
        .iter()
        .any(|(name, _)| *name == s)
}

/// Prints the rule in canonical text.
pub fn print(expr: &Expr, names: &dyn Fn(Uuid) -> Option<String>) -> String {
    let mut out = String::new();
    expr_to(&mut out, expr, names);
    out
}

fn expr_to(out: &mut String, expr: &Expr, names: &dyn Fn(Uuid) -> Option<String>) {
    match expr {
        Expr::And(items) => {
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" and ");
                }
                let paren = matches!(e, Expr::And(_) | Expr::Or(_));
                child_to(out, e, paren, names);
            }
        }
        Expr::Or(items) => {
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" or ");
                }
                let paren = matches!(e, Expr::Or(_));
                child_to(out, e, paren, names);
            }
        }
        Expr::Not(inner) => {
            out.push_str("not ");
            let paren = matches!(**inner, Expr::And(_) | Expr::Or(_));
            child_to(out, inner, paren, names);
        }
        Expr::Cond(c) => condition_to(out, c, names),
    }
}

fn child_to(out: &mut String, e: &Expr, paren: bool, names: &dyn Fn(Uuid) -> Option<String>) {
    if paren {
        out.push('(');
        expr_to(out, e, names);
        out.push(')');
    } else {
        expr_to(out, e, names);
    }
}

/// One condition in canonical text.
pub fn print_condition(c: &Condition, names: &dyn Fn(Uuid) -> Option<String>) -> String {
    let mut out = String::new();
    condition_to(&mut out, c, names);
    out
}

pub fn literal(l: &Literal) -> String {
    match l {
        Literal::Str(s) => quote(s),
        Literal::Int(i) => i.to_string(),
        Literal::Dec(d) => d.to_string(),
        Literal::Bool(b) => b.to_string(),
        Literal::Time(t) => time(t),
    }
}

pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn duration_hours(hours: u64) -> String {
    if hours.is_multiple_of(24) {
        format!("{}d", hours / 24)
    } else {
        format!("{hours}h")
    }
}

pub fn cmp_op(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "=",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

pub fn agg_fn(f: AggFn) -> &'static str {
    match f {
        AggFn::Sum => "sum",
        AggFn::Count => "count",
        AggFn::Avg => "avg",
        AggFn::Min => "min",
        AggFn::Max => "max",
    }
}

pub fn operand(o: &Operand) -> String {
    match o {
        Operand::Field(f) => f.clone(),
        Operand::Percentile(f) => format!("percentile({f})"),
        Operand::Aggregate(a) => {
            let source = match &a.measure {
                Some(m) => format!("{}.{m}", a.source),
                None if is_builtin_source(&a.source) => a.source.clone(),
                None => quote(&a.source),
            };
            format!("{}({source}, {}d)", agg_fn(a.function), a.window_days)
        }
    }
}

fn condition_to(out: &mut String, c: &Condition, names: &dyn Fn(Uuid) -> Option<String>) {
    let s = match &c.kind {
        Cond::Compare { left, op, value } => {
            format!("{} {} {}", operand(left), cmp_op(*op), literal(value))
        }
        Cond::Between {
            operand: o,
            low,
            high,
        } => {
            format!(
                "{} between {} and {}",
                operand(o),
                literal(low),
                literal(high)
            )
        }
        Cond::In {
            operand: o,
            values,
            negated,
        } => {
            let items: Vec<String> = values.iter().map(literal).collect();
            format!(
                "{} {}in [{}]",
                operand(o),
                if *negated { "not " } else { "" },
                items.join(", ")
            )
        }
        Cond::Contains { field, value } => format!("{field} contains {}", quote(value)),
        Cond::StartsWith { field, prefix } => format!("{field} starts_with {}", quote(prefix)),
        Cond::Exists { field } => format!("exists({field})"),
        Cond::Time {
            field,
            op,
            reference,
        } => {
            let op = match op {
                TimeOp::Within => "within",
                TimeOp::Before => "before",
                TimeOp::After => "after",
            };
            let r = match reference {
                TimeRef::Ago { hours } => duration_hours(*hours),
                TimeRef::At(t) => time(t),
            };
            format!("{field} {op} {r}")
        }
        Cond::TopPercent { field, percent } => format!("{field} in top {percent}%"),
        Cond::Consent { channel, purpose } => format!("consent({channel}, {purpose})"),
        Cond::InSegment(r) => {
            let shown = match r {
                SegmentRef::Name(n) => n.clone(),
                SegmentRef::Id(id) => names(*id).unwrap_or_else(|| id.to_string()),
            };
            format!("in_segment({})", quote(&shown))
        }
    };
    out.push_str(&s);
}
