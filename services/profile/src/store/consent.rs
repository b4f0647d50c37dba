//! Consent: decisions per purpose and channel, the state in force and its
//! history.

use super::*;

/// A decision to record.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentInput {
    /// As requested.
    pub customer: Uuid,
    /// Channel number.
    pub channel: i16,
    /// Purpose number.
    pub purpose: i16,
    /// Status number.
    pub status: i16,
    /// Source.
    pub source: String,
    /// Evidence.
    pub evidence: String,
    /// Effective time (None: now).
    pub effective_time: Option<DateTime<Utc>>,
}

/// The consent record `id`.
pub async fn consent_record(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<ConsentRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        consent_cols!(),
        " FROM consent_records WHERE tenant_id = $1 AND consent_record_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The records in force for CheckConsent: whether the customer is deleted,
/// the channel's own record and the ANY record for the purpose.
pub async fn consent_state(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    channel: i16,
    purpose: i16,
) -> Result<(bool, Option<ConsentRow>, Option<ConsentRow>)> {
    let mut conn = pool.acquire().await?;
    let target = chain_end(&mut conn, tenant, customer).await?;
    let r = row(&mut conn, tenant, target)
        .await?
        .ok_or_else(|| customer_not_found(customer))?;
    let mut force = in_force(&mut conn, tenant, target).await?;
    let any = rapport_proto::rapport::profile::v1::ConsentChannel::Any as i16;
    let own = if channel == any {
        None
    } else {
        force.remove(&(channel, purpose))
    };
    let blanket = force.remove(&(any, purpose));
    Ok((r.status == CustomerStatus::Deleted, own, blanket))
}

/// A consent history position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsentCursor {
    /// Effective time of the last record (microseconds).
    pub t: i64,
    /// Its id.
    pub id: Uuid,
}

/// ListConsentHistory: newest effective time first, ties by record id.
pub async fn consent_history(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    channel: i16,
    purpose: i16,
    after: Option<&ConsentCursor>,
    limit: i64,
) -> Result<(Vec<ConsentRow>, Option<ConsentCursor>)> {
    let mut conn = pool.acquire().await?;
    let target = chain_end(&mut conn, tenant, customer).await?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
        "SELECT ",
        consent_cols!(),
        " FROM consent_records WHERE tenant_id = "
    ));
    q.push_bind(tenant)
        .push(" AND holder_id = ")
        .push_bind(target);
    if channel != 0 {
        q.push(" AND channel = ").push_bind(channel);
    }
    if purpose != 0 {
        q.push(" AND purpose = ").push_bind(purpose);
    }
    if let Some(c) = after {
        q.push(" AND (effective_time, consent_record_id) < (")
            .push_bind(DateTime::<Utc>::from_timestamp_micros(c.t).unwrap_or_default())
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    q.push(" ORDER BY effective_time DESC, consent_record_id DESC LIMIT ")
        .push_bind(limit + 1);
    let mut rows: Vec<ConsentRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more {
        rows.last().map(|r| ConsentCursor {
            t: r.effective_time.timestamp_micros(),
            id: r.consent_record_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// The records in force of a holder, by (channel, purpose).
pub async fn in_force(
    conn: &mut PgConnection,
    tenant: Uuid,
    holder: Uuid,
) -> Result<BTreeMap<(i16, i16), ConsentRow>> {
    let rows: Vec<ConsentRow> = sqlx::query_as(concat!(
        "SELECT DISTINCT ON (channel, purpose) ",
        consent_cols!(),
        " FROM consent_records WHERE tenant_id = $1 AND holder_id = $2
          ORDER BY channel, purpose, effective_time DESC, record_time DESC, consent_record_id DESC"
    ))
    .bind(tenant)
    .bind(holder)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.channel, r.purpose), r))
        .collect())
}

pub fn consent_event(tenant: Uuid, r: &ConsentRow, previous: i32) -> NewEvent {
    let p = r.to_proto();
    event(
        tenant,
        r.holder_id,
        Ev::ConsentChanged(ev::ConsentChanged {
            customer_id: r.holder_id.to_string(),
            consent_record_id: r.consent_record_id.to_string(),
            channel: p.channel,
            purpose: p.purpose,
            status: i32::from(r.status),
            previous_status: previous,
            source: r.source.clone(),
            effective_time: Some(timestamp(r.effective_time)),
        }),
    )
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_consent(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    holder: Uuid,
    channel: i16,
    purpose: i16,
    status: i16,
    source: &str,
    evidence: &str,
    effective_time: DateTime<Utc>,
    recorded_by: &str,
) -> Result<ConsentRow> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO consent_records (tenant_id, consent_record_id, customer_id, holder_id, channel, purpose, status, source, evidence, effective_time, recorded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
        consent_cols!()
    ))
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(customer)
    .bind(holder)
    .bind(channel)
    .bind(purpose)
    .bind(status)
    .bind(source)
    .bind(evidence)
    .bind(effective_time)
    .bind(recorded_by)
    .fetch_one(&mut *conn)
    .await?)
}
