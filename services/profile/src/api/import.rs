//! ImportCustomers: a stream of customers upserted by their identifiers, in
//! pipelined batches, with per-item results.

use super::*;

impl ProfileApi {
    pub(super) async fn import(
        &self,
        request: Request<tonic::Streaming<ImportCustomersRequest>>,
    ) -> Result<Response<ImportCustomersResponse>, Status> {
        let tenant = tenant(&request)?;
        let mut stream = request.into_inner();
        let defs = self.definitions(tenant).await?;
        let mut answer = ImportCustomersResponse::default();
        let mut next_index = 0i64;
        // Batches run up to IMPORT_PIPELINE at a time, while the next message
        // is read and validated; a batch waits for those in flight that share
        // an identifier or request_id with it, so each identifier's items
        // apply in stream order. Results are taken in stream order.
        let mut in_flight: std::collections::VecDeque<ImportRun> =
            std::collections::VecDeque::new();
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::OutOfRange => {
                    return Err(ApiError::invalid("items", s.message().to_string()).into());
                }
                Err(s) => return Err(s),
            };
            if msg.items.len() > MAX_IMPORT_ITEMS {
                return Err(ApiError::invalid(
                    "items",
                    format!(
                        "a message holds {} items; at most {MAX_IMPORT_ITEMS} per message",
                        msg.items.len()
                    ),
                )
                .into());
            }
            let mut batch = Vec::with_capacity(msg.items.len());
            let mut refused = Vec::new();
            for item in msg.items {
                let index = next_index;
                next_index += 1;
                match validate_import_item(index, item, &defs) {
                    Ok(i) => batch.push(i),
                    Err(r) => refused.push(r),
                }
            }
            let keys = import_keys_of(&batch);
            while in_flight.len() >= IMPORT_PIPELINE
                || in_flight.iter().any(|r| !r.keys.is_disjoint(&keys))
            {
                let Some(done) = in_flight.pop_front() else {
                    break;
                };
                take_import_results(&mut answer, done).await?;
            }
            let pool = self.pool.clone();
            let run = tokio::spawn(
                async move {
                    let outcomes = crate::import::import_batch(&pool, tenant, &batch).await?;
                    Ok((batch, outcomes))
                }
                .instrument(tracing::Span::current()),
            );
            in_flight.push_back(ImportRun { keys, run, refused });
        }
        while let Some(done) = in_flight.pop_front() {
            take_import_results(&mut answer, done).await?;
        }
        Ok(Response::new(answer))
    }
}

/// How many ImportCustomers batches of one stream run at once.
pub(super) const IMPORT_PIPELINE: usize = 2;

/// What two batches of one import must not share to run at once: an
/// identifier (kind, system, value) or a request_id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum ImportKey {
    Identifier(i16, String, String),
    RequestId(String),
}

pub(super) fn import_keys_of(batch: &[crate::import::Item]) -> HashSet<ImportKey> {
    let mut keys = HashSet::new();
    for item in batch {
        for i in &item.create.idents {
            keys.insert(ImportKey::Identifier(
                i.kind,
                i.system.clone(),
                i.value.clone(),
            ));
        }
        if let Some(k) = &item.key {
            keys.insert(ImportKey::RequestId(k.request_id.clone()));
        }
    }
    keys
}

/// What a running ImportCustomers batch gives.
type ImportResult = Result<(Vec<crate::import::Item>, Vec<crate::import::Outcome>), Error>;

/// One batch of an import stream, running: its keys, its task and the items
/// refused before it ran. Dropped unfinished (the call failed or went away),
/// the task is stopped and its transaction rolled back.
pub(super) struct ImportRun {
    keys: HashSet<ImportKey>,
    run: tokio::task::JoinHandle<ImportResult>,
    refused: Vec<ImportRejection>,
}

impl Drop for ImportRun {
    fn drop(&mut self) {
        self.run.abort();
    }
}

/// Adds a finished batch's outcomes (and the items refused before it ran)
/// to the answer.
pub(super) async fn take_import_results(
    answer: &mut ImportCustomersResponse,
    mut done: ImportRun,
) -> Result<(), Status> {
    let (batch, outcomes) = (&mut done.run)
        .await
        .map_err(|e| ApiError::internal(format!("an import batch stopped: {e}")))??;
    let mut rejected: Vec<ImportRejection> = std::mem::take(&mut done.refused);
    for (item, o) in batch.iter().zip(outcomes) {
        match o {
            crate::import::Outcome::Created(_) => answer.created_count += 1,
            crate::import::Outcome::Updated(_) => answer.updated_count += 1,
            crate::import::Outcome::Unchanged(_) => answer.unchanged_count += 1,
            crate::import::Outcome::Rejected {
                reason,
                message,
                violations,
            } => rejected.push(ImportRejection {
                index: item.index,
                request_id: item
                    .key
                    .as_ref()
                    .map(|k| k.request_id.clone())
                    .unwrap_or_default(),
                reason: import_reason(reason) as i32,
                message,
                field_violations: violations
                    .into_iter()
                    .map(|(field, description)| ResolveFieldViolation { field, description })
                    .collect(),
            }),
        }
    }
    rejected.sort_by_key(|r| r.index);
    answer.rejected_count += rejected.len() as i64;
    for r in rejected {
        if answer.rejections.len() < MAX_IMPORT_REJECTIONS {
            answer.rejections.push(r);
        } else {
            answer.rejections_truncated = true;
        }
    }
    Ok(())
}

/// Most items per ImportCustomers message.
pub const MAX_IMPORT_ITEMS: usize = 1000;
/// Most rejections listed in an ImportCustomers answer.
pub(super) const MAX_IMPORT_REJECTIONS: usize = 10_000;

pub(super) fn import_reason(r: crate::import::Refused) -> ImportRejectionReason {
    use crate::import::Refused;
    match r {
        Refused::Invalid => ImportRejectionReason::Invalid,
        Refused::IdentityConflict => ImportRejectionReason::IdentityConflict,
        Refused::CustomerDeleted => ImportRejectionReason::CustomerDeleted,
        Refused::RequestIdConflict => ImportRejectionReason::RequestIdConflict,
    }
}

/// Validates one import item: the customer as CreateCustomer would, at
/// least one identifier, and a mask without identifier paths.
pub(super) fn validate_import_item(
    index: i64,
    item: ImportCustomerItem,
    defs: &Definitions,
) -> Result<crate::import::Item, ImportRejection> {
    let mut v = Violations::new();
    let c = item.customer.unwrap_or_default();
    if c.kind != CustomerKind::Person as i32 && c.kind != CustomerKind::Organization as i32 {
        v.add(
            "customer.kind",
            "required: CUSTOMER_KIND_PERSON or CUSTOMER_KIND_ORGANIZATION",
        );
    }
    let kind = if c.kind == CustomerKind::Organization as i32 {
        c.kind
    } else {
        CustomerKind::Person as i32
    };
    let create = validate_customer(&c, "customer", kind, defs, true, Source::Customer, &mut v);
    if c.emails.is_empty() && c.phones.is_empty() && c.external_identifiers.is_empty() {
        v.add(
            "customer",
            "at least one identifier (emails, phones or external_identifiers) is required to match the customer",
        );
    }
    let mut paths: Vec<String> = item.update_mask.map(|m| m.paths).unwrap_or_default();
    for (i, p) in paths.iter().enumerate() {
        if mask::IDENTIFIER_PATHS.contains(&p.trim()) {
            v.add(
                format!("update_mask.paths[{i}]"),
                "identifiers are never replaced by an import: new ones are attached",
            );
        }
    }
    if paths.is_empty() {
        paths = mask::import_paths(&c);
    }
    let key = request_key(
        &mut v,
        &item.request_id,
        &json!({"customer": fingerprint_of(&create), "paths": paths}),
    );
    match v.finish() {
        Ok(()) => Ok(crate::import::Item {
            index,
            key,
            create,
            customer: c,
            paths,
        }),
        Err(e) => {
            let violations = match e {
                ApiError::InvalidArgument(list) => list,
                _ => Vec::new(),
            };
            Err(ImportRejection {
                index,
                request_id: item.request_id.trim().to_string(),
                reason: ImportRejectionReason::Invalid as i32,
                message: "invalid item".into(),
                field_violations: violations
                    .into_iter()
                    .map(|x| ResolveFieldViolation {
                        field: x.field,
                        description: x.description,
                    })
                    .collect(),
            })
        }
    }
}
