//! Background re-scoring: the customers queued by the feeds (new
//! purchases, contacts that change their cost to serve, merges) scored again
//! with the models, settings, tier thresholds and cost basis of the tenant's
//! last ScoreCustomers run, batch by batch.

use super::*;

/// Re-scores queued customers of one tenant in batches until its queue is
/// empty (or a new run changed the state, when the next round picks up).
pub async fn rescore_tenant(
    pool: &PgPool,
    interaction: &Interaction,
    tenant: Uuid,
) -> Result<(), ApiError> {
    let ctx = CallContext {
        tenant_id: tenant,
        principal: "valuation".into(),
        // Exports name the models' own zone.
        time_zone: None,
    };
    loop {
        let mut conn = pool.acquire().await?;
        let Some(Scoring {
            run: state,
            models,
            settings,
            thresholds,
        }) = current_scoring(&mut conn, tenant).await?
        else {
            return Ok(());
        };
        drop(conn);
        let queued = store::queued(pool, tenant, RESCORE_BATCH).await?;
        if queued.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = queued.iter().map(|q| q.customer_id).collect();
        let up_to = queued
            .iter()
            .map(|q| q.enqueue_time)
            .max()
            .unwrap_or_else(Utc::now);
        let reasons: HashMap<Uuid, String> = queued
            .iter()
            .filter_map(|q| q.reason.clone().map(|r| (q.customer_id, r)))
            .collect();
        let score_time = now();
        let mut conn = pool.acquire().await?;
        let basis = Basis::of(
            &mut conn,
            tenant,
            score_time,
            &models.currency,
            &state,
            &ids,
        )
        .await?;
        drop(conn);
        let summaries = interaction
            .export(&ctx, export_request(&models, score_time, Some(ids.clone())))
            .await?;
        let (m, st) = (models.clone(), settings);
        let computed = tokio::task::spawn_blocking(move || compute(inputs_of(&summaries), &m, &st))
            .await
            .map_err(ApiError::internal)??;
        let rows: Vec<ValueRow> = computed
            .iter()
            .map(|c| {
                row(
                    c,
                    thresholds.tier(c.scored.clv),
                    &models,
                    &settings,
                    score_time,
                    basis.as_ref(),
                )
            })
            .collect();
        let present: HashSet<Uuid> = rows.iter().map(|r| r.customer_id).collect();
        let absent: Vec<Uuid> = ids
            .iter()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();

        let mut tx = pool.begin().await?;
        store::write_lock(&mut tx, tenant).await?;
        let current = store::scoring_state(&mut tx, tenant).await?;
        if current.map(|c| c.run_id) != Some(state.run_id) {
            // A run committed meanwhile: score again with its state.
            continue;
        }
        let touched: Vec<Uuid> = present.iter().copied().collect();
        let old = store::briefs_of(&mut tx, tenant, &touched).await?;
        store::write_values(&mut tx, tenant, &rows, true).await?;
        let deleted = store::delete_values(&mut tx, tenant, &absent).await?;
        let mut list: Vec<NewEvent> = rows
            .iter()
            .filter(|r| changed(old.get(&r.customer_id), r))
            .map(|r| value_event(tenant, r))
            .collect();
        list.extend(deleted.iter().map(|id| {
            removed_event(
                tenant,
                *id,
                events::removal_reason(reasons.get(id).map(String::as_str)),
            )
        }));
        append_chunked(&mut tx, &list).await?;
        store::dequeue(&mut tx, tenant, &ids, up_to).await?;
        tx.commit().await?;
    }
}

/// Runs the background re-scoring until shutdown.
pub async fn rescore_loop(pool: PgPool, interaction: Interaction, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        match store::queued_tenants(&pool).await {
            Ok(tenants) => {
                for tenant in tenants {
                    if let Err(e) = rescore_tenant(&pool, &interaction, tenant).await {
                        tracing::warn!(%tenant, error = %e, "background re-scoring failed; retrying");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the re-scoring queue"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESCORE_POLL) => {}
            _ = shutdown.wait() => break,
        }
    }
}
