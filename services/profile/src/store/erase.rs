//! Erasure: a customer's personal data removed for good, and what was
//! redacted.

use super::*;

/// EraseCustomer: removes every piece of personal data of the customer and of
/// the customers merged into it, scrubs their feed payloads, keeps
/// tombstones, and emits CustomerErased for each. Returns the erased merged
/// ids and the erase time.
pub async fn erase(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    reference: &str,
) -> Result<(Vec<Uuid>, DateTime<Utc>)> {
    let mut tx = pool.begin().await?;
    let r = match lock_row(&mut tx, tenant, id).await? {
        Some(r) => r,
        None => return Err(customer_not_found(id)),
    };
    if r.status == CustomerStatus::Erased {
        tx.rollback().await?;
        return Ok((Vec::new(), r.erase_time.unwrap_or(r.update_time)));
    }
    if r.status == CustomerStatus::Merged {
        let survivor = follow(&mut tx, tenant, id).await?;
        return Err(precondition(format!(
            "customer {id} was merged into customer {survivor}: erase the survivor (which erases {id} too), or unmerge {id} first"
        )));
    }
    let merged = merged_into_each(&mut tx, tenant, &[id])
        .await?
        .remove(&id)
        .unwrap_or_default();
    let mut all = vec![id];
    all.extend(merged.iter().copied());
    let all_text: Vec<String> = all.iter().map(Uuid::to_string).collect();

    // Values to look for in feed payloads that belong to other aggregates.
    let values: Vec<String> = sqlx::query_scalar(
        "SELECT value FROM identifiers WHERE tenant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(tenant)
    .bind(&all)
    .fetch_all(&mut *tx)
    .await?;
    let mut needles = all_text.clone();
    needles.extend(values.into_iter().filter(|v| v.chars().count() >= 5));

    sqlx::query("DELETE FROM identifiers WHERE tenant_id = $1 AND customer_id = ANY($2)")
        .bind(tenant)
        .bind(&all)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM consent_records WHERE tenant_id = $1 AND (holder_id = ANY($2) OR customer_id = ANY($2))",
    )
    .bind(tenant)
    .bind(&all)
    .execute(&mut *tx)
    .await?;
    let counterparts: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM contact_links WHERE tenant_id = $1 AND (person_id = ANY($2) OR organization_id = ANY($2))
         RETURNING CASE WHEN person_id = ANY($2) THEN organization_id ELSE person_id END",
    )
    .bind(tenant)
    .bind(&all)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM merges WHERE tenant_id = $1 AND (merged_customer_id = ANY($2) OR survivor_customer_id = ANY($2))",
    )
    .bind(tenant)
    .bind(&all)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM not_duplicates WHERE tenant_id = $1 AND (first_id = ANY($2) OR second_id = ANY($2))",
    )
    .bind(tenant)
    .bind(&all)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND customer_ids && $2")
        .bind(tenant)
        .bind(&all)
        .execute(&mut *tx)
        .await?;
    let now: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE customers SET status = 'erased', data = '{}', merged_into = NULL, delete_time = NULL,
                stage_set_time = NULL, erase_time = now(), version = version + 1, update_time = now(),
                erase_reference = CASE WHEN customer_id = $3 THEN nullif($4, '') END
          WHERE tenant_id = $1 AND customer_id = ANY($2) RETURNING erase_time",
    )
    .bind(tenant)
    .bind(&all)
    .bind(id)
    .bind(reference)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .next()
    .unwrap_or_else(Utc::now);
    let remaining: Vec<Uuid> = counterparts
        .into_iter()
        .filter(|c| !all.contains(c))
        .collect();
    touch(&mut tx, tenant, &remaining).await?;

    // The feed: the customers' own events, the contact-link events naming
    // them, and any other event that mentions them or their identifiers
    // become `redacted` (protobuf keeps strings as plain UTF-8, so a byte
    // search finds every id and identifier an encoded event holds).
    // Committed events get their sequences first (readers number them), so
    // none that is still waiting for one escapes.
    feed::number_committed(&mut *tx, tenant).await?;
    let mentioned: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT sequence, aggregate_type, aggregate_id, event FROM outbox_events
          WHERE tenant_id = $1 AND event IS NOT NULL AND sequence IS NOT NULL
            AND ((aggregate_type = 'customer' AND aggregate_id = ANY($2))
                 OR EXISTS (SELECT 1 FROM unnest($3::text[]) n
                             WHERE position(convert_to(n, 'UTF8') in event) > 0))",
    )
    .bind(tenant)
    .bind(&all_text)
    .bind(&needles)
    .fetch_all(&mut *tx)
    .await?;
    let (erased_events, mentioning) = erasure_redactions(&mentioned, &all_text);
    feed::redact::<ProfileEvent>(&mut tx, tenant, &erased_events, RedactionReason::Erased).await?;
    feed::redact::<ProfileEvent>(
        &mut tx,
        tenant,
        &mentioning,
        RedactionReason::MentionedErased,
    )
    .await?;
    // Events appended before typed events (JSON payloads).
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id', aggregate_id, 'erased', true)
          WHERE tenant_id = $1 AND event IS NULL AND aggregate_type = 'customer' AND aggregate_id = ANY($2)",
    )
    .bind(tenant)
    .bind(&all_text)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id',
                    CASE WHEN payload->>'person_customer_id' = ANY($2) THEN payload->>'person_customer_id'
                         ELSE payload->>'organization_customer_id' END, 'erased', true)
          WHERE tenant_id = $1 AND event IS NULL AND aggregate_type = 'contact_link'
            AND (payload->>'person_customer_id' = ANY($2) OR payload->>'organization_customer_id' = ANY($2))",
    )
    .bind(tenant)
    .bind(&all_text)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id', aggregate_id, 'redacted', true)
          WHERE tenant_id = $1 AND event IS NULL
            AND NOT (aggregate_type = 'customer' AND aggregate_id = ANY($2))
            AND payload->'erased' IS NULL
            AND EXISTS (SELECT 1 FROM unnest($3::text[]) n WHERE strpos(payload::text, n) > 0)",
    )
    .bind(tenant)
    .bind(&all_text)
    .bind(&needles)
    .execute(&mut *tx)
    .await?;
    let events = all
        .iter()
        .map(|c| {
            event(
                tenant,
                *c,
                Ev::CustomerErased(ev::CustomerErased {
                    customer_id: c.to_string(),
                    erase_time: Some(timestamp(now)),
                }),
            )
        })
        .collect();
    append(&mut tx, events).await?;
    tx.commit().await?;
    Ok((merged, now))
}

/// A feed event to reduce: (sequence, subject id).
type Redaction = (i64, String);

/// Which feed events an erasure of `erased` (customer ids) reduces, given the
/// events that mention any of them or their identifiers: (events about an
/// erased customer, events of others that mention one), each as (sequence,
/// subject id). Already reduced events are left as they are.
fn erasure_redactions(
    mentioned: &[(i64, String, String, Vec<u8>)],
    erased: &[String],
) -> (Vec<Redaction>, Vec<Redaction>) {
    let mut about = Vec::new();
    let mut others = Vec::new();
    for (seq, aggregate_type, aggregate_id, body) in mentioned {
        if let Ok(ProfileEvent {
            event: Some(Ev::Redacted(_)),
        }) = ProfileEvent::decode(body.as_slice())
        {
            continue;
        }
        if aggregate_type == "customer" && erased.contains(aggregate_id) {
            about.push((*seq, aggregate_id.clone()));
            continue;
        }
        if aggregate_type == "contact_link" {
            let link = match ProfileEvent::decode(body.as_slice()) {
                Ok(ProfileEvent {
                    event: Some(Ev::ContactLinked(l)),
                }) => l
                    .link
                    .map(|l| (l.person_customer_id, l.organization_customer_id)),
                Ok(ProfileEvent {
                    event: Some(Ev::ContactUnlinked(u)),
                }) => Some((u.person_customer_id, u.organization_customer_id)),
                _ => None,
            };
            if let Some(id) =
                link.and_then(|(p, o)| [p, o].into_iter().find(|id| erased.contains(id)))
            {
                about.push((*seq, id));
                continue;
            }
        }
        others.push((*seq, aggregate_id.clone()));
    }
    (about, others)
}
