use super::*;
use chrono::TimeZone;
use rapport_proto::rapport::segmentation::v1 as proto;
use std::str::FromStr;

const EXAMPLES: &[&str] = &[
    "purchases >= 3 and last_purchase within 90d and clv > 500\n  and country in [\"ES\", \"MX\"] and consent(email, marketing)\n  and not in_segment(\"churned\")",
    "sum(purchase.amount, 180d) > 1000     # spent more than 1000 in 180 days",
    "count(complaint, 365d) = 0            # no complaint in a year",
    "count(contact, 30d) between 1 and 5",
    "avg(survey_response.csat, 365d) >= 4",
    "count(\"acme.webinar_attended\", 90d) >= 1",
    "clv in top 10%",
    "percentile(monetary) >= 80",
    "attr.tier = \"gold\"",
    "rfm.segment = \"Champions\"",
    "rfm.segment in [\"At Risk\", \"Cannot Lose Them\"] and p_alive < 0.5",
    "ladder = \"friend\" and stage = \"commitment\"",
    "tags contains \"vip\" or attr.interests contains \"golf\"",
    "first_purchase between 2024-01-01 and 2024-12-31T23:59:59Z",
    "last_purchase before 365d and not exists(attr.churn_reason)",
];

pub(crate) fn catalog() -> Catalog {
    Catalog::new(
        vec![
            AttributeField {
                name: "tier".into(),
                ty: proto::FieldType::String,
                description: String::new(),
            },
            AttributeField {
                name: "interests".into(),
                ty: proto::FieldType::StringList,
                description: String::new(),
            },
            AttributeField {
                name: "churn_reason".into(),
                ty: proto::FieldType::String,
                description: String::new(),
            },
            AttributeField {
                name: "score".into(),
                ty: proto::FieldType::Decimal,
                description: String::new(),
            },
            AttributeField {
                name: "vip".into(),
                ty: proto::FieldType::Bool,
                description: String::new(),
            },
            AttributeField {
                name: "signup".into(),
                ty: proto::FieldType::Timestamp,
                description: String::new(),
            },
        ],
        vec!["acme.webinar_attended".into()],
    )
}

fn no_names(_: Uuid) -> Option<String> {
    None
}

fn p(text: &str) -> Expr {
    match parse(text) {
        Ok(e) => e,
        Err(e) => panic!("{text:?}: {e}"),
    }
}

fn perr(text: &str) -> String {
    match parse(text) {
        Ok(e) => panic!("{text:?} parsed as {e:?}"),
        Err(e) => e.to_string(),
    }
}

fn cerr(text: &str) -> String {
    match check(&p(text), &catalog()) {
        Ok(()) => panic!("{text:?} type-checked"),
        Err(e) => e.to_string(),
    }
}

fn roundtrip(text: &str) {
    let e = p(text);
    let printed = print(&e, &no_names);
    assert_eq!(p(&printed), e, "{text:?} printed as {printed:?}");
    assert_eq!(
        print(&p(&printed), &no_names),
        printed,
        "printing is stable"
    );
    let back = from_proto(&to_proto(&e)).unwrap_or_else(|err| panic!("{text:?}: {err}"));
    assert_eq!(back, e, "{text:?} via proto");
}

#[test]
fn every_example_parses_checks_and_round_trips() {
    let cat = catalog();
    for ex in EXAMPLES {
        let e = p(ex);
        check(&e, &cat).unwrap_or_else(|err| panic!("{ex:?}: {err}"));
        roundtrip(ex);
    }
}

#[test]
fn canonical_text() {
    let cases = [
        ("purchases >= 3 AND clv > 500", None),
        (
            "purchases>=3 and(clv>500)",
            Some("purchases >= 3 and clv > 500"),
        ),
        (
            "a = 1 or b = 2 and not c = 3",
            Some("a = 1 or b = 2 and not c = 3"),
        ),
        (
            "(a = 1 or b = 2) and c = 3",
            Some("(a = 1 or b = 2) and c = 3"),
        ),
        (
            "a = 1 and (b = 2 and c = 3)",
            Some("a = 1 and (b = 2 and c = 3)"),
        ),
        (
            "(a = 1 and b = 2) and c = 3",
            Some("(a = 1 and b = 2) and c = 3"),
        ),
        ("((a = 1))", Some("a = 1")),
        ("not (a = 1 or b = 2)", Some("not (a = 1 or b = 2)")),
        ("not not a = 1", Some("not not a = 1")),
        ("last_purchase within 2w", Some("last_purchase within 14d")),
        ("last_purchase within 36h", Some("last_purchase within 36h")),
        ("last_purchase within 48h", Some("last_purchase within 2d")),
        ("count(purchase, 1y) > 0", Some("count(purchase, 365d) > 0")),
        (
            "x between 2024-01-01 and 2024-12-31T23:59:59+01:00",
            Some("x between 2024-01-01T00:00:00Z and 2024-12-31T22:59:59Z"),
        ),
        (
            "t = \"a\\\"b\\\\c\\nd\\u0001\"",
            Some("t = \"a\\\"b\\\\c\\nd\\u0001\""),
        ),
        (
            "count(\"acme.x\", 2d) >= 1",
            Some("count(\"acme.x\", 2d) >= 1"),
        ),
        (
            "count(\"purchase\", 2d) >= 1",
            Some("count(purchase, 2d) >= 1"),
        ),
        ("x in [1, 2.50, -3,]", Some("x in [1, 2.50, -3]")),
        ("x NOT IN [\"a\"]", Some("x not in [\"a\"]")),
        ("clv in TOP 0.5 %", Some("clv in top 0.5%")),
        ("attr.count = 1", Some("attr.count = 1")),
        ("b = TRUE", Some("b = true")),
        (
            "CONSENT(email, marketing)",
            Some("consent(email, marketing)"),
        ),
    ];
    for (input, want) in cases {
        let printed = print(&p(input), &no_names);
        let want = want.map_or_else(|| input.to_lowercase(), str::to_string);
        assert_eq!(printed, want, "{input:?}");
        roundtrip(input);
    }
}

#[test]
fn precedence_and_grouping() {
    let e = p("a = 1 or b = 2 and not c = 3");
    let Expr::Or(items) = &e else { panic!("{e:?}") };
    assert_eq!(items.len(), 2);
    let Expr::And(inner) = &items[1] else {
        panic!("{e:?}")
    };
    assert!(matches!(inner[1], Expr::Not(_)));
    // a and b and c is one node; an author's same-kind group is its own node
    assert!(matches!(p("a = 1 and b = 2 and c = 3"), Expr::And(ref v) if v.len() == 3));
    assert!(
        matches!(p("a = 1 and (b = 2 and c = 3)"), Expr::And(ref v) if v.len() == 2 && matches!(v[1], Expr::And(_)))
    );
    // between's `and`
    assert!(matches!(p("x between 1 and 5 and y = 2"), Expr::And(ref v) if v.len() == 2));
}

#[test]
fn segment_references_print_current_names() {
    let id = Uuid::from_u128(7);
    let mut e = p("not in_segment(\"churned\")");
    assert_eq!(segment_refs(&e), vec![SegmentRef::Name("churned".into())]);
    resolve_segments(&mut e, &|n| (n == "churned").then_some(id)).unwrap();
    assert_eq!(segment_refs(&e), vec![SegmentRef::Id(id)]);
    let names = |u: Uuid| (u == id).then(|| "lapsed".to_string());
    assert_eq!(print(&e, &names), "not in_segment(\"lapsed\")");
    assert_eq!(print(&e, &no_names), format!("not in_segment(\"{id}\")"));
    assert_eq!(p(&print(&e, &no_names)), e);
    // An id is checked too: one the resolver does not know is refused.
    let mut e = p(&format!("in_segment(\"{}\")", Uuid::from_u128(8)));
    assert!(resolve_segments(&mut e, &|n| (n == id.to_string()).then_some(id)).is_err());
    let mut e = p(&format!("in_segment(\"{id}\")"));
    resolve_segments(&mut e, &|n| (n == id.to_string()).then_some(id)).unwrap();
    assert_eq!(segment_refs(&e), vec![SegmentRef::Id(id)]);
    let mut e = p("a = 1 and in_segment(\"nope\")");
    let err = resolve_segments(&mut e, &|_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 22: unknown segment \"nope\": expected the name or id of an existing segment"
    );
    let mut e = from_proto(&to_proto(&p("a = 1 and in_segment(\"nope\")"))).unwrap();
    let err = resolve_segments(&mut e, &|_| None).unwrap_err();
    assert_eq!(
        err.field_violation("rule"),
        (
            "rule.all_of.rules[1].in_segment.segment_name".to_string(),
            "unknown segment \"nope\": expected the name or id of an existing segment".to_string()
        )
    );
}

#[test]
fn syntax_errors_have_positions_and_shapes() {
    assert_eq!(
        perr("clv > 5 and purchases >= and x = 1"),
        "line 1, column 26: expected a literal after \">=\", found \"and\""
    );
    assert_eq!(
        perr("clv > 5\n  and"),
        "line 2, column 6: expected a condition, found end of rule"
    );
    assert_eq!(
        perr("clv >"),
        "line 1, column 6: expected a literal after \">\", found end of rule"
    );
    assert_eq!(
        perr("clv 5"),
        "line 1, column 5: expected an operator (=, !=, <, <=, >, >=, between, in, not in, contains, starts_with, within, before, after), found number 5"
    );
    assert_eq!(
        perr("(clv > 5"),
        "line 1, column 9: expected \")\" to close the \"(\" at line 1, column 1, found end of rule"
    );
    assert_eq!(
        perr("clv > 5)"),
        "line 1, column 8: expected \"and\", \"or\" or end of rule (this \")\" has no \"(\"), found \")\""
    );
    assert_eq!(
        perr("count(purchase, 36h) > 1"),
        "line 1, column 17: expected a window in whole days (d, w or y), found duration 36h"
    );
    assert_eq!(
        perr("sum(purchase.amount, 1d) contains \"x\""),
        "line 1, column 26: expected an operator for a number (=, !=, <, <=, >, >=, between, in, not in), found \"contains\""
    );
    assert_eq!(
        perr("x = \"abc"),
        "line 1, column 9: expected a closing '\"' to end the string, found end of rule"
    );
    assert_eq!(
        perr("and = 1"),
        "line 1, column 1: expected a condition, found keyword \"and\""
    );
    assert_eq!(
        perr("é = 1"),
        "line 1, column 1: expected a field, operator or literal, found \"é\""
    );
    assert!(perr("x between 1 or 2").contains("expected \"and\" after the lower bound"));
    assert!(perr("last_purchase within 2025-01-01").contains("expected a duration"));
    assert!(perr("x in [1 2]").contains("expected \",\" or \"]\""));
    assert!(perr("consent(email)").contains("expected \",\""));
    p("x = 1 # only a comment\n# another");
}

#[test]
fn limits() {
    let many = vec!["x = 1"; 201].join(" or ");
    assert!(perr(&many).contains("expected at most 200 conditions"));
    let text = format!("{}x = 1{}", "(".repeat(33), ")".repeat(33));
    assert!(perr(&text).contains("nested at most 32 deep"));
    let text = format!("{}x = 1{}", "(".repeat(32), ")".repeat(32));
    p(&text);
    let list: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    assert!(perr(&format!("x in [{}]", list.join(","))).contains("at most 1000 literals"));
    assert!(perr(&format!("x = {}", "1".repeat(40))).contains("at most 28 significant digits"));
    let long = format!(
        "x = \"{}\" and {}",
        "a".repeat(10),
        "y = 1 and ".repeat(1100)
    );
    assert!(perr(&long).contains("expected a rule of at most 10000 characters"));
    // deep structured nesting
    let mut r = to_proto(&p("x = 1"));
    for _ in 0..33 {
        r = proto::Rule {
            node: Some(proto::rule::Node::Negate(Box::new(r))),
        };
    }
    assert!(
        from_proto(&r)
            .unwrap_err()
            .message
            .contains("nested at most 32 deep")
    );
    // and/or of more than 100 rules cannot be stored
    let wide = vec!["purchases = 1"; 101].join(" and ");
    assert!(cerr(&wide).contains("expected 2 to 100 rules"));
}

#[test]
fn type_errors() {
    assert_eq!(
        cerr("clv = \"500\""),
        "line 1, column 7: expected a number for \"clv\" (MONEY), found string \"500\""
    );
    assert_eq!(
        cerr("ladder = \"Friend\""),
        "line 1, column 10: expected one of \"stranger\", \"acquaintance\", \"friend\", \"partner\" for \"ladder\", found \"Friend\""
    );
    assert_eq!(
        cerr("purchases > 1 and\n    purchase > 1"),
        "line 2, column 5: unknown field \"purchase\": expected a field listed by ListFields (did you mean \"purchases\"?)"
    );
    assert!(cerr("zzzzzz = 1").ends_with("expected a field listed by ListFields"));
    assert!(cerr("country > \"ES\"").contains("expected one of =, !=, in, not in, contains, starts_with, exists for \"country\" (STRING), found \">\""));
    assert!(cerr("last_purchase = 2024-01-01").contains("(TIMESTAMP), found \"=\""));
    assert!(cerr("tags = \"vip\"").contains("(STRING_LIST)"));
    assert!(cerr("attr.vip = 1").contains("expected true or false"));
    assert!(cerr("first_purchase between 1 and 2").contains("expected a timestamp"));
    assert!(
        cerr("purchases between 5 and 1")
            .contains("expected an upper bound not lower than 5, found 1")
    );
    assert!(cerr("first_purchase between 2025-01-01 and 2024-01-01").contains("upper bound"));
    assert!(cerr("last_purchase within 0h").contains("1h to 36500d"));
    assert!(cerr("last_purchase before 36501d").contains("1h to 36500d"));
    p("last_purchase before 36500d");
    check(
        &p("last_purchase before 36500d and last_purchase after 1h"),
        &catalog(),
    )
    .unwrap();
    assert!(cerr("count(purchase, 3651d) > 1").contains("1d to 3650d"));
    check(
        &p("count(purchase, 3650d) > 1 and count(purchase, 1d) > 1"),
        &catalog(),
    )
    .unwrap();
    assert!(cerr("count(purchase.amount, 3d) > 1").contains("without a measure"));
    assert!(cerr("sum(purchase, 3d) > 1").contains("with a measure"));
    assert!(cerr("sum(complaint.amount, 3d) > 1").contains("it can only be counted"));
    assert!(cerr("sum(purchase.csat, 3d) > 1").contains("one of \"amount\", \"margin\""));
    assert!(cerr("count(\"acme.other\", 3d) > 1").contains("unknown interaction type"));
    assert!(cerr("count(purchases, 3d) > 1").contains("did you mean \"purchase\"?"));
    assert!(cerr("country in top 10%").contains("expected a numeric field"));
    assert!(cerr("clv in top 0%").contains("greater than 0 and at most 100"));
    assert!(cerr("clv in top 100.5%").contains("greater than 0 and at most 100"));
    check(&p("clv in top 100%"), &catalog()).unwrap();
    assert!(cerr("percentile(country) > 1").contains("expected a numeric field"));
    assert!(cerr("consent(mail, marketing)").contains("expected a channel"));
    assert!(cerr("consent(email, spam)").contains("expected a purpose"));
    assert!(cerr("tags contains \"\"").contains("an empty string"));
    assert!(cerr("purchases in []").contains("expected 1 to 1000 literals"));
    assert!(cerr("p_alive starts_with \"0\"").contains("(DECIMAL)"));
    assert!(
        cerr("rfm.segment in [\"Champions\", \"Lost Causes\"]").contains("found \"Lost Causes\"")
    );
    // structured rules get node paths
    let e = from_proto(&to_proto(&p(
        "purchases > 1 and (clv > 2 or ladder = \"x\")",
    )))
    .unwrap();
    let err = check(&e, &catalog()).unwrap_err();
    assert_eq!(
        err.field_violation("segment.rule").0,
        "segment.rule.all_of.rules[1].any_of.rules[1].comparison.value"
    );
}

#[test]
fn proto_errors_name_the_node() {
    let mut r = to_proto(&p("purchases > 1 and clv > 2 and x = 3"));
    if let Some(proto::rule::Node::AllOf(l)) = &mut r.node
        && let Some(proto::rule::Node::Comparison(c)) = &mut l.rules[2].node
    {
        c.value = Some(proto::ScalarValue {
            kind: Some(proto::scalar_value::Kind::DecimalValue("1e5".into())),
        });
    }
    let err = from_proto(&r).unwrap_err();
    assert_eq!(
        err.field_violation("rule").0,
        "rule.all_of.rules[2].comparison.value.decimal_value"
    );
    let err = from_proto(&proto::Rule { node: None }).unwrap_err();
    assert_eq!(err.field_violation("rule").0, "rule");
    let one = proto::Rule {
        node: Some(proto::rule::Node::AnyOf(proto::RuleList {
            rules: vec![to_proto(&p("x = 1"))],
        })),
    };
    assert_eq!(
        from_proto(&one).unwrap_err().field_violation("r").0,
        "r.any_of.rules"
    );
    // decimal text without a fraction is the integer of the text form
    let mut r = to_proto(&p("clv > 1.0"));
    if let Some(proto::rule::Node::Comparison(c)) = &mut r.node {
        c.value = Some(proto::ScalarValue {
            kind: Some(proto::scalar_value::Kind::DecimalValue("500".into())),
        });
    }
    assert_eq!(from_proto(&r).unwrap(), p("clv > 500"));
    // durations must be whole hours
    let mut r = to_proto(&p("last_purchase within 1h"));
    if let Some(proto::rule::Node::Time(t)) = &mut r.node {
        t.reference = Some(proto::time_condition::Reference::Ago(
            prost_types::Duration {
                seconds: 90,
                nanos: 0,
            },
        ));
    }
    assert_eq!(
        from_proto(&r).unwrap_err().field_violation("rule").0,
        "rule.time.ago"
    );
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

fn holds(rule: &str, facts: &Facts) -> bool {
    let e = p(rule);
    check(&e, &catalog()).unwrap_or_else(|err| panic!("{rule}: {err}"));
    let a = evaluate(&e, facts, now());
    let x = explain(&e, facts, now(), &no_names);
    assert_eq!(x.held, a, "explain agrees for {rule}");
    a
}

fn facts() -> Facts {
    let mut f = Facts::default();
    let v = &mut f.values;
    v.insert("purchases".into(), Value::Int(4));
    v.insert(
        "clv".into(),
        Value::Decimal(Decimal::from_str("500.00").unwrap()),
    );
    v.insert("country".into(), Value::Text("ES".into()));
    v.insert("tags".into(), Value::List(vec!["vip".into(), "b2b".into()]));
    v.insert("ladder".into(), Value::Text("friend".into()));
    v.insert(
        "last_purchase".into(),
        Value::Time(t("2025-05-01T00:00:00Z")),
    );
    v.insert("attr.vip".into(), Value::Bool(true));
    v.insert("attr.tier".into(), Value::Text("gold-plus".into()));
    f.events = vec![
        Event {
            kind: "purchase".into(),
            occur_time: t("2025-05-30T00:00:00Z"),
            amount: Some(Decimal::from(10)),
            margin: None,
            csat: None,
            nps: None,
        },
        Event {
            kind: "purchase".into(),
            occur_time: t("2025-05-20T00:00:00Z"),
            amount: Some(Decimal::from(20)),
            margin: None,
            csat: None,
            nps: None,
        },
        Event {
            kind: "purchase".into(),
            occur_time: t("2025-01-01T00:00:00Z"),
            amount: Some(Decimal::from(1000)),
            margin: None,
            csat: None,
            nps: None,
        },
        Event {
            kind: "call".into(),
            occur_time: t("2025-05-31T00:00:00Z"),
            amount: None,
            margin: None,
            csat: None,
            nps: None,
        },
        Event {
            kind: "survey_response".into(),
            occur_time: t("2025-05-31T00:00:00Z"),
            amount: None,
            margin: None,
            csat: Some(4),
            nps: None,
        },
        Event {
            kind: "survey_response".into(),
            occur_time: t("2025-05-29T00:00:00Z"),
            amount: None,
            margin: None,
            csat: Some(5),
            nps: None,
        },
    ];
    f.ranks.insert(
        "clv".into(),
        RankFacts {
            greater: 9,
            smaller: 90,
            total: 100,
        },
    );
    f
}

#[test]
fn evaluator_semantics() {
    let f = facts();
    let yes = [
        "purchases >= 3",
        "purchases = 4.0",
        "purchases != 3",
        "clv = 500",
        "clv between 500 and 500.00",
        "purchases in [1, 4]",
        "purchases not in [1, 2]",
        "country = \"ES\"",
        "country in [\"ES\", \"MX\"]",
        "country starts_with \"E\"",
        "country contains \"S\"",
        "tags contains \"vip\"",
        "attr.tier contains \"-\"",
        "attr.vip = true",
        "exists(tags)",
        "exists(clv)",
        "last_purchase within 32d",
        "last_purchase before 30d",
        "last_purchase after 32d",
        "last_purchase after 2025-04-30",
        "last_purchase between 2025-05-01 and 2025-05-01",
        "count(purchase, 30d) = 2",
        "count(contact, 30d) = 1",
        "count(campaign_response, 30d) = 0",
        "sum(purchase.amount, 30d) = 30",
        "sum(purchase.margin, 30d) = 0",
        "avg(purchase.amount, 30d) = 15",
        "min(purchase.amount, 365d) = 10",
        "max(purchase.amount, 365d) = 1000",
        "avg(survey_response.csat, 30d) = 4.5",
        "clv in top 10%",
        "percentile(clv) > 90.9",
        "percentile(clv) < 91",
        "not (nps >= 7)",
        "not exists(nps)",
        "consent(email, service)",
        "not consent(email, marketing)",
        "ladder = \"friend\"",
        "ladder != \"partner\"",
    ];
    for r in yes {
        assert!(holds(r, &f), "{r} should hold");
    }
    let no = [
        "purchases > 4",
        "nps < 7",
        "nps != 7",
        "nps not in [1]",
        "csat = 1",
        "exists(attr.churn_reason)",
        "attr.churn_reason != \"x\"",
        "first_purchase before 1d",
        "last_purchase within 30d",
        "last_purchase after 2025-05-01",
        "avg(purchase.margin, 30d) >= 0",
        "min(return.amount, 30d) >= 0",
        "clv in top 9%",
        "percentile(clv) = 90",
        "percentile(p_alive) >= 0",
        "p_alive in top 100%",
        "in_segment(\"00000000-0000-0000-0000-000000000007\")",
        "tags contains \"VIP\"",
        "count(purchase, 30d) > 2",
    ];
    for r in no {
        assert!(!holds(r, &f), "{r} should not hold");
    }
}

#[test]
fn ranks_ties_and_single_customer() {
    let mut f = Facts::default();
    f.values.insert("clv".into(), Value::Int(5));
    // 3 customers share the top value out of 10: all are in the top 10% (cut-off 1)
    f.ranks.insert(
        "clv".into(),
        RankFacts {
            greater: 0,
            smaller: 7,
            total: 10,
        },
    );
    assert!(holds("clv in top 10%", &f));
    assert!(!holds("percentile(clv) = 77.7777777777777777777777777", &f));
    assert!(holds("percentile(clv) > 77.7", &f));
    assert!(holds("percentile(clv) < 77.8", &f));
    f.ranks.insert(
        "clv".into(),
        RankFacts {
            greater: 1,
            smaller: 8,
            total: 10,
        },
    );
    assert!(!holds("clv in top 10%", &f));
    assert!(holds("clv in top 11%", &f)); // ceil(1.1) = 2
    f.ranks.insert(
        "clv".into(),
        RankFacts {
            greater: 0,
            smaller: 0,
            total: 1,
        },
    );
    assert!(holds("percentile(clv) = 0", &f));
    assert!(holds("percentile(clv) <= 0", &f));
    assert!(holds("clv in top 1%", &f));
}

#[test]
fn consent_semantics() {
    let mut f = Facts::default();
    let c = &mut f.consents;
    c.insert(
        ("email".into(), "marketing".into()),
        (true, t("2025-01-01T00:00:00Z")),
    );
    c.insert(
        ("any".into(), "marketing".into()),
        (false, t("2025-02-01T00:00:00Z")),
    );
    c.insert(
        ("sms".into(), "marketing".into()),
        (true, t("2025-03-01T00:00:00Z")),
    );
    c.insert(
        ("any".into(), "service".into()),
        (false, t("2025-03-01T00:00:00Z")),
    );
    assert!(!holds("consent(email, marketing)", &f)); // any is later
    assert!(holds("consent(sms, marketing)", &f)); // own is later
    assert!(!holds("consent(any, marketing)", &f));
    assert!(!holds("consent(push, marketing)", &f)); // any decides
    assert!(!holds("consent(phone, service)", &f));
    assert!(holds("consent(phone, service)", &Facts::default()));
    assert!(!holds("consent(phone, research)", &Facts::default()));
}

#[test]
fn explanations() {
    let f = facts();
    let e = p("clv in top 10% and not (nps >= 7) and count(purchase, 30d) >= 3");
    let x = explain(&e, &f, now(), &no_names);
    assert!(!x.held);
    assert_eq!(x.kind, proto::ExplanationNodeKind::AllOf as i32);
    assert_eq!(x.children.len(), 3);
    assert_eq!(x.children[0].condition, "clv in top 10%");
    assert_eq!(
        x.children[0].detail,
        "rank 10 of 100 (cut-off for top 10%: 10)"
    );
    assert!(x.children[0].held);
    assert_eq!(x.children[1].kind, proto::ExplanationNodeKind::Not as i32);
    assert!(x.children[1].held);
    assert_eq!(x.children[1].children[0].detail, "no value");
    assert!(x.children[1].children[0].customer_values.is_empty());
    let agg = &x.children[2];
    assert!(!agg.held);
    assert_eq!(
        agg.customer_values,
        vec![proto::ScalarValue {
            kind: Some(proto::scalar_value::Kind::IntegerValue(2))
        }]
    );
    assert_eq!(agg.detail, "2 purchase interactions in the last 30d");
}

#[test]
fn ranked_fields_are_listed_once() {
    let e = p("clv in top 5% or percentile(clv) > 3 or percentile(monetary) in [1] or x = 1");
    assert_eq!(
        ranked_fields(&e),
        vec!["clv".to_string(), "monetary".to_string()]
    );
}

#[test]
fn catalogue_lists_builtins_attributes_and_sources() {
    let cat = catalog();
    let fields = cat.fields();
    assert_eq!(fields.len(), 32 + 6);
    let seg = fields.iter().find(|f| f.name == "rfm.segment").unwrap();
    assert_eq!(seg.allowed_values.len(), 11);
    assert!(
        fields
            .iter()
            .any(|f| f.name == "attr.tier" && f.r#type == proto::FieldType::String as i32)
    );
    let sources = cat.aggregate_sources();
    let purchase = sources
        .iter()
        .find(|s| s.interaction_type == "purchase")
        .unwrap();
    assert_eq!(purchase.measures.len(), 2);
    assert!(
        sources
            .iter()
            .any(|s| s.interaction_type == "acme.webinar_attended" && s.custom)
    );
}

#[test]
fn facts_from_a_features_row() {
    let row = serde_json::json!({
        "customer_id": "00000000-0000-0000-0000-000000000001",
        "purchases": 3, "clv": "12.50", "monetary": 7.25, "country": "ES", "tags": ["a"],
        "last_purchase": "2025-01-01T10:00:00.5+00:00", "csat": null,
        "attributes": {"tier": "gold", "score": "1.5", "vip": true, "signup": "2024-01-01T00:00:00Z", "interests": ["golf"]},
        "consents": {"email:marketing": {"granted": true, "time": "2025-01-01T00:00:00Z"}}
    });
    let v = facts_from_row(&row, &catalog());
    assert_eq!(v.get("purchases"), Some(&Value::Int(3)));
    assert_eq!(
        v.get("clv"),
        Some(&Value::Decimal(Decimal::from_str("12.50").unwrap()))
    );
    assert_eq!(
        v.get("monetary"),
        Some(&Value::Decimal(Decimal::from_str("7.25").unwrap()))
    );
    assert_eq!(
        v.get("attr.score"),
        Some(&Value::Decimal(Decimal::from_str("1.5").unwrap()))
    );
    assert_eq!(
        v.get("attr.interests"),
        Some(&Value::List(vec!["golf".into()]))
    );
    assert!(!v.contains_key("csat"));
    assert!(matches!(v.get("last_purchase"), Some(Value::Time(_))));
    assert!(matches!(v.get("attr.signup"), Some(Value::Time(_))));
    let c = consents_from_row(&row);
    assert_eq!(c.len(), 1);
}

#[test]
fn sql_binds_every_value() {
    let e = p("country = \"ES'; DROP TABLE x; --\" and attr.tier = \"a\" and clv in top 10%");
    let sql = compile_sql(&e, &catalog(), now());
    assert!(!sql.condition.contains("DROP"));
    assert!(!sql.condition.contains("tier"));
    assert!(
        sql.params
            .contains(&SqlParam::Text("ES'; DROP TABLE x; --".into()))
    );
    // parameters are numbered from $2
    assert!(sql.condition.contains("$2::"));
    assert!(
        !sql.condition
            .contains(&format!("${}", sql.params.len() + 2))
    );
}
