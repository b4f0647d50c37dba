//! Properties of the rule language: printing then parsing gives the same
//! tree, the structured form round-trips, and no input makes the parser (or
//! the checker) panic.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use rapport_proto::rapport::segmentation::v1::FieldType;
use rapport_segmentation::rule::{
    self, AggFn, Aggregate, AttributeField, Catalog, CmpOp, Cond, Condition, Expr, Literal,
    Operand, SegmentRef, Span, TimeOp, TimeRef,
};
use rust_decimal::Decimal;
use uuid::Uuid;

fn catalog() -> Catalog {
    Catalog::new(
        vec![AttributeField {
            name: "tier".into(),
            ty: FieldType::String,
            description: String::new(),
        }],
        vec!["acme.webinar_attended".into()],
    )
}

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_]{0,8}".prop_filter("not a keyword", |s| {
        ![
            "and",
            "or",
            "not",
            "in",
            "between",
            "contains",
            "starts_with",
            "within",
            "before",
            "after",
            "top",
            "exists",
            "consent",
            "in_segment",
            "percentile",
            "sum",
            "count",
            "avg",
            "min",
            "max",
            "true",
            "false",
        ]
        .contains(&s.to_ascii_lowercase().as_str())
    })
}

fn path() -> impl Strategy<Value = String> {
    (
        ident(),
        prop::collection::vec(
            prop_oneof![ident(), Just("count".to_string()), Just("in".to_string())],
            0..3,
        ),
    )
        .prop_map(|(first, rest)| {
            let mut p = first;
            for r in rest {
                p.push('.');
                p.push_str(&r);
            }
            p
        })
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (
        -62_135_596_800i64..253_402_300_799i64,
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
    )
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap_or_default())
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<String>().prop_map(Literal::Str),
        any::<i64>().prop_map(Literal::Int),
        (any::<i64>(), 1u32..10).prop_map(|(m, s)| Literal::Dec(Decimal::new(m, s))),
        any::<bool>().prop_map(Literal::Bool),
        time().prop_map(Literal::Time),
    ]
}

fn operand() -> impl Strategy<Value = Operand> {
    let agg = prop_oneof![
        (
            prop_oneof![
                Just("purchase"),
                Just("contact"),
                Just("complaint"),
                Just("\"odd\"")
            ],
            prop::option::of(prop_oneof![Just("amount".to_string()), ident()]),
        )
            .prop_map(|(s, m)| (s.to_string(), m)),
        any::<String>().prop_map(|s| (s, None)),
    ];
    prop_oneof![
        path().prop_map(Operand::Field),
        path().prop_map(Operand::Percentile),
        (
            prop_oneof![
                Just(AggFn::Sum),
                Just(AggFn::Count),
                Just(AggFn::Avg),
                Just(AggFn::Min),
                Just(AggFn::Max)
            ],
            agg,
            1u32..5000,
        )
            .prop_map(|(function, (source, measure), window_days)| {
                // a measure is only written after a built-in (bare) source
                let (source, measure) = if source.starts_with('"') {
                    (source.trim_matches('"').to_string(), None)
                } else if ["purchase", "contact", "complaint"].contains(&source.as_str()) {
                    (source, measure)
                } else {
                    (source, None)
                };
                Operand::Aggregate(Aggregate {
                    function,
                    source,
                    measure,
                    window_days,
                })
            }),
    ]
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge)
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        (operand(), cmp_op(), literal()).prop_map(|(left, op, value)| Cond::Compare {
            left,
            op,
            value
        }),
        (operand(), literal(), literal()).prop_map(|(operand, low, high)| Cond::Between {
            operand,
            low,
            high
        }),
        (
            operand(),
            prop::collection::vec(literal(), 0..4),
            any::<bool>()
        )
            .prop_map(|(operand, values, negated)| Cond::In {
                operand,
                values,
                negated
            }),
        (path(), any::<String>()).prop_map(|(field, value)| Cond::Contains { field, value }),
        (path(), any::<String>()).prop_map(|(field, prefix)| Cond::StartsWith { field, prefix }),
        path().prop_map(|field| Cond::Exists { field }),
        (path(), 1u64..2_000_000).prop_map(|(field, hours)| Cond::Time {
            field,
            op: TimeOp::Within,
            reference: TimeRef::Ago { hours }
        }),
        (
            path(),
            prop_oneof![Just(TimeOp::Before), Just(TimeOp::After)],
            prop_oneof![
                (1u64..2_000_000).prop_map(|hours| TimeRef::Ago { hours }),
                time().prop_map(TimeRef::At)
            ]
        )
            .prop_map(|(field, op, reference)| Cond::Time {
                field,
                op,
                reference
            }),
        (path(), -1_000_000i64..1_000_000, 0u32..4).prop_map(|(field, m, s)| Cond::TopPercent {
            field,
            percent: Decimal::new(m, s)
        }),
        (ident(), ident()).prop_map(|(channel, purpose)| Cond::Consent { channel, purpose }),
        prop_oneof![
            "[a-z ]{1,12}".prop_map(SegmentRef::Name),
            any::<u128>().prop_map(|u| SegmentRef::Id(Uuid::from_u128(u)))
        ]
        .prop_map(Cond::InSegment),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = cond().prop_map(|kind| {
        Expr::Cond(Condition {
            kind,
            span: Span::default(),
        })
    });
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

const VALID: &[&str] = &[
    "purchases >= 3 and last_purchase within 90d and clv > 500 and country in [\"ES\", \"MX\"] and consent(email, marketing) and not in_segment(\"churned\")",
    "sum(purchase.amount, 180d) > 1000 # comment",
    "count(contact, 30d) between 1 and 5 or avg(survey_response.csat, 365d) >= 4",
    "count(\"acme.webinar_attended\", 90d) >= 1 and clv in top 10% and percentile(monetary) >= 80",
    "rfm.segment in [\"At Risk\", \"Cannot Lose Them\"] and p_alive < 0.5",
    "tags contains \"vip\" or attr.tier starts_with \"g\"",
    "first_purchase between 2024-01-01 and 2024-12-31T23:59:59Z",
    "last_purchase before 365d and not (exists(attr.tier) or csat != 3)",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printing_then_parsing_gives_the_same_tree(e in expr()) {
        let text = rule::print(&e, &|_| None);
        let parsed = rule::parse(&text);
        prop_assert!(parsed.is_ok(), "{text:?}: {:?}", parsed.err().map(|e| e.to_string()));
        let parsed = parsed.unwrap_or_else(|_| e.clone());
        prop_assert_eq!(&parsed, &e, "{}", text);
        prop_assert_eq!(rule::print(&parsed, &|_| None), text);
    }

    #[test]
    fn the_structured_form_round_trips(e in expr()) {
        let back = rule::from_proto(&rule::to_proto(&e));
        prop_assert!(back.is_ok(), "{:?}", back.err());
        prop_assert_eq!(back.unwrap_or_else(|_| e.clone()), e);
    }

    #[test]
    fn text_and_structured_forms_agree(e in expr()) {
        let text = rule::print(&e, &|_| None);
        if let Ok(parsed) = rule::parse(&text) {
            let via_proto = rule::from_proto(&rule::to_proto(&parsed));
            prop_assert_eq!(via_proto.ok(), Some(parsed.clone()));
            // the checker gives the same verdict on both faces
            let a = rule::check(&parsed, &catalog()).is_ok();
            let b = rule::from_proto(&rule::to_proto(&parsed)).map(|p| rule::check(&p, &catalog()).is_ok());
            prop_assert_eq!(Ok(a), b.map_err(|e| e.to_string()));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        if let Ok(e) = rule::parse(&s) {
            let _ = rule::check(&e, &catalog());
            let _ = rule::compile_sql(&e, &catalog(), Utc::now());
        }
    }

    #[test]
    fn rule_like_text_never_panics(s in "[a-z_. ()\\[\\],\"%=!<>0-9-:TZdhwy#\n]{0,80}") {
        if let Ok(e) = rule::parse(&s) {
            let _ = rule::check(&e, &catalog());
            let _ = rule::print(&e, &|_| None);
        }
    }

    #[test]
    fn mutated_rules_never_panic(
        which in 0..VALID.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..6),
    ) {
        let mut chars: Vec<char> = VALID[which].chars().collect();
        for (at, kind, c) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 => chars.insert(i, c),
                1 if i < chars.len() => { chars.remove(i); }
                _ if i < chars.len() => chars[i] = c,
                _ => chars.push(c),
            }
        }
        let text: String = chars.into_iter().collect();
        match rule::parse(&text) {
            Ok(e) => {
                let _ = rule::check(&e, &catalog());
                let printed = rule::print(&e, &|_| None);
                let again = rule::parse(&printed);
                prop_assert!(again.is_ok(), "{printed:?}");
                prop_assert_eq!(again.ok(), Some(e));
            }
            Err(err) => {
                let shown = err.to_string();
                prop_assert!(shown.starts_with("line "), "{}", shown);
                prop_assert!(shown.contains("expected") || shown.contains("unknown"), "{}", shown);
            }
        }
    }
}

#[test]
fn valid_rules_are_valid() {
    for v in VALID {
        let e = rule::parse(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        rule::check(&e, &catalog()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}

/// Hostile sizes: deep nesting, long chains and megabyte inputs are refused
/// (or parsed) with a positioned error, without exhausting the stack.
#[test]
fn extreme_rules_are_refused_without_overflowing() {
    let deep_parens = format!("{}purchases > 1{}", "(".repeat(10_000), ")".repeat(10_000));
    let deep_nots = format!("{}purchases > 1", "not ".repeat(10_000));
    let unterminated = format!("country = \"{}", "x".repeat(1 << 20));
    let huge_number = format!("purchases > {}", "9".repeat(100_000));
    let long_chain = vec!["purchases > 1"; 20_000].join(" and ");
    for text in [&deep_parens, &deep_nots, &unterminated, &huge_number] {
        let err = rule::parse(text).expect_err("refused");
        assert!(err.to_string().starts_with("line "), "{err}");
    }
    // A flat chain is not nesting: it parses, and checks or is refused
    // cleanly.
    if let Ok(e) = rule::parse(&long_chain) {
        let _ = rule::check(&e, &catalog());
    }
    // The structured form nested beyond the limit is refused too.
    let mut r = rule::to_proto(&rule::parse("purchases > 1").unwrap());
    for _ in 0..200 {
        r = rapport_proto::rapport::segmentation::v1::Rule {
            node: Some(rapport_proto::rapport::segmentation::v1::rule::Node::Negate(Box::new(r))),
        };
    }
    assert!(rule::from_proto(&r).is_err());
}
