//! Binding the rule compiler's parameters after the tenant.

use super::*;

fn bind_param<'q>(
    q: sqlx::query::Query<'q, Postgres, PgArguments>,
    p: &'q SqlParam,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    match p {
        SqlParam::Uuid(u) => q.bind(*u),
        SqlParam::Text(s) => q.bind(s.as_str()),
        SqlParam::TextArray(v) => q.bind(v.as_slice()),
        SqlParam::Decimal(d) => q.bind(*d),
        SqlParam::Int(i) => q.bind(*i),
        SqlParam::Bool(b) => q.bind(*b),
        SqlParam::Time(t) => q.bind(*t),
    }
}

/// A query over `text` with the tenant as $1 and the rule's parameters after.
pub(super) fn rule_query<'q>(
    text: String,
    tenant: Uuid,
    sql: &'q Sql,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    // The condition comes from the rule compiler, which binds every value.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(text)).bind(tenant);
    for p in &sql.params {
        q = bind_param(q, p);
    }
    q
}

/// The number of the first parameter after the rule's.
pub(super) fn next_param(sql: &Sql) -> usize {
    sql.params.len() + 2
}
