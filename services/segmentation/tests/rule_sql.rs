//! The SQL compiler agrees with the in-memory evaluator: for many rules, the
//! customers selected by `compile_sql` over the contract tables are exactly
//! those for which `evaluate` holds.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rapport_proto::rapport::segmentation::v1::FieldType;
use rapport_segmentation::rule::{
    self, AttributeField, Catalog, Event, FEATURES_ROW_SQL, Facts, RankFacts, SqlParam, Value,
};
use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const DDL: &str = r#"
CREATE SCHEMA rt;
SET search_path TO rt;
CREATE TABLE features (
  tenant_id   uuid NOT NULL,
  customer_id uuid NOT NULL,
  kind text, country text, tags text[] NOT NULL DEFAULT '{}', profile_stage text,
  attributes jsonb NOT NULL DEFAULT '{}', consents jsonb NOT NULL DEFAULT '{}',
  first_purchase timestamptz, last_purchase timestamptz, purchases bigint NOT NULL DEFAULT 0,
  monetary numeric, avg_order_value numeric, contacts bigint NOT NULL DEFAULT 0,
  last_contact timestamptz, open_service_requests bigint NOT NULL DEFAULT 0,
  complaints bigint NOT NULL DEFAULT 0, open_complaints bigint NOT NULL DEFAULT 0,
  csat integer, nps integer, campaign_response_rate numeric,
  clv numeric, p_alive numeric, expected_purchases numeric, value_tier text,
  net_clv numeric, cost_to_serve numeric, net_profit numeric, profit_decile smallint,
  rfm_r integer, rfm_f integer, rfm_m integer, rfm_fm integer, rfm_segment text,
  ladder text, stage text, update_time timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, customer_id)
);
CREATE TABLE events (
  tenant_id uuid NOT NULL, customer_id uuid NOT NULL, interaction_id uuid NOT NULL,
  type text NOT NULL, occur_time timestamptz NOT NULL, amount numeric, margin numeric,
  csat integer, nps integer,
  PRIMARY KEY (tenant_id, customer_id, interaction_id)
);
CREATE INDEX events_by_type ON events (tenant_id, customer_id, type, occur_time);
CREATE TABLE memberships (
  tenant_id uuid NOT NULL, segment_id uuid NOT NULL, customer_id uuid NOT NULL,
  enter_time timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, segment_id, customer_id)
);
CREATE TABLE feature_counts (
  tenant_id uuid PRIMARY KEY, clv_n bigint NOT NULL DEFAULT 0, monetary_n bigint NOT NULL DEFAULT 0
);
"#;

/// Fills `feature_counts` from the features (the service keeps it with
/// triggers, checked by the projection property test).
async fn count_values(conn: &mut PgConnection) {
    sqlx::raw_sql(
        "INSERT INTO feature_counts (tenant_id, clv_n, monetary_n)
         SELECT tenant_id, count(clv), count(monetary) FROM features GROUP BY tenant_id",
    )
    .execute(conn)
    .await
    .unwrap();
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

fn catalog() -> Catalog {
    let attr = |name: &str, ty| AttributeField {
        name: name.into(),
        ty,
        description: String::new(),
    };
    Catalog::new(
        vec![
            attr("tier", FieldType::String),
            attr("score", FieldType::Decimal),
            attr("vip", FieldType::Bool),
            attr("signup", FieldType::Timestamp),
            attr("interests", FieldType::StringList),
        ],
        vec!["acme.webinar_attended".into()],
    )
}

const SEG_A: Uuid = Uuid::from_u128(0xA);
const SEG_B: Uuid = Uuid::from_u128(0xB);

fn dec(rng: &mut Rng, max_cents: u64) -> Decimal {
    Decimal::new(rng.below(max_cents) as i64, 2)
}

async fn populate(conn: &mut PgConnection, tenant: Uuid, n: usize, rng: &mut Rng) {
    let types = [
        "purchase",
        "return",
        "call",
        "email",
        "complaint",
        "service_request",
        "campaign_opened",
        "campaign_clicked",
        "campaign_sent",
        "survey_response",
        "acme.webinar_attended",
    ];
    let channels = ["email", "sms", "phone", "any"];
    let purposes = ["marketing", "service", "research"];
    for i in 0..n {
        let id = Uuid::from_u128(0x1000 + i as u128);
        let maybe = |rng: &mut Rng, p: u64| rng.chance(p);
        let time = |rng: &mut Rng| now() - Duration::hours(rng.below(24 * 500) as i64);
        let mut attrs = serde_json::Map::new();
        if maybe(rng, 60) {
            attrs.insert(
                "tier".into(),
                rng.pick(&["gold", "silver", "gold-plus", ""]).into(),
            );
        }
        if maybe(rng, 60) {
            let v = match rng.below(4) {
                0 => serde_json::json!("abc"),
                1 => serde_json::json!(rng.below(10)),
                _ => serde_json::json!(dec(rng, 1000).to_string()),
            };
            attrs.insert("score".into(), v);
        }
        if maybe(rng, 60) {
            let v = if rng.chance(20) {
                serde_json::json!("yes")
            } else {
                serde_json::json!(rng.chance(50))
            };
            attrs.insert("vip".into(), v);
        }
        if maybe(rng, 50) {
            attrs.insert("signup".into(), time(rng).to_rfc3339().into());
        }
        if maybe(rng, 50) {
            let k = rng.below(3);
            let items: Vec<&str> = (0..k)
                .map(|_| rng.pick(&["golf", "tennis", "wine"]))
                .collect();
            attrs.insert("interests".into(), serde_json::json!(items));
        }
        let mut consents = serde_json::Map::new();
        for _ in 0..rng.below(4) {
            let key = format!("{}:{}", rng.pick(&channels), rng.pick(&purposes));
            // few distinct times, so that equal times occur
            let t = now() - Duration::days(rng.below(3) as i64);
            consents.insert(
                key,
                serde_json::json!({"granted": rng.chance(50), "time": t.to_rfc3339()}),
            );
        }
        let tags: Vec<&str> = (0..rng.below(3))
            .map(|_| rng.pick(&["vip", "b2b", "new"]))
            .collect();
        let opt_dec = |rng: &mut Rng, p: u64, max: u64| rng.chance(p).then(|| dec(rng, max));
        let opt_time = |rng: &mut Rng, p: u64| rng.chance(p).then(|| time(rng));
        let opt_int =
            |rng: &mut Rng, p: u64, max: u64| rng.chance(p).then(|| rng.below(max) as i32);
        let kind = rng
            .chance(90)
            .then(|| rng.pick(&["person", "organization"]));
        let country = rng.chance(80).then(|| rng.pick(&["ES", "MX", "DE", "US"]));
        let ladder = rng
            .chance(90)
            .then(|| rng.pick(&["stranger", "acquaintance", "friend", "partner"]));
        let seg = rng
            .chance(70)
            .then(|| rng.pick(&["Champions", "At Risk", "Lost", "Cannot Lose Them"]));
        let stage = rng
            .chance(50)
            .then(|| rng.pick(&["awareness", "commitment", "dissolution"]));
        let first_purchase = opt_time(rng, 70);
        let last_purchase = opt_time(rng, 70);
        let purchases = rng.below(8) as i64;
        // few distinct CLVs, so that ties occur
        let clv = rng
            .chance(85)
            .then(|| Decimal::new(rng.below(40) as i64 * 2500, 2));
        let monetary = opt_dec(rng, 70, 100_000);
        let p_alive = opt_dec(rng, 80, 101);
        let csat = opt_int(rng, 60, 6);
        let nps = opt_int(rng, 60, 11);
        let rfm_r = opt_int(rng, 70, 6);
        let last_contact = opt_time(rng, 50);
        // Net figures can be negative; few distinct values, so ties occur.
        let net_clv = rng
            .chance(70)
            .then(|| Decimal::new(rng.below(40) as i64 * 2500 - 30_000, 2));
        let cost_to_serve = opt_dec(rng, 70, 50_000);
        let net_profit = rng
            .chance(70)
            .then(|| Decimal::new(rng.below(2_000) as i64 - 1_000, 1));
        let profit_decile = rng.chance(70).then(|| rng.below(10) as i16 + 1);
        sqlx::query(
            "INSERT INTO features (tenant_id, customer_id, kind, country, tags, attributes, consents, \
             first_purchase, last_purchase, purchases, monetary, clv, p_alive, csat, nps, rfm_r, \
             rfm_segment, ladder, stage, last_contact, net_clv, cost_to_serve, net_profit, \
             profit_decile) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,\
                     $21,$22,$23,$24)",
        )
        .bind(tenant)
        .bind(id)
        .bind(kind)
        .bind(country)
        .bind(tags)
        .bind(serde_json::Value::Object(attrs))
        .bind(serde_json::Value::Object(consents))
        .bind(first_purchase)
        .bind(last_purchase)
        .bind(purchases)
        .bind(monetary)
        .bind(clv)
        .bind(p_alive)
        .bind(csat)
        .bind(nps)
        .bind(rfm_r)
        .bind(seg)
        .bind(ladder)
        .bind(stage)
        .bind(last_contact)
        .bind(net_clv)
        .bind(cost_to_serve)
        .bind(net_profit)
        .bind(profit_decile)
        .execute(&mut *conn)
        .await
        .unwrap();
        for _ in 0..rng.below(9) {
            let ty = rng.pick(&types);
            let occur = match rng.below(6) {
                // exactly on the window edges
                0 => now() - Duration::days(30),
                1 => now(),
                2 => now() + Duration::hours(1),
                _ => now() - Duration::hours(rng.below(24 * 400) as i64),
            };
            let amount = matches!(ty, "purchase" | "return")
                .then(|| rng.chance(85).then(|| dec(rng, 20_000)))
                .flatten();
            let margin = (ty == "purchase")
                .then(|| rng.chance(50).then(|| dec(rng, 5_000)))
                .flatten();
            let csat = (ty == "survey_response").then(|| rng.below(5) as i32 + 1);
            let nps = (ty == "survey_response" && rng.chance(50)).then(|| rng.below(11) as i32);
            sqlx::query(
                "INSERT INTO events (tenant_id, customer_id, interaction_id, type, occur_time, amount, margin, csat, nps) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            )
            .bind(tenant)
            .bind(id)
            .bind(Uuid::new_v4())
            .bind(ty)
            .bind(occur)
            .bind(amount)
            .bind(margin)
            .bind(csat)
            .bind(nps)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        for seg in [SEG_A, SEG_B] {
            if rng.chance(30) {
                sqlx::query(
                    "INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time) VALUES ($1,$2,$3,$4)",
                )
                .bind(tenant)
                .bind(seg)
                .bind(id)
                .bind(now())
                .execute(&mut *conn)
                .await
                .unwrap();
            }
        }
    }
}

type Row = (Uuid, serde_json::Value);

async fn load_facts(
    conn: &mut PgConnection,
    tenant: Uuid,
    catalog: &Catalog,
) -> HashMap<Uuid, Facts> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT f.customer_id, {FEATURES_ROW_SQL} FROM features f WHERE f.tenant_id = $1"
    )))
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut out = HashMap::new();
    for (id, row) in rows {
        let facts = Facts {
            values: rule::facts_from_row(&row, catalog),
            consents: rule::consents_from_row(&row),
            ..Facts::default()
        };
        out.insert(id, facts);
    }
    type Ev = (
        Uuid,
        String,
        DateTime<Utc>,
        Option<Decimal>,
        Option<Decimal>,
        Option<i32>,
        Option<i32>,
    );
    let events: Vec<Ev> = sqlx::query_as(
        "SELECT customer_id, type, occur_time, amount, margin, csat, nps FROM events WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (id, kind, occur_time, amount, margin, csat, nps) in events {
        if let Some(f) = out.get_mut(&id) {
            f.events.push(Event {
                kind,
                occur_time,
                amount,
                margin,
                csat,
                nps,
            });
        }
    }
    let members: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT customer_id, segment_id FROM memberships WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    for (c, s) in members {
        if let Some(f) = out.get_mut(&c) {
            f.segments.insert(s);
        }
    }
    // ranks of every numeric field, among the customers with a value
    let numeric: Vec<String> = catalog
        .fields()
        .into_iter()
        .filter(|d| {
            [
                FieldType::Integer as i32,
                FieldType::Decimal as i32,
                FieldType::Money as i32,
            ]
            .contains(&d.r#type)
        })
        .map(|d| d.name)
        .collect();
    let as_num = |v: Option<&Value>| match v {
        Some(Value::Int(i)) => Some(Decimal::from(*i)),
        Some(Value::Decimal(d)) => Some(*d),
        _ => None,
    };
    for field in numeric {
        let values: Vec<Decimal> = out
            .values()
            .filter_map(|f| as_num(f.values.get(&field)))
            .collect();
        let total = values.len() as i64;
        for f in out.values_mut() {
            if let Some(x) = as_num(f.values.get(&field)) {
                let greater = values.iter().filter(|v| **v > x).count() as i64;
                let smaller = values.iter().filter(|v| **v < x).count() as i64;
                f.ranks.insert(
                    field.clone(),
                    RankFacts {
                        greater,
                        smaller,
                        total,
                    },
                );
            }
        }
    }
    out
}

async fn sql_members(conn: &mut PgConnection, tenant: Uuid, sql: &rule::Sql) -> BTreeSet<Uuid> {
    let text = format!(
        "SELECT f.customer_id FROM features f WHERE f.tenant_id = $1 AND ({})",
        sql.condition
    );
    let mut q = sqlx::query_scalar::<_, Uuid>(sqlx::AssertSqlSafe(text)).bind(tenant);
    for p in &sql.params {
        q = match p {
            SqlParam::Uuid(u) => q.bind(*u),
            SqlParam::Text(s) => q.bind(s.clone()),
            SqlParam::TextArray(v) => q.bind(v.clone()),
            SqlParam::Decimal(d) => q.bind(*d),
            SqlParam::Int(i) => q.bind(*i),
            SqlParam::Bool(b) => q.bind(*b),
            SqlParam::Time(t) => q.bind(*t),
        };
    }
    match q.fetch_all(&mut *conn).await {
        Ok(rows) => rows.into_iter().collect(),
        Err(e) => panic!("{e}\nSQL: {}\nparams: {:?}", sql.condition, sql.params),
    }
}

const RULES: &[&str] = &[
    // numbers, missing values, exact decimals
    "purchases >= 3",
    "purchases = 0",
    "purchases != 2",
    "purchases < 2 or purchases > 6",
    "purchases between 2 and 4",
    "purchases in [1, 3, 5]",
    "purchases not in [1, 3, 5]",
    "clv > 500",
    "clv = 250.00",
    "clv != 250",
    "clv <= 100.5",
    "clv between 100 and 300",
    "clv in [0, 25, 975]",
    "clv not in [0, 25, 975]",
    "not (clv >= 500)",
    "p_alive < 0.5",
    "p_alive >= 0.25 and p_alive <= 0.75",
    "nps >= 7",
    "not (nps >= 7)",
    "nps != 7",
    "nps not in [0, 10]",
    "csat = 5 or csat = 1",
    "rfm.r >= 4",
    "monetary > 250.5",
    "exists(monetary)",
    "not exists(clv)",
    "net_clv < 0",
    "net_clv >= -50.5 and net_clv != 0",
    "not exists(net_clv)",
    "cost_to_serve > 100.25",
    "net_profit < 0 and profit_decile >= 9",
    "profit_decile in [1, 2] or net_profit > 50",
    "ladder = \"partner\" and profit_decile = 10",
    "not (profit_decile <= 5)",
    // strings, enums, lists
    "country = \"ES\"",
    "country != \"ES\"",
    "country in [\"ES\", \"MX\"]",
    "country not in [\"ES\", \"MX\"]",
    "country starts_with \"M\"",
    "country contains \"E\"",
    "kind = \"organization\"",
    "ladder in [\"friend\", \"partner\"]",
    "ladder != \"stranger\"",
    "rfm.segment = \"Champions\"",
    "rfm.segment in [\"At Risk\", \"Cannot Lose Them\"] and p_alive < 0.5",
    "stage = \"commitment\" or not exists(stage)",
    "tags contains \"vip\"",
    "not (tags contains \"vip\")",
    "exists(tags)",
    // attributes
    "attr.tier = \"gold\"",
    "attr.tier != \"gold\"",
    "attr.tier contains \"gold\"",
    "attr.tier starts_with \"gold-\"",
    "attr.tier in [\"\", \"silver\"]",
    "exists(attr.tier)",
    "attr.score > 5",
    "attr.score between 1 and 3",
    "exists(attr.score)",
    "not exists(attr.score)",
    "attr.vip = true",
    "attr.vip != true",
    "exists(attr.vip)",
    "attr.signup within 100d",
    "attr.signup before 2025-01-01",
    "attr.interests contains \"golf\"",
    "exists(attr.interests)",
    // time
    "last_purchase within 90d",
    "last_purchase within 36h",
    "last_purchase before 365d",
    "last_purchase after 30d",
    "first_purchase before 2025-01-01T00:00:00Z",
    "first_purchase after 2024-06-01",
    "first_purchase between 2024-01-01 and 2024-12-31T23:59:59Z",
    "not (last_contact within 30d)",
    "last_purchase before 365d and not exists(attr.tier)",
    // aggregates
    "count(purchase, 30d) >= 1",
    "count(purchase, 30d) = 0",
    "count(complaint, 365d) = 0",
    "count(contact, 30d) between 1 and 5",
    "count(contact, 365d) in [2, 4]",
    "count(campaign_response, 90d) >= 1",
    "count(\"acme.webinar_attended\", 90d) >= 1",
    "sum(purchase.amount, 180d) > 100",
    "sum(purchase.amount, 30d) = 0",
    "sum(purchase.margin, 365d) >= 20",
    "sum(return.amount, 365d) != 0",
    "avg(purchase.amount, 365d) > 75",
    "avg(purchase.amount, 365d) between 50 and 100",
    "avg(purchase.amount, 365d) not in [50]",
    "avg(survey_response.csat, 365d) >= 4",
    "avg(survey_response.csat, 365d) = 3",
    "avg(survey_response.nps, 365d) < 5",
    "min(purchase.amount, 365d) < 20",
    "max(purchase.amount, 365d) >= 150",
    "max(survey_response.csat, 30d) != 5",
    "not (min(return.amount, 90d) > 10)",
    // ranks
    "clv in top 10%",
    "net_clv in top 10%",
    "cost_to_serve in top 20%",
    "clv in top 0.5%",
    "clv in top 33.3%",
    "clv in top 100%",
    "purchases in top 25%",
    "attr.score in top 20%",
    "p_alive in top 1%",
    "percentile(monetary) >= 80",
    "percentile(clv) > 50",
    "percentile(clv) < 10",
    "percentile(clv) <= 0",
    "percentile(clv) = 100",
    "percentile(clv) != 100",
    "percentile(clv) between 25 and 75",
    "percentile(clv) in [0, 50, 100]",
    "percentile(clv) not in [0, 100]",
    "percentile(nps) >= 50",
    "percentile(attr.score) > 33.3",
    "not (percentile(p_alive) >= 90)",
    // consent
    "consent(email, marketing)",
    "consent(sms, marketing)",
    "consent(phone, service)",
    "consent(any, marketing)",
    "consent(any, service)",
    "consent(post, research)",
    "not consent(email, service)",
    // segments
    "in_segment(\"00000000-0000-0000-0000-00000000000a\")",
    "not in_segment(\"00000000-0000-0000-0000-00000000000b\")",
    // combinations
    "purchases >= 3 and last_purchase within 90d and clv > 500 and country in [\"ES\", \"MX\"] and consent(email, marketing) and not in_segment(\"00000000-0000-0000-0000-00000000000b\")",
    "(clv in top 10% or percentile(monetary) >= 80) and not (nps < 7)",
    "tags contains \"vip\" or attr.interests contains \"golf\"",
    "not (country = \"ES\" or (purchases > 2 and not exists(csat)))",
];

#[tokio::test]
async fn sql_agrees_with_the_evaluator() {
    let db = rapport_testkit::database().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(DDL).execute(&mut conn).await.unwrap();
    let tenant = Uuid::from_u128(0xfeed);
    let other = Uuid::from_u128(0xbeef);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    populate(&mut conn, tenant, 400, &mut rng).await;
    // another tenant's rows must not leak into ranks or aggregates
    populate(&mut conn, other, 60, &mut rng).await;
    count_values(&mut conn).await;
    let catalog = catalog();
    let facts = load_facts(&mut conn, tenant, &catalog).await;
    assert_eq!(facts.len(), 400);
    let mut checked = 0;
    for text in RULES {
        let expr = rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        rule::check(&expr, &catalog).unwrap_or_else(|e| panic!("{text}: {e}"));
        // the structured form is the same rule
        let structured = rule::from_proto(&rule::to_proto(&expr)).unwrap();
        assert_eq!(structured, expr);
        let sql = rule::compile_sql(&structured, &catalog, now());
        let got = sql_members(&mut conn, tenant, &sql).await;
        let want: BTreeSet<Uuid> = facts
            .iter()
            .filter(|(_, f)| rule::evaluate(&expr, f, now()))
            .map(|(id, _)| *id)
            .collect();
        if got != want {
            let extra: Vec<_> = got.difference(&want).take(3).collect();
            let missing: Vec<_> = want.difference(&got).take(3).collect();
            let sample = extra.first().or(missing.first()).map(|id| &facts[*id]);
            panic!(
                "{text}: SQL selected {} customers, the evaluator {}; SQL only: {extra:?}; evaluator only: {missing:?}\nfacts of the first: {sample:#?}\nSQL: {}",
                got.len(),
                want.len(),
                sql.condition
            );
        }
        // explain agrees too
        for f in facts.values().take(20) {
            let x = rule::explain(&expr, f, now(), &|_| None);
            assert_eq!(x.held, rule::evaluate(&expr, f, now()), "{text}");
        }
        checked += 1;
    }
    assert_eq!(checked, RULES.len());
    // the rules are not trivial: most select some but not all customers
    let mut selective = 0;
    for text in RULES {
        let expr = rule::parse(text).unwrap();
        let n = facts
            .values()
            .filter(|f| rule::evaluate(&expr, f, now()))
            .count();
        if n > 0 && n < facts.len() {
            selective += 1;
        }
    }
    assert!(
        selective * 10 >= RULES.len() * 9,
        "only {selective} of {} rules are selective",
        RULES.len()
    );
}

/// Timing of compiled rules over 1,000,000 customers (run with --ignored;
/// prints the figures).
#[tokio::test]
#[ignore]
async fn a_million_customers() {
    let db = rapport_testkit::database().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(DDL).execute(&mut conn).await.unwrap();
    let tenant = Uuid::from_u128(0xfeed);
    sqlx::query(
        "INSERT INTO features (tenant_id, customer_id, country, purchases, last_purchase, clv, monetary, consents, tags) \
         SELECT $1, gen_random_uuid(), (ARRAY['ES','MX','DE','US'])[1 + (i % 4)], i % 9, \
                $2::timestamptz - make_interval(hours => ((i * 7919) % 8760)::int), \
                ((i * 104729) % 100000) / 100.0, ((i * 15485863) % 500000) / 100.0, \
                CASE WHEN i % 3 = 0 THEN jsonb_build_object('email:marketing', jsonb_build_object('granted', true, 'time', '2025-01-01T00:00:00Z')) ELSE '{}' END, \
                CASE WHEN i % 10 = 0 THEN ARRAY['vip'] ELSE '{}' END \
         FROM generate_series(1::bigint, 1000000::bigint) i",
    )
    .bind(tenant)
    .bind(now())
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO events (tenant_id, customer_id, interaction_id, type, occur_time, amount) \
         SELECT f.tenant_id, f.customer_id, gen_random_uuid(), 'purchase', $1::timestamptz - make_interval(days => g), 10 + g \
         FROM features f, generate_series(1, 3) g WHERE f.purchases > 5",
    )
    .bind(now())
    .execute(&mut conn)
    .await
    .unwrap();
    count_values(&mut conn).await;
    sqlx::raw_sql("ANALYZE features; ANALYZE events")
        .execute(&mut conn)
        .await
        .unwrap();
    let catalog = catalog();
    for work_mem in ["4MB", "64MB"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET work_mem = '{work_mem}'")))
            .execute(&mut conn)
            .await
            .unwrap();
        println!("work_mem {work_mem}:");
        for text in [
            "purchases >= 3 and last_purchase within 90d and clv > 500 and country in [\"ES\", \"MX\"] and consent(email, marketing)",
            "clv in top 10% and purchases >= 3 and tags contains \"vip\" and country != \"DE\" and last_purchase before 30d",
            "percentile(monetary) >= 80 and purchases >= 3 and clv > 100 and country = \"ES\" and not consent(email, marketing)",
            "sum(purchase.amount, 180d) > 20 and purchases >= 6 and clv > 100 and country in [\"ES\", \"MX\"] and last_purchase within 365d",
        ] {
            let expr = rule::parse(text).unwrap();
            rule::check(&expr, &catalog).unwrap();
            let sql = rule::compile_sql(&expr, &catalog, now());
            let start = std::time::Instant::now();
            let n = sql_members(&mut conn, tenant, &sql).await.len();
            println!(
                "{:>6} ms  {n:>7} members  {text}",
                start.elapsed().as_millis()
            );
            if std::env::var_os("RULE_EXPLAIN").is_some() {
                let text = format!(
                    "EXPLAIN ANALYZE SELECT f.customer_id FROM features f WHERE f.tenant_id = $1 AND ({})",
                    sql.condition
                );
                let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(text)).bind(tenant);
                for p in &sql.params {
                    q = match p {
                        SqlParam::Uuid(u) => q.bind(*u),
                        SqlParam::Text(s) => q.bind(s.clone()),
                        SqlParam::TextArray(v) => q.bind(v.clone()),
                        SqlParam::Decimal(d) => q.bind(*d),
                        SqlParam::Int(i) => q.bind(*i),
                        SqlParam::Bool(b) => q.bind(*b),
                        SqlParam::Time(t) => q.bind(*t),
                    };
                }
                for line in q.fetch_all(&mut conn).await.unwrap() {
                    println!("    {line}");
                }
            }
        }
    }
}
