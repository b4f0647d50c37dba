//! The membership change log: every entry and exit, numbered per tenant.

use super::*;

/// One entry or exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub segment_id: Uuid,
    pub segment_name: String,
    pub customer_id: Uuid,
    pub entered: bool,
    pub reason: MembershipChangeReason,
}

/// Logs membership changes and emits `MembershipChanged` events (at most
/// 1,000 ids each). Returns the first and last sequence (None if nothing).
pub async fn record_changes(
    conn: &mut PgConnection,
    tenant: Uuid,
    changes: &[Change],
    time: DateTime<Utc>,
) -> Result<Option<(i64, i64)>> {
    if changes.is_empty() {
        return Ok(None);
    }
    // The tenant's numbers, under its row's lock until commit: a tenant's
    // sequence order is its commit order, and numbers say nothing about
    // other tenants.
    ensure_tenant(conn, tenant).await?;
    let last: i64 = sqlx::query_scalar(
        "UPDATE tenants SET membership_sequence = membership_sequence + $2 WHERE tenant_id = $1
         RETURNING membership_sequence",
    )
    .bind(tenant)
    .bind(changes.len() as i64)
    .fetch_one(&mut *conn)
    .await?;
    let mut next = last - changes.len() as i64 + 1;
    let mut seqs: Vec<i64> = Vec::with_capacity(changes.len());
    for chunk in changes.chunks(50_000) {
        let segs: Vec<Uuid> = chunk.iter().map(|c| c.segment_id).collect();
        let names: Vec<&str> = chunk.iter().map(|c| c.segment_name.as_str()).collect();
        let custs: Vec<Uuid> = chunk.iter().map(|c| c.customer_id).collect();
        let entered: Vec<bool> = chunk.iter().map(|c| c.entered).collect();
        let reasons: Vec<i16> = chunk.iter().map(|c| c.reason as i16).collect();
        let numbers: Vec<i64> = (next..next + chunk.len() as i64).collect();
        next += chunk.len() as i64;
        sqlx::query(
            "INSERT INTO membership_log (tenant_id, sequence, segment_id, segment_name, customer_id, entered, reason, change_time)
             SELECT $1, q, s, n, c, e, r, $8
             FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::uuid[], $6::bool[], $7::smallint[])
                  AS x(q, s, n, c, e, r)",
        )
        .bind(tenant)
        .bind(&numbers)
        .bind(&segs)
        .bind(&names)
        .bind(&custs)
        .bind(&entered)
        .bind(&reasons)
        .bind(time)
        .execute(&mut *conn)
        .await?;
        seqs.extend(numbers);
    }

    // Events: grouped by segment and reason, in order, 1,000 ids at most.
    type Group<'a> = ((Uuid, MembershipChangeReason), Vec<(usize, &'a Change)>);
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let key = (c.segment_id, c.reason);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push((i, c)),
            None => groups.push((key, vec![(i, c)])),
        }
    }
    let mut events = Vec::new();
    for ((segment, reason), list) in groups {
        for chunk in list.chunks(1000) {
            let entered: Vec<String> = chunk
                .iter()
                .filter(|(_, c)| c.entered)
                .map(|(_, c)| c.customer_id.to_string())
                .collect();
            let exited: Vec<String> = chunk
                .iter()
                .filter(|(_, c)| !c.entered)
                .map(|(_, c)| c.customer_id.to_string())
                .collect();
            let s: Vec<i64> = chunk
                .iter()
                .filter_map(|(i, _)| seqs.get(*i).copied())
                .collect();
            let event = pb::MembershipChanged {
                segment_id: segment.to_string(),
                entered,
                exited,
                reason: reason as i32,
                change_time: Some(timestamp(time)),
                first_sequence: s.iter().min().copied().unwrap_or(0),
                last_sequence: s.iter().max().copied().unwrap_or(0),
            };
            events.push(NewEvent::new(
                tenant,
                "segment",
                segment.to_string(),
                "MembershipChanged",
                &pb::SegmentationEvent {
                    event: Some(segmentation_event::Event::MembershipChanged(event)),
                },
            ));
        }
    }
    for chunk in events.chunks(1000) {
        feed::append(conn, chunk).await?;
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(MEMBERSHIP_CHANNEL)
        .bind(tenant.to_string())
        .execute(&mut *conn)
        .await?;
    let first = seqs.iter().min().copied().unwrap_or(0);
    let last = seqs.iter().max().copied().unwrap_or(0);
    Ok(Some((first, last)))
}

/// One logged change.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub sequence: i64,
    pub segment_id: Uuid,
    pub segment_name: String,
    pub customer_id: Uuid,
    pub entered: bool,
    pub reason: i16,
    pub change_time: DateTime<Utc>,
}

/// Logged changes after `after` (one segment or all), in sequence order.
pub async fn log_after(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Option<Uuid>,
    after: i64,
    limit: i64,
) -> Result<Vec<LogRow>> {
    sqlx::query_as(
        "SELECT sequence, segment_id, segment_name, customer_id, entered, reason, change_time
         FROM membership_log
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR segment_id = $2) AND sequence > $3
         ORDER BY sequence LIMIT $4",
    )
    .bind(tenant)
    .bind(segment)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The last sequence before `time` (0 when none), for a start time.
pub async fn sequence_before(
    conn: &mut PgConnection,
    tenant: Uuid,
    time: Option<DateTime<Utc>>,
) -> Result<i64> {
    let s: Option<i64> = match time {
        Some(t) => sqlx::query_scalar(
            "SELECT max(sequence) FROM membership_log WHERE tenant_id = $1 AND change_time < $2",
        )
        .bind(tenant)
        .bind(t)
        .fetch_one(conn)
        .await?,
        None => {
            sqlx::query_scalar("SELECT max(sequence) FROM membership_log WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(conn)
                .await?
        }
    };
    Ok(s.unwrap_or(0))
}

/// Entries and exits of a segment per interval: (start, entered, exited).
pub async fn history(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step: Duration,
) -> Result<Vec<(DateTime<Utc>, i64, i64)>> {
    sqlx::query_as(
        "SELECT b.start, count(l.sequence) FILTER (WHERE l.entered),
                count(l.sequence) FILTER (WHERE NOT l.entered)
         FROM generate_series($3::timestamptz, $4::timestamptz - $5::interval, $5::interval) AS b(start)
         LEFT JOIN membership_log l ON l.tenant_id = $1 AND l.segment_id = $2
              AND l.change_time >= b.start AND l.change_time < b.start + $5::interval
         GROUP BY b.start ORDER BY b.start",
    )
    .bind(tenant)
    .bind(segment)
    .bind(start)
    .bind(end)
    .bind(step)
    .fetch_all(conn)
    .await
}

/// Entries minus exits of a segment at or after `from`.
pub async fn net_changes_since(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    from: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(CASE WHEN entered THEN 1 ELSE -1 END), 0)::bigint FROM membership_log
         WHERE tenant_id = $1 AND segment_id = $2 AND change_time >= $3",
    )
    .bind(tenant)
    .bind(segment)
    .bind(from)
    .fetch_one(conn)
    .await
}

/// Forgets log entries older than the retention.
pub async fn prune_log(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64> {
    let r = sqlx::query("DELETE FROM membership_log WHERE change_time < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}
