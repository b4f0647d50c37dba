//! The recursive-descent parser of the rule text (grammar in rule.proto).

use rust_decimal::Decimal;
use uuid::Uuid;

use super::lex::{self, Tok, Token, error};
use super::{
    AggFn, Aggregate, CmpOp, Cond, Condition, Expr, Literal, Operand, Pos, RuleError, SegmentRef,
    Span, TimeOp, TimeRef,
};

/// At most this many conditions in a rule.
pub const MAX_CONDITIONS: usize = 200;
/// and/or/not nested at most this deep.
pub const MAX_DEPTH: usize = 32;
/// At most this many literals in a list.
pub const MAX_LIST: usize = 1_000;

const OPERATORS: &str =
    "=, !=, <, <=, >, >=, between, in, not in, contains, starts_with, within, before, after";
const NUMERIC_OPERATORS: &str = "=, !=, <, <=, >, >=, between, in, not in";

/// Words that begin a condition rather than a path.
const START_KEYWORDS: &[&str] = &[
    "not",
    "exists",
    "consent",
    "in_segment",
    "percentile",
    "sum",
    "count",
    "avg",
    "min",
    "max",
];
/// Words that cannot begin a path.
const OTHER_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "in",
    "between",
    "contains",
    "starts_with",
    "within",
    "before",
    "after",
    "top",
    "true",
    "false",
];

struct Parser {
    toks: Vec<Token>,
    i: usize,
    conditions: usize,
}

/// Parses rule text into a tree (not yet type-checked: see `check`).
pub fn parse(text: &str) -> Result<Expr, RuleError> {
    let toks = lex::tokenize(text)?;
    let mut p = Parser {
        toks,
        i: 0,
        conditions: 0,
    };
    let e = p.or_expr(0)?;
    let t = p.peek();
    if t.tok != Tok::End {
        let what = if t.tok == Tok::Punct(")") {
            format!(
                "\"and\", \"or\" or end of rule (this \")\" has no \"(\"), found {}",
                t.tok.describe()
            )
        } else {
            format!("\"and\", \"or\" or end of rule, found {}", t.tok.describe())
        };
        return Err(error(t.pos, format!("expected {what}")));
    }
    Ok(e)
}

fn agg_fn(word: &str) -> Option<AggFn> {
    Some(match word.to_ascii_lowercase().as_str() {
        "sum" => AggFn::Sum,
        "count" => AggFn::Count,
        "avg" => AggFn::Avg,
        "min" => AggFn::Min,
        "max" => AggFn::Max,
        _ => return None,
    })
}

fn cmp_op(p: &str) -> Option<CmpOp> {
    Some(match p {
        "=" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        ">" => CmpOp::Gt,
        ">=" => CmpOp::Ge,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with End, and `next` never moves past it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::End {
            self.i += 1;
        }
        t
    }

    fn at_kw(&self, kw: &str) -> bool {
        self.peek().tok.is_kw(kw)
    }

    fn expect_punct(&mut self, p: &'static str, context: &str) -> Result<Pos, RuleError> {
        let t = self.next();
        if t.tok == Tok::Punct(p) {
            Ok(t.pos)
        } else {
            Err(error(
                t.pos,
                format!("expected \"{p}\"{context}, found {}", t.tok.describe()),
            ))
        }
    }

    fn or_expr(&mut self, depth: usize) -> Result<Expr, RuleError> {
        let first = self.and_expr(depth)?;
        if !self.at_kw("or") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_kw("or") {
            self.next();
            items.push(self.and_expr(depth)?);
        }
        Ok(Expr::Or(items))
    }

    fn and_expr(&mut self, depth: usize) -> Result<Expr, RuleError> {
        let first = self.unary(depth)?;
        if !self.at_kw("and") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_kw("and") {
            self.next();
            items.push(self.unary(depth)?);
        }
        Ok(Expr::And(items))
    }

    fn nest(&self, depth: usize, pos: Pos) -> Result<usize, RuleError> {
        if depth + 1 > MAX_DEPTH {
            return Err(error(
                pos,
                format!(
                    "expected and/or/not nested at most {MAX_DEPTH} deep, found deeper nesting"
                ),
            ));
        }
        Ok(depth + 1)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, RuleError> {
        let t = self.peek().clone();
        if t.tok.is_kw("not") {
            let d = self.nest(depth, t.pos)?;
            self.next();
            return Ok(Expr::Not(Box::new(self.unary(d)?)));
        }
        if t.tok == Tok::Punct("(") {
            let d = self.nest(depth, t.pos)?;
            self.next();
            let inner = self.or_expr(d)?;
            let close = self.next();
            if close.tok != Tok::Punct(")") {
                return Err(error(
                    close.pos,
                    format!(
                        "expected \")\" to close the \"(\" at line {}, column {}, found {}",
                        t.pos.line,
                        t.pos.column,
                        close.tok.describe()
                    ),
                ));
            }
            return Ok(inner);
        }
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(error(
                t.pos,
                format!("expected at most {MAX_CONDITIONS} conditions, found more"),
            ));
        }
        Ok(Expr::Cond(self.condition()?))
    }

    fn path(&mut self, what: &str) -> Result<(String, Pos), RuleError> {
        let t = self.next();
        let Tok::Ident(first) = &t.tok else {
            return Err(error(
                t.pos,
                format!("expected {what}, found {}", t.tok.describe()),
            ));
        };
        if START_KEYWORDS
            .iter()
            .chain(OTHER_KEYWORDS)
            .any(|k| k.eq_ignore_ascii_case(first))
        {
            return Err(error(
                t.pos,
                format!("expected {what}, found keyword {}", t.tok.describe()),
            ));
        }
        let mut path = first.clone();
        while self.peek().tok == Tok::Punct(".") {
            self.next();
            let n = self.next();
            match n.tok {
                Tok::Ident(part) => {
                    path.push('.');
                    path.push_str(&part);
                }
                other => {
                    return Err(error(
                        n.pos,
                        format!(
                            "expected a name after \"{path}.\", found {}",
                            other.describe()
                        ),
                    ));
                }
            }
        }
        Ok((path, t.pos))
    }

    fn string(&mut self, context: &str) -> Result<(String, Pos), RuleError> {
        let t = self.next();
        match t.tok {
            Tok::Str(s) => Ok((s, t.pos)),
            other => Err(error(
                t.pos,
                format!("expected a string{context}, found {}", other.describe()),
            )),
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, Pos), RuleError> {
        let t = self.next();
        match t.tok {
            Tok::Ident(s) => Ok((s, t.pos)),
            other => Err(error(
                t.pos,
                format!("expected {what}, found {}", other.describe()),
            )),
        }
    }

    fn literal(&mut self, after: &str) -> Result<(Literal, Pos), RuleError> {
        let t = self.next();
        let lit = match &t.tok {
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Number(n) => match lex::parse_number(n) {
                Some(l) => l,
                None => {
                    return Err(error(
                        t.pos,
                        format!(
                            "expected a number of at most 28 significant digits, found number {n}"
                        ),
                    ));
                }
            },
            Tok::Time(ts, _) => Literal::Time(*ts),
            Tok::Ident(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Tok::Ident(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            other => {
                return Err(error(
                    t.pos,
                    format!(
                        "expected a literal after {after}, found {}",
                        other.describe()
                    ),
                ));
            }
        };
        Ok((lit, t.pos))
    }

    fn list(&mut self, span: &mut Span, after: &str) -> Result<Vec<Literal>, RuleError> {
        self.expect_punct("[", &format!(" to start the list after {after}"))?;
        let mut values = Vec::new();
        loop {
            if self.peek().tok == Tok::Punct("]") {
                self.next();
                return Ok(values);
            }
            let pos = self.peek().pos;
            if values.len() == MAX_LIST {
                return Err(error(
                    pos,
                    format!("expected at most {MAX_LIST} literals in a list, found more"),
                ));
            }
            let (lit, pos) = self.literal("\"[\" or \",\"")?;
            values.push(lit);
            span.items.push(pos);
            let t = self.next();
            match t.tok {
                Tok::Punct(",") => {}
                Tok::Punct("]") => return Ok(values),
                other => {
                    return Err(error(
                        t.pos,
                        format!(
                            "expected \",\" or \"]\" in the list, found {}",
                            other.describe()
                        ),
                    ));
                }
            }
        }
    }

    fn duration(&mut self, context: &str) -> Result<(u64, char, Pos), RuleError> {
        let t = self.next();
        match t.tok {
            Tok::Duration { hours, unit, .. } => Ok((hours, unit, t.pos)),
            other => Err(error(
                t.pos,
                format!(
                    "expected a duration (e.g. 90d, 12h, 2w, 1y){context}, found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn condition(&mut self) -> Result<Condition, RuleError> {
        let start = self.peek().clone();
        let mut span = Span {
            start: Some(start.pos),
            ..Span::default()
        };
        let word = match &start.tok {
            Tok::Ident(w) => Some(w.to_ascii_lowercase()),
            _ => None,
        };
        let operand = match word.as_deref() {
            Some("exists") => {
                self.next();
                self.expect_punct("(", " after \"exists\"")?;
                let (field, pos) = self.path("a field path")?;
                span.items.push(pos);
                self.expect_punct(")", " after the field of \"exists\"")?;
                return Ok(Condition {
                    kind: Cond::Exists { field },
                    span,
                });
            }
            Some("consent") => {
                self.next();
                self.expect_punct("(", " after \"consent\"")?;
                let (channel, cpos) =
                    self.ident("a channel (email, sms, phone, post, push or any)")?;
                self.expect_punct(",", " after the channel")?;
                let (purpose, ppos) =
                    self.ident("a purpose (marketing, profiling, service or research)")?;
                self.expect_punct(")", " after the purpose")?;
                span.items = vec![cpos, ppos];
                return Ok(Condition {
                    kind: Cond::Consent { channel, purpose },
                    span,
                });
            }
            Some("in_segment") => {
                self.next();
                self.expect_punct("(", " after \"in_segment\"")?;
                let (name, pos) = self.string(" (a segment name or id)")?;
                self.expect_punct(")", " after the segment")?;
                span.items.push(pos);
                let seg = match Uuid::parse_str(&name) {
                    Ok(id) if name.len() == 36 => SegmentRef::Id(id),
                    _ => SegmentRef::Name(name),
                };
                return Ok(Condition {
                    kind: Cond::InSegment(seg),
                    span,
                });
            }
            Some("percentile") => {
                self.next();
                self.expect_punct("(", " after \"percentile\"")?;
                let (field, pos) = self.path("a numeric field path")?;
                self.expect_punct(")", " after the field of \"percentile\"")?;
                span.operand = vec![start.pos, pos];
                Operand::Percentile(field)
            }
            Some(w) if agg_fn(w).is_some() => {
                self.next();
                let function = agg_fn(w).unwrap_or(AggFn::Count);
                self.expect_punct("(", &format!(" after \"{w}\""))?;
                let t = self.next();
                let (source, measure) = match t.tok {
                    Tok::Str(s) => (s, None),
                    Tok::Ident(s) => {
                        if self.peek().tok == Tok::Punct(".") {
                            self.next();
                            let (m, _) = self.ident("a measure name (e.g. amount)")?;
                            (s, Some(m))
                        } else {
                            (s, None)
                        }
                    }
                    other => {
                        return Err(error(
                            t.pos,
                            format!(
                                "expected an interaction type (e.g. purchase, purchase.amount or \"acme.custom\"), found {}",
                                other.describe()
                            ),
                        ));
                    }
                };
                self.expect_punct(",", " after the source")?;
                let (hours, unit, wpos) = self.duration(" for the window")?;
                if unit == 'h' {
                    return Err(error(
                        wpos,
                        format!(
                            "expected a window in whole days (d, w or y), found duration {hours}h"
                        ),
                    ));
                }
                self.expect_punct(")", " after the window")?;
                span.operand = vec![start.pos, t.pos, wpos];
                Operand::Aggregate(Aggregate {
                    function,
                    source,
                    measure,
                    window_days: u32::try_from(hours / 24).unwrap_or(u32::MAX),
                })
            }
            _ => {
                if !matches!(start.tok, Tok::Ident(_)) {
                    self.next();
                    return Err(error(
                        start.pos,
                        format!("expected a condition, found {}", start.tok.describe()),
                    ));
                }
                let (field, pos) = self.path("a condition")?;
                span.operand = vec![pos];
                Operand::Field(field)
            }
        };
        let is_path = matches!(operand, Operand::Field(_));
        let optok = self.next();
        span.op = Some(optok.pos);
        let opname = match &optok.tok {
            Tok::Punct(p) => p.to_string(),
            Tok::Ident(w) => w.to_ascii_lowercase(),
            _ => String::new(),
        };
        let path_only = matches!(
            opname.as_str(),
            "contains" | "starts_with" | "within" | "before" | "after"
        );
        if path_only && !is_path {
            return Err(error(
                optok.pos,
                format!(
                    "expected an operator for a number ({NUMERIC_OPERATORS}), found {}",
                    optok.tok.describe()
                ),
            ));
        }
        let field = || match &operand {
            Operand::Field(f) => f.clone(),
            _ => String::new(),
        };
        let kind = match (&optok.tok, opname.as_str()) {
            (Tok::Punct(p), _) if cmp_op(p).is_some() => {
                let op = cmp_op(p).unwrap_or(CmpOp::Eq);
                let (value, pos) = self.literal(&format!("\"{p}\""))?;
                span.items.push(pos);
                Cond::Compare {
                    left: operand,
                    op,
                    value,
                }
            }
            (Tok::Ident(_), "between") => {
                let (low, lpos) = self.literal("\"between\"")?;
                let and = self.next();
                if !and.tok.is_kw("and") {
                    return Err(error(
                        and.pos,
                        format!(
                            "expected \"and\" after the lower bound of \"between\", found {}",
                            and.tok.describe()
                        ),
                    ));
                }
                let (high, hpos) = self.literal("\"and\"")?;
                span.items = vec![lpos, hpos];
                Cond::Between { operand, low, high }
            }
            (Tok::Ident(_), "not") => {
                let t = self.next();
                if !t.tok.is_kw("in") {
                    return Err(error(
                        t.pos,
                        format!("expected \"in\" after \"not\", found {}", t.tok.describe()),
                    ));
                }
                let values = self.list(&mut span, "\"not in\"")?;
                Cond::In {
                    operand,
                    values,
                    negated: true,
                }
            }
            (Tok::Ident(_), "in") => {
                if self.at_kw("top") {
                    let top = self.next();
                    if !is_path {
                        return Err(error(
                            top.pos,
                            "expected \"[\" (only a field can be ranked with \"in top\"), found \"top\"",
                        ));
                    }
                    let t = self.next();
                    let percent = match &t.tok {
                        Tok::Number(n) => n.parse::<Decimal>().ok(),
                        _ => None,
                    };
                    let Some(percent) = percent else {
                        return Err(error(
                            t.pos,
                            format!(
                                "expected a percentage after \"top\" (e.g. 10), found {}",
                                t.tok.describe()
                            ),
                        ));
                    };
                    span.items.push(t.pos);
                    self.expect_punct("%", " after the percentage")?;
                    Cond::TopPercent {
                        field: field(),
                        percent,
                    }
                } else {
                    let values = self.list(&mut span, "\"in\"")?;
                    Cond::In {
                        operand,
                        values,
                        negated: false,
                    }
                }
            }
            (Tok::Ident(_), "contains") => {
                let (value, pos) = self.string(" after \"contains\"")?;
                span.items.push(pos);
                Cond::Contains {
                    field: field(),
                    value,
                }
            }
            (Tok::Ident(_), "starts_with") => {
                let (prefix, pos) = self.string(" after \"starts_with\"")?;
                span.items.push(pos);
                Cond::StartsWith {
                    field: field(),
                    prefix,
                }
            }
            (Tok::Ident(_), "within") => {
                let (hours, _, pos) = self.duration(" after \"within\"")?;
                span.items.push(pos);
                Cond::Time {
                    field: field(),
                    op: TimeOp::Within,
                    reference: TimeRef::Ago { hours },
                }
            }
            (Tok::Ident(_), w @ ("before" | "after")) => {
                let op = if w == "before" {
                    TimeOp::Before
                } else {
                    TimeOp::After
                };
                let t = self.next();
                let reference = match t.tok {
                    Tok::Duration { hours, .. } => TimeRef::Ago { hours },
                    Tok::Time(ts, _) => TimeRef::At(ts),
                    other => {
                        return Err(error(
                            t.pos,
                            format!(
                                "expected a duration (e.g. 90d) or a timestamp (e.g. 2025-01-31) after \"{w}\", found {}",
                                other.describe()
                            ),
                        ));
                    }
                };
                span.items.push(t.pos);
                Cond::Time {
                    field: field(),
                    op,
                    reference,
                }
            }
            _ => {
                let list = if is_path {
                    OPERATORS
                } else {
                    NUMERIC_OPERATORS
                };
                return Err(error(
                    optok.pos,
                    format!(
                        "expected an operator ({list}), found {}",
                        optok.tok.describe()
                    ),
                ));
            }
        };
        Ok(Condition { kind, span })
    }
}
