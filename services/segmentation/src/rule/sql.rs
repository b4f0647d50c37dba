//! Compilation of a rule into a parameterised SQL boolean expression over
//! `features f` (rule.proto, MEANING). Every condition compiles to an
//! expression that is never NULL (a missing value makes it false), so `NOT`
//! negates exactly as the evaluator does.

use chrono::{DateTime, Utc};
use rapport_proto::rapport::segmentation::v1::FieldType;
use rust_decimal::Decimal;

use super::catalog::{CAMPAIGN_RESPONSE_TYPES, CONTACT_TYPES, Catalog, Field, Storage};
use super::check::num;
use super::{AggFn, Aggregate, CmpOp, Cond, Expr, Literal, Operand, SegmentRef, TimeOp, TimeRef};

/// A compiled rule: `condition` is a boolean SQL expression over `features f`
/// in which `$1` is the tenant id and `$2..` are `params` in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Sql {
    pub condition: String,
    pub params: Vec<SqlParam>,
}

/// A bound value of a compiled rule.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlParam {
    Uuid(uuid::Uuid),
    Text(String),
    TextArray(Vec<String>),
    Decimal(Decimal),
    Int(i64),
    Bool(bool),
    Time(DateTime<Utc>),
}

/// The instant `hours` before `now`, no earlier than 0001-01-01T00:00:00Z.
pub(crate) fn ago(now: DateTime<Utc>, hours: u64) -> DateTime<Utc> {
    let floor = DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or(now);
    i64::try_from(hours)
        .ok()
        .and_then(chrono::Duration::try_hours)
        .and_then(|d| now.checked_sub_signed(d))
        .map_or(floor, |t| t.max(floor))
}

/// The interaction types a source stands for.
pub(crate) fn source_types(source: &str) -> Vec<String> {
    match source {
        "contact" => CONTACT_TYPES.iter().map(|s| s.to_string()).collect(),
        "campaign_response" => CAMPAIGN_RESPONSE_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        other => vec![other.to_string()],
    }
}

/// The events column of a measure (only the known measures; anything else
/// has no column).
fn measure_column(m: &str) -> Option<&'static str> {
    match m {
        "amount" => Some("e.amount"),
        "margin" => Some("e.margin"),
        "csat" => Some("e.csat"),
        "nps" => Some("e.nps"),
        _ => None,
    }
}

/// Compiles a checked rule. The caller runs
/// `SELECT f.customer_id FROM features f WHERE f.tenant_id = $1 AND (<condition>)`
/// binding the tenant id as `$1` and `params` as `$2..`. An unresolved
/// `in_segment` name (see `resolve_segments`) or a field unknown to the
/// catalogue (see `check`) compiles to FALSE.
pub fn compile_sql(expr: &Expr, catalog: &Catalog, now: DateTime<Utc>) -> Sql {
    let mut c = Compiler {
        catalog,
        now,
        params: Vec::new(),
        now_param: None,
    };
    let condition = c.expr(expr);
    Sql {
        condition,
        params: c.params,
    }
}

struct Compiler<'a> {
    catalog: &'a Catalog,
    now: DateTime<Utc>,
    params: Vec<SqlParam>,
    now_param: Option<String>,
}

/// A numeric test on an operand.
enum NumPred<'a> {
    Cmp(CmpOp, &'a Literal),
    Between(&'a Literal, &'a Literal),
    In(&'a [Literal], bool),
}

fn op_sql(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "=",
        CmpOp::Ne => "<>",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

fn never_null(s: String) -> String {
    format!("COALESCE(({s}), false)")
}

/// The tenant's ($1) number of customers with a `clv` or `monetary` value,
/// as the features triggers keep it in `feature_counts` (0 when none has
/// one): a scalar subquery, read instead of counting the tenant's index.
pub fn kept_count_sql(column: &str) -> String {
    format!("(SELECT coalesce(max({column}_n), 0) FROM feature_counts WHERE tenant_id = $1)")
}

impl Compiler<'_> {
    fn param(&mut self, p: SqlParam, cast: &str) -> String {
        self.params.push(p);
        format!("${}::{cast}", self.params.len() + 1)
    }

    fn now(&mut self) -> String {
        if let Some(n) = &self.now_param {
            return n.clone();
        }
        let n = self.param(SqlParam::Time(self.now), "timestamptz");
        self.now_param = Some(n.clone());
        n
    }

    fn expr(&mut self, e: &Expr) -> String {
        match e {
            Expr::And(items) => {
                let parts: Vec<String> = items.iter().map(|i| self.expr(i)).collect();
                format!("({})", parts.join(" AND "))
            }
            Expr::Or(items) => {
                let parts: Vec<String> = items.iter().map(|i| self.expr(i)).collect();
                format!("({})", parts.join(" OR "))
            }
            Expr::Not(inner) => format!("(NOT {})", self.expr(inner)),
            Expr::Cond(c) => self.cond(&c.kind),
        }
    }

    /// The SQL value of a field of the row `alias` (NULL when missing or of
    /// the wrong JSON type), with its type.
    fn value(&mut self, field: &Field, alias: &str) -> String {
        match &field.storage {
            Storage::Column(col) => format!("{alias}.{col}"),
            Storage::Attribute(name) => {
                let key = self.param(SqlParam::Text(name.clone()), "text");
                let j = format!("({alias}.attributes -> {key})");
                match field.ty {
                    FieldType::String => {
                        format!("(CASE WHEN jsonb_typeof({j}) = 'string' THEN {j} #>> '{{}}' END)")
                    }
                    FieldType::Decimal => format!(
                        "(CASE WHEN jsonb_typeof({j}) = 'number' THEN ({j} #>> '{{}}')::numeric \
                         WHEN jsonb_typeof({j}) = 'string' AND ({j} #>> '{{}}') ~ '^-?[0-9]+(\\.[0-9]+)?$' \
                         THEN ({j} #>> '{{}}')::numeric END)"
                    ),
                    FieldType::Bool => {
                        format!("(CASE WHEN jsonb_typeof({j}) = 'boolean' THEN ({j})::boolean END)")
                    }
                    FieldType::Timestamp => format!(
                        "(CASE WHEN jsonb_typeof({j}) = 'string' AND ({j} #>> '{{}}') ~ \
                         '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(\\.[0-9]+)?(Z|z|[+-][0-9]{{2}}:[0-9]{{2}})$' \
                         THEN ({j} #>> '{{}}')::timestamptz END)"
                    ),
                    // STRING_LIST: the JSON array itself.
                    _ => format!("(CASE WHEN jsonb_typeof({j}) = 'array' THEN {j} END)"),
                }
            }
        }
    }

    fn lit(&mut self, l: &Literal) -> String {
        match l {
            Literal::Str(s) => self.param(SqlParam::Text(s.clone()), "text"),
            Literal::Int(i) => self.param(SqlParam::Decimal(Decimal::from(*i)), "numeric"),
            Literal::Dec(d) => self.param(SqlParam::Decimal(*d), "numeric"),
            Literal::Bool(b) => self.param(SqlParam::Bool(*b), "boolean"),
            Literal::Time(t) => self.param(SqlParam::Time(*t), "timestamptz"),
        }
    }

    /// A numeric literal scaled by `scale` (for exact averages).
    fn num_lit(&mut self, l: &Literal, scale: Option<&str>) -> String {
        let p = self.param(SqlParam::Decimal(num(l).unwrap_or_default()), "numeric");
        match scale {
            Some(s) => format!("({p} * {s})"),
            None => p,
        }
    }

    /// `v pred` for a numeric value `v`; with `scale`, literals are multiplied
    /// by it (`sum op L * count` tests `avg op L` exactly).
    fn num_pred(&mut self, v: &str, scale: Option<&str>, pred: &NumPred) -> String {
        match pred {
            NumPred::Cmp(op, l) => {
                let p = self.num_lit(l, scale);
                format!("{v} {} {p}", op_sql(*op))
            }
            NumPred::Between(lo, hi) => {
                let a = self.num_lit(lo, scale);
                let b = self.num_lit(hi, scale);
                format!("{v} >= {a} AND {v} <= {b}")
            }
            NumPred::In(values, negated) => {
                let items: Vec<String> = values.iter().map(|l| self.num_lit(l, scale)).collect();
                format!(
                    "{v} {}IN ({})",
                    if *negated { "NOT " } else { "" },
                    items.join(", ")
                )
            }
        }
    }

    fn field(&self, name: &str) -> Option<Field> {
        self.catalog.field(name)
    }

    fn operand_pred(&mut self, o: &Operand, pred: NumPredOrOther) -> String {
        match o {
            Operand::Field(name) => {
                let Some(f) = self.field(name) else {
                    return "FALSE".to_string();
                };
                let v = self.value(&f, "f");
                match pred {
                    NumPredOrOther::Num(p) => {
                        if super::catalog::is_numeric(f.ty) {
                            never_null(self.num_pred(&v, None, &p))
                        } else {
                            self.scalar_pred(&v, f.ty, &p)
                        }
                    }
                }
            }
            Operand::Aggregate(a) => {
                let NumPredOrOther::Num(p) = pred;
                self.aggregate_pred(a, &p)
            }
            Operand::Percentile(name) => {
                let NumPredOrOther::Num(p) = pred;
                let Some(f) = self.field(name) else {
                    return "FALSE".to_string();
                };
                self.percentile_pred(&f, &p)
            }
        }
    }

    /// Tests on STRING, ENUM, BOOL and TIMESTAMP values.
    fn scalar_pred(&mut self, v: &str, ty: FieldType, pred: &NumPred) -> String {
        let s = match pred {
            NumPred::Cmp(op, l) => {
                let p = self.lit(l);
                format!("{v} {} {p}", op_sql(*op))
            }
            NumPred::Between(lo, hi) => {
                let a = self.lit(lo);
                let b = self.lit(hi);
                format!("{v} >= {a} AND {v} <= {b}")
            }
            NumPred::In(values, negated) => {
                if matches!(ty, FieldType::String | FieldType::Enum) {
                    let items: Vec<String> = values
                        .iter()
                        .map(|l| match l {
                            Literal::Str(s) => s.clone(),
                            other => super::print::literal(other),
                        })
                        .collect();
                    let p = self.param(SqlParam::TextArray(items), "text[]");
                    if *negated {
                        format!("{v} <> ALL({p})")
                    } else {
                        format!("{v} = ANY({p})")
                    }
                } else {
                    let items: Vec<String> = values.iter().map(|l| self.lit(l)).collect();
                    format!(
                        "{v} {}IN ({})",
                        if *negated { "NOT " } else { "" },
                        items.join(", ")
                    )
                }
            }
        };
        never_null(s)
    }

    fn events_filter(&mut self, a: &Aggregate) -> String {
        let types = source_types(&a.source);
        let ty = if types.len() == 1 {
            let p = self.param(SqlParam::Text(types[0].clone()), "text");
            format!("e.type = {p}")
        } else {
            let p = self.param(SqlParam::TextArray(types), "text[]");
            format!("e.type = ANY({p})")
        };
        let now = self.now();
        let from = self.param(
            SqlParam::Time(ago(self.now, u64::from(a.window_days) * 24)),
            "timestamptz",
        );
        format!(
            "e.tenant_id = $1 AND e.customer_id = f.customer_id AND {ty} \
             AND e.occur_time > {from} AND e.occur_time <= {now}"
        )
    }

    fn aggregate_pred(&mut self, a: &Aggregate, pred: &NumPred) -> String {
        let measure = match (&a.function, &a.measure) {
            (AggFn::Count, _) => None,
            (_, Some(m)) => match measure_column(m) {
                Some(c) => Some(c),
                None => return "FALSE".to_string(),
            },
            (_, None) => return "FALSE".to_string(),
        };
        let filter = self.events_filter(a);
        let m = measure.unwrap_or("NULL");
        match a.function {
            AggFn::Avg => {
                let sum = format!("sum({m})");
                let count = format!("count({m})");
                let p = self.num_pred(&sum, Some(&count), pred);
                never_null(format!(
                    "SELECT CASE WHEN {count} > 0 THEN ({p}) END FROM events e WHERE {filter}"
                ))
            }
            f => {
                let agg = match f {
                    AggFn::Count => "count(*)".to_string(),
                    AggFn::Sum => format!("COALESCE(sum({m}), 0)"),
                    AggFn::Min => format!("min({m})"),
                    _ => format!("max({m})"),
                };
                let v = format!("(SELECT {agg} FROM events e WHERE {filter})");
                never_null(self.num_pred(&v, None, pred))
            }
        }
    }

    /// The number of customers of the tenant with a value of `f`, as an
    /// uncorrelated subquery over `features r`; for CLV and monetary value,
    /// the counts the features triggers keep (a count reads the tenant's
    /// whole index, at each feed batch that re-evaluates the segment).
    fn count_sql(&mut self, f: &Field) -> String {
        if let Storage::Column(col @ ("clv" | "monetary")) = f.storage {
            return format!("(SELECT {} AS n)", kept_count_sql(col));
        }
        let xr = self.value(f, "r");
        format!(
            "(SELECT count(*) AS n FROM features r WHERE r.tenant_id = $1 AND {xr} IS NOT NULL)"
        )
    }

    /// `x in top P%`: x at least the value at rank C = ceil(N * P / 100) from
    /// the highest (ties share the best rank). The cut-off is one
    /// uncorrelated subquery (computed once per statement).
    fn top_pred(&mut self, f: &Field, percent: Decimal) -> String {
        let xf = self.value(f, "f");
        let xr = self.value(f, "r");
        let p = self.param(SqlParam::Decimal(percent), "numeric");
        let n = self.count_sql(f);
        never_null(format!(
            "{xf} >= (SELECT (SELECT ({xr})::numeric FROM features r WHERE r.tenant_id = $1 \
             AND {xr} IS NOT NULL ORDER BY 1 DESC \
             OFFSET GREATEST(ceil(c.n * {p} * 0.01) - 1, 0)::bigint LIMIT 1) FROM {n} c)"
        ))
    }

    /// percentile(x) = 100 * s / (N - 1) (0 when N = 1), s the number of
    /// values strictly smaller than x. Each test becomes thresholds on s, and
    /// `s >= K` becomes `x > T` with T the K-th smallest value, each T one
    /// uncorrelated subquery.
    fn percentile_pred(&mut self, f: &Field, pred: &NumPred) -> String {
        let xf = self.value(f, "f");
        let s = match pred {
            NumPred::Cmp(op, l) => self.pct_atom(f, &xf, *op, l),
            NumPred::Between(lo, hi) => {
                let a = self.pct_atom(f, &xf, CmpOp::Ge, lo);
                let b = self.pct_atom(f, &xf, CmpOp::Le, hi);
                format!("{a} AND {b}")
            }
            NumPred::In(values, negated) => {
                let items: Vec<String> = values
                    .iter()
                    .map(|l| self.pct_atom(f, &xf, CmpOp::Eq, l))
                    .collect();
                if *negated {
                    format!("{xf} IS NOT NULL AND NOT ({})", items.join(" OR "))
                } else {
                    format!("({})", items.join(" OR "))
                }
            }
        };
        never_null(s)
    }

    /// The threshold T with `s >= K  <=>  x > T` (K computed from N by
    /// `k`, in which `c.n` is N); when N = 1, T is chosen so that `x > T` is
    /// `single` (a boolean SQL expression).
    fn pct_threshold(&mut self, f: &Field, k: &str, single: &str) -> String {
        let xr = self.value(f, "r");
        let n = self.count_sql(f);
        format!(
            "(SELECT CASE WHEN c.n = 1 THEN CASE WHEN {single} THEN '-Infinity'::numeric \
             ELSE 'Infinity'::numeric END \
             WHEN {k} <= 0 THEN '-Infinity'::numeric \
             ELSE (SELECT ({xr})::numeric FROM features r WHERE r.tenant_id = $1 AND {xr} IS NOT NULL \
             ORDER BY 1 OFFSET GREATEST({k} - 1, 0)::bigint LIMIT 1) END FROM {n} c)"
        )
    }

    fn pct_atom(&mut self, f: &Field, xf: &str, op: CmpOp, l: &Literal) -> String {
        let lp = self.num_lit(l, None);
        let scaled = format!("({lp} * (c.n - 1) * 0.01)");
        let ceil_k = format!("ceil{scaled}");
        let floor_k1 = format!("(floor{scaled} + 1)");
        let single = |o: &str| format!("(0 {o} {lp})");
        let s = match op {
            CmpOp::Ge => format!("{xf} > {}", self.pct_threshold(f, &ceil_k, &single(">="))),
            CmpOp::Gt => format!("{xf} > {}", self.pct_threshold(f, &floor_k1, &single(">"))),
            CmpOp::Le => format!(
                "NOT ({xf} > {})",
                self.pct_threshold(f, &floor_k1, &format!("NOT {}", single("<=")))
            ),
            CmpOp::Lt => format!(
                "NOT ({xf} > {})",
                self.pct_threshold(f, &ceil_k, &format!("NOT {}", single("<")))
            ),
            CmpOp::Eq | CmpOp::Ne => {
                let a = self.pct_threshold(f, &ceil_k, &single("="));
                let b = self.pct_threshold(f, &floor_k1, "false");
                let eq = format!("({xf} > {a} AND NOT ({xf} > {b}))");
                if op == CmpOp::Eq {
                    eq
                } else {
                    format!("NOT {eq}")
                }
            }
        };
        never_null(format!("{xf} IS NOT NULL AND ({s})"))
    }

    fn cond(&mut self, c: &Cond) -> String {
        match c {
            Cond::Compare { left, op, value } => {
                self.operand_pred(left, NumPredOrOther::Num(NumPred::Cmp(*op, value)))
            }
            Cond::Between { operand, low, high } => {
                self.operand_pred(operand, NumPredOrOther::Num(NumPred::Between(low, high)))
            }
            Cond::In {
                operand,
                values,
                negated,
            } => self.operand_pred(operand, NumPredOrOther::Num(NumPred::In(values, *negated))),
            Cond::Contains { field, value } => {
                let Some(f) = self.field(field) else {
                    return "FALSE".to_string();
                };
                let v = self.value(&f, "f");
                let p = self.param(SqlParam::Text(value.clone()), "text");
                match (&f.storage, f.ty) {
                    (Storage::Column(_), FieldType::StringList) => {
                        never_null(format!("{v} @> ARRAY[{p}]"))
                    }
                    (Storage::Attribute(_), FieldType::StringList) => {
                        never_null(format!("{v} @> jsonb_build_array({p})"))
                    }
                    (_, FieldType::String) => never_null(format!("strpos({v}, {p}) > 0")),
                    _ => "FALSE".to_string(),
                }
            }
            Cond::StartsWith { field, prefix } => {
                let Some(f) = self.field(field) else {
                    return "FALSE".to_string();
                };
                let v = self.value(&f, "f");
                let p = self.param(SqlParam::Text(prefix.clone()), "text");
                never_null(format!("left({v}, char_length({p})) = {p}"))
            }
            Cond::Exists { field } => {
                let Some(f) = self.field(field) else {
                    return "FALSE".to_string();
                };
                let v = self.value(&f, "f");
                match (&f.storage, f.ty) {
                    (Storage::Column(_), FieldType::StringList) => {
                        never_null(format!("cardinality({v}) > 0"))
                    }
                    (Storage::Attribute(_), FieldType::StringList) => {
                        never_null(format!("jsonb_array_length({v}) > 0"))
                    }
                    _ => format!("({v} IS NOT NULL)"),
                }
            }
            Cond::Time {
                field,
                op,
                reference,
            } => {
                let Some(f) = self.field(field) else {
                    return "FALSE".to_string();
                };
                let v = self.value(&f, "f");
                let s = match (op, reference) {
                    (TimeOp::Within, TimeRef::Ago { hours }) => {
                        let from = self.param(SqlParam::Time(ago(self.now, *hours)), "timestamptz");
                        let now = self.now();
                        format!("{v} >= {from} AND {v} <= {now}")
                    }
                    (TimeOp::Within, TimeRef::At(_)) => return "FALSE".to_string(),
                    (op, r) => {
                        let t = match r {
                            TimeRef::Ago { hours } => ago(self.now, *hours),
                            TimeRef::At(t) => *t,
                        };
                        let p = self.param(SqlParam::Time(t), "timestamptz");
                        let o = if *op == TimeOp::Before { "<" } else { ">" };
                        format!("{v} {o} {p}")
                    }
                };
                never_null(s)
            }
            Cond::TopPercent { field, percent } => match self.field(field) {
                Some(f) => self.top_pred(&f, *percent),
                None => "FALSE".to_string(),
            },
            Cond::Consent { channel, purpose } => {
                let default = if purpose == "service" {
                    "TRUE"
                } else {
                    "FALSE"
                };
                let any_key = self.param(SqlParam::Text(format!("any:{purpose}")), "text");
                let any = format!("(f.consents -> {any_key})");
                let granted = |j: &str| format!("({j} ->> 'granted')::boolean");
                let time = |j: &str| format!("({j} ->> 'time')::timestamptz");
                if channel == "any" {
                    never_null(format!(
                        "CASE WHEN {any} IS NULL THEN {default} ELSE {} END",
                        granted(&any)
                    ))
                } else {
                    let own_key =
                        self.param(SqlParam::Text(format!("{channel}:{purpose}")), "text");
                    let own = format!("(f.consents -> {own_key})");
                    never_null(format!(
                        "CASE WHEN {own} IS NULL AND {any} IS NULL THEN {default} \
                         WHEN {any} IS NULL THEN {go} \
                         WHEN {own} IS NULL THEN {ga} \
                         WHEN {ta} > {to} THEN {ga} ELSE {go} END",
                        go = granted(&own),
                        ga = granted(&any),
                        ta = time(&any),
                        to = time(&own),
                    ))
                }
            }
            Cond::InSegment(r) => match r {
                SegmentRef::Id(id) => {
                    let p = self.param(SqlParam::Uuid(*id), "uuid");
                    format!(
                        "EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = $1 \
                         AND m.segment_id = {p} AND m.customer_id = f.customer_id)"
                    )
                }
                SegmentRef::Name(_) => "FALSE".to_string(),
            },
        }
    }
}

enum NumPredOrOther<'a> {
    Num(NumPred<'a>),
}
