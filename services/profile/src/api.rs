//! The gRPC handlers of `rapport.profile.v1.ProfileService`: each reads the
//! caller's tenant, validates the request (one field violation per problem),
//! calls the store and maps the result.

use std::collections::HashSet;

use chrono::Utc;
use rapport_kit::context::CallContext;
use rapport_kit::page::PageTokens;
use rapport_kit::page::page_size;
use rapport_kit::server::ServiceRuntime;
use rapport_kit::shutdown::Shutdown;
use rapport_kit::{ApiError, Violations};
use rapport_proto::rapport::profile::v1::profile_service_server::ProfileService;
use rapport_proto::rapport::profile::v1::*;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::attributes::{self, AttributeRules, Definitions};
use crate::domain::consent as consent_rules;
use crate::domain::customer::{self as cust, Ident, Source, Validated};
use crate::domain::{mask, normalize};
use crate::error::{Error, invalid};
use crate::store::{self, RequestKey};

/// The service, as registered on the server.
#[derive(Debug, Clone)]
pub struct ProfileApi {
    pool: PgPool,
    tokens: PageTokens,
    shutdown: Shutdown,
}

impl ProfileApi {
    /// Handlers sharing the service's pool, page-token key and shutdown.
    pub fn new(runtime: &ServiceRuntime) -> Self {
        Self {
            pool: runtime.pool.clone(),
            tokens: runtime.page_tokens.clone(),
            shutdown: runtime.shutdown.clone(),
        }
    }

    async fn definitions(&self, tenant: Uuid) -> Result<Definitions, Error> {
        let mut conn = self.pool.acquire().await?;
        store::definitions(&mut conn, tenant).await
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        scope: &str,
        token: &str,
    ) -> Result<Option<T>, Error> {
        Ok(self.tokens.decode(scope, token)?)
    }

    fn encode<T: Serialize>(&self, scope: &str, cursor: Option<T>) -> String {
        cursor.map_or_else(String::new, |c| self.tokens.encode(scope, &c))
    }
}

/// The tenant of a call.
fn tenant<T>(req: &Request<T>) -> Result<Uuid, Status> {
    Ok(CallContext::of(req)?.tenant_id)
}

/// A required UUID field.
fn parse_id(v: &mut Violations, field: &str, raw: &str) -> Uuid {
    let t = raw.trim();
    if t.is_empty() {
        v.add(field, "required: a customer id (UUID)");
        return Uuid::nil();
    }
    match Uuid::parse_str(t) {
        Ok(u) => u,
        Err(_) => {
            v.add(field, "not a UUID");
            Uuid::nil()
        }
    }
}

/// One required UUID, failing at once.
fn one_id(field: &str, raw: &str) -> Result<Uuid, Status> {
    let mut v = Violations::new();
    let id = parse_id(&mut v, field, raw);
    v.finish()?;
    Ok(id)
}

/// The scope a page token is bound to: tenant, method and filters.
fn scope(tenant: Uuid, method: &str, filters: &impl Serialize) -> String {
    format!(
        "{tenant}/{method}/{}",
        serde_json::to_string(filters).unwrap_or_default()
    )
}

/// An optional idempotency key with the fingerprint of the normalised request.
fn request_key(v: &mut Violations, raw: &str, request: &impl Serialize) -> Option<RequestKey> {
    let t = raw.trim();
    if t.is_empty() {
        return None;
    }
    if t.chars().count() > 64 || t.chars().any(char::is_control) {
        v.add(
            "request_id",
            "1 to 64 characters without control characters",
        );
        return None;
    }
    let body = serde_json::to_vec(request).unwrap_or_default();
    Some(RequestKey {
        request_id: t.to_string(),
        fingerprint: hex::encode(Sha256::digest(&body)),
    })
}

fn enum_ok(v: &mut Violations, field: &str, value: i32, max: i32, required: bool) {
    if value < 0 || value > max {
        v.add(field, "not a known value");
    } else if required && value == 0 {
        v.add(field, "required");
    }
}

fn validate_customer(
    c: &Customer,
    prefix: &str,
    kind: i32,
    defs: &Definitions,
    enforce_required: bool,
    source: Source,
    v: &mut Violations,
) -> Validated {
    let existing = Default::default();
    cust::validate(
        c,
        prefix,
        kind,
        defs,
        AttributeRules {
            existing: &existing,
            enforce_required,
        },
        source,
        store::today(),
        v,
    )
}

fn fingerprint_of(v: &Validated) -> Value {
    json!({"kind": v.kind, "profile": v.profile, "idents": v.idents})
}

fn date_of(v: &mut Violations, field: &str, d: Option<&CalendarDate>) -> Option<normalize::Date> {
    d.and_then(|d| match normalize::date(d.year, d.month, d.day, false) {
        Ok(d) => Some(d),
        Err(e) => {
            v.add(field, e);
            None
        }
    })
}

#[tonic::async_trait]
impl ProfileService for ProfileApi {
    async fn create_customer(
        &self,
        request: Request<CreateCustomerRequest>,
    ) -> Result<Response<CreateCustomerResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let Some(c) = req.customer else {
            return Err(invalid("customer", "required").into());
        };
        let mut v = Violations::new();
        if c.kind != CustomerKind::Person as i32 && c.kind != CustomerKind::Organization as i32 {
            v.add(
                "customer.kind",
                "required: CUSTOMER_KIND_PERSON or CUSTOMER_KIND_ORGANIZATION",
            );
        }
        let defs = self.definitions(tenant).await?;
        let kind = if c.kind == CustomerKind::Organization as i32 {
            c.kind
        } else {
            CustomerKind::Person as i32
        };
        let validated =
            validate_customer(&c, "customer", kind, &defs, true, Source::Customer, &mut v);
        let key = request_key(&mut v, &req.request_id, &fingerprint_of(&validated));
        v.finish()?;
        let stored = store::create_customer(&self.pool, tenant, &validated, key.as_ref()).await?;
        Ok(Response::new(CreateCustomerResponse {
            customer: Some(cust::to_proto(&stored)),
        }))
    }

    async fn get_customer(
        &self,
        request: Request<GetCustomerRequest>,
    ) -> Result<Response<GetCustomerResponse>, Status> {
        let tenant = tenant(&request)?;
        let id = one_id("customer_id", &request.get_ref().customer_id)?;
        let (stored, merged) = store::get_customer(&self.pool, tenant, id).await?;
        Ok(Response::new(GetCustomerResponse {
            customer: Some(cust::to_proto(&stored)),
            merged,
        }))
    }

    async fn batch_get_customers(
        &self,
        request: Request<BatchGetCustomersRequest>,
    ) -> Result<Response<BatchGetCustomersResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.customer_ids.is_empty() {
            v.add("customer_ids", "required: 1 to 1,000 ids");
        }
        if req.customer_ids.len() > 1000 {
            v.add("customer_ids", "at most 1,000 ids");
        }
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        for (i, raw) in req.customer_ids.iter().enumerate() {
            let id = parse_id(&mut v, &format!("customer_ids[{i}]"), raw);
            if seen.insert(id) {
                ids.push(id);
            }
        }
        v.finish()?;
        let (found, missing, merged) = store::batch_get(&self.pool, tenant, &ids).await?;
        Ok(Response::new(BatchGetCustomersResponse {
            customers: found.iter().map(cust::to_proto).collect(),
            missing_customer_ids: missing.iter().map(Uuid::to_string).collect(),
            merged_customer_ids: merged
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }))
    }

    async fn update_customer(
        &self,
        request: Request<UpdateCustomerRequest>,
    ) -> Result<Response<UpdateCustomerResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let Some(c) = req.customer else {
            return Err(invalid("customer", "required").into());
        };
        let id = one_id("customer.customer_id", &c.customer_id)?;
        let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(invalid(
                "update_mask",
                "required: name the fields to update, e.g. \"tags\" (\"*\" for every mutable field)",
            )
            .into());
        }
        let etag = c.etag.clone();
        let apply = Box::new(move |current: &cust::Stored, defs: &Definitions| {
            let mut v = Violations::new();
            let before = cust::fields_to_proto(current.kind, &current.profile, &current.idents);
            let applied = mask::apply(&before, &c, &paths, current.kind, &mut v);
            let next = cust::validate(
                &applied.customer,
                "customer",
                current.kind,
                defs,
                AttributeRules {
                    existing: &current.profile.attributes,
                    enforce_required: applied.touches_attributes,
                },
                Source::Customer,
                store::today(),
                &mut v,
            );
            v.finish().map(|()| next)
        });
        let stored = store::update_customer(&self.pool, tenant, id, &etag, apply).await?;
        Ok(Response::new(UpdateCustomerResponse {
            customer: Some(cust::to_proto(&stored)),
        }))
    }

    async fn delete_customer(
        &self,
        request: Request<DeleteCustomerRequest>,
    ) -> Result<Response<DeleteCustomerResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = one_id("customer_id", &req.customer_id)?;
        let stored = store::set_deleted(&self.pool, tenant, id, req.etag.trim(), true).await?;
        Ok(Response::new(DeleteCustomerResponse {
            customer: Some(cust::to_proto(&stored)),
        }))
    }

    async fn undelete_customer(
        &self,
        request: Request<UndeleteCustomerRequest>,
    ) -> Result<Response<UndeleteCustomerResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let id = one_id("customer_id", &req.customer_id)?;
        let stored = store::set_deleted(&self.pool, tenant, id, req.etag.trim(), false).await?;
        Ok(Response::new(UndeleteCustomerResponse {
            customer: Some(cust::to_proto(&stored)),
        }))
    }

    async fn list_customers(
        &self,
        request: Request<ListCustomersRequest>,
    ) -> Result<Response<ListCustomersResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = page_size(&mut v, req.page_size);
        enum_ok(&mut v, "kind", req.kind, 2, false);
        enum_ok(
            &mut v,
            "relationship_stage",
            req.relationship_stage,
            5,
            false,
        );
        enum_ok(&mut v, "order_by", req.order_by, 4, false);
        let mut contains = Map::new();
        if req.tags.len() > 10 {
            v.add("tags", "at most 10 tags");
        }
        let mut tags = Vec::new();
        for (i, t) in req.tags.iter().enumerate() {
            match normalize::tag(t) {
                Ok(t) => tags.push(Value::String(t)),
                Err(e) => v.add(format!("tags[{i}]"), e),
            }
        }
        if !tags.is_empty() {
            contains.insert("tags".into(), Value::Array(tags));
        }
        if req.relationship_stage > 0 && req.relationship_stage <= 5 {
            contains.insert("relationship_stage".into(), json!(req.relationship_stage));
        }
        match normalize::country_code(&req.country_code) {
            Ok(c) if !c.is_empty() => {
                contains.insert("country_code".into(), Value::String(c));
            }
            Ok(_) => {}
            Err(e) => v.add("country_code", e),
        }
        match normalize::owner_id(&req.owner_id) {
            Ok(o) if !o.is_empty() => {
                contains.insert("owner_id".into(), Value::String(o));
            }
            Ok(_) => {}
            Err(e) => v.add("owner_id", e),
        }
        if req.attribute_filters.len() > 10 {
            v.add("attribute_filters", "at most 10 attribute filters");
        }
        if !req.attribute_filters.is_empty() {
            let defs = self.definitions(tenant).await?;
            let mut attrs = Map::new();
            for (i, f) in req.attribute_filters.iter().enumerate() {
                let Some(def) = defs.get(f.name.trim()) else {
                    v.add(
                        format!("attribute_filters[{i}].name"),
                        "no attribute definition has this name",
                    );
                    continue;
                };
                let Some(value) = &f.value else {
                    v.add(format!("attribute_filters[{i}].value"), "required");
                    continue;
                };
                match attributes::filter_value(value, def) {
                    Ok(val) => {
                        attrs.insert(
                            def.name.clone(),
                            serde_json::to_value(val).unwrap_or_default(),
                        );
                    }
                    Err(e) => v.add(format!("attribute_filters[{i}].value"), e),
                }
            }
            if !attrs.is_empty() {
                contains.insert("attributes".into(), Value::Object(attrs));
            }
        }
        let updated_since = match &req.updated_since {
            None => None,
            Some(t) => match rapport_kit::convert::from_timestamp(t) {
                Some(t) => Some(t),
                None => {
                    v.add("updated_since", "not a valid timestamp");
                    None
                }
            },
        };
        v.finish()?;
        let filter = store::ListFilter {
            kind: req.kind,
            contains: Value::Object(contains),
            updated_since,
            order: req.order_by,
            show_deleted: req.show_deleted,
        };
        let scope = scope(tenant, "ListCustomers", &filter);
        let after: Option<store::ListCursor> = self.decode(&scope, &req.page_token)?;
        let (page, next) =
            store::list_customers(&self.pool, tenant, &filter, after.as_ref(), limit).await?;
        Ok(Response::new(ListCustomersResponse {
            customers: page.iter().map(cust::to_proto).collect(),
            next_page_token: self.encode(&scope, next),
        }))
    }

    async fn search_customers(
        &self,
        request: Request<SearchCustomersRequest>,
    ) -> Result<Response<SearchCustomersResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = page_size(&mut v, req.page_size);
        let query = req.query.trim().to_string();
        let n = query.chars().count();
        if n == 0 || n > 200 {
            v.add("query", "1 to 200 characters");
        }
        if query.chars().any(char::is_control) {
            v.add("query", "must not contain control characters");
        }
        enum_ok(&mut v, "kind", req.kind, 2, false);
        let region = match normalize::country_code(&req.default_country_code) {
            Ok(c) => c,
            Err(e) => {
                v.add("default_country_code", e);
                String::new()
            }
        };
        v.finish()?;
        let email = normalize::email(&query).ok();
        let phone = if query.starts_with('+') || !region.is_empty() {
            normalize::phone(&query, &region).ok()
        } else {
            None
        };
        let scope = scope(
            tenant,
            "SearchCustomers",
            &json!({"q": query, "region": region, "kind": req.kind}),
        );
        let after: Option<store::SearchCursor> = self.decode(&scope, &req.page_token)?;
        let (hits, next) = store::search(
            &self.pool,
            tenant,
            &query,
            email.as_deref(),
            phone.as_deref(),
            req.kind,
            after.as_ref(),
            limit,
        )
        .await?;
        Ok(Response::new(SearchCustomersResponse {
            results: hits
                .iter()
                .map(|(s, score, kind)| SearchCustomersResult {
                    customer: Some(cust::to_proto(s)),
                    score: *score,
                    match_kind: match kind {
                        store::MatchKind::Email => SearchMatchKind::Email,
                        store::MatchKind::Phone => SearchMatchKind::Phone,
                        store::MatchKind::External => SearchMatchKind::ExternalId,
                        store::MatchKind::Name => SearchMatchKind::Name,
                    } as i32,
                })
                .collect(),
            next_page_token: self.encode(&scope, next),
        }))
    }

    async fn resolve_identity(
        &self,
        request: Request<ResolveIdentityRequest>,
    ) -> Result<Response<ResolveIdentityResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let defs = if req.traits.as_ref().is_none_or(|t| t.attributes.is_empty()) {
            Definitions::new()
        } else {
            self.definitions(tenant).await?
        };
        let mut v = Violations::new();
        let (idents, validated) = validate_resolve(&req, &defs, &mut v);
        v.finish()?;
        let resolution =
            store::resolve_identity(&self.pool, tenant, &idents, &validated, req.lookup_only)
                .await?;
        let result = resolution_result(resolution);
        Ok(Response::new(ResolveIdentityResponse {
            result: Some(result),
        }))
    }

    async fn resolve_identities(
        &self,
        request: Request<ResolveIdentitiesRequest>,
    ) -> Result<Response<ResolveIdentitiesResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.requests.is_empty() || req.requests.len() > MAX_RESOLVE_SETS {
            v.add(
                "requests",
                format!("1 to {MAX_RESOLVE_SETS} identifier sets"),
            );
        }
        v.finish()?;
        let defs = if req
            .requests
            .iter()
            .any(|r| r.traits.as_ref().is_some_and(|t| !t.attributes.is_empty()))
        {
            self.definitions(tenant).await?
        } else {
            Definitions::new()
        };
        // Refused sets answer alone; the valid ones are resolved together.
        let mut results: Vec<Option<resolve_identities_result::Result>> =
            vec![None; req.requests.len()];
        let mut valid = Vec::new();
        let mut positions = Vec::new();
        for (n, r) in req.requests.iter().enumerate() {
            let mut v = Violations::new();
            let (idents, validated) = validate_resolve(r, &defs, &mut v);
            match v.finish() {
                Ok(()) => {
                    positions.push(n);
                    valid.push((idents, validated, r.lookup_only));
                }
                Err(e) => results[n] = Some(refusal(e)),
            }
        }
        let resolved = store::resolve_identities(&self.pool, tenant, &valid).await?;
        for (n, r) in positions.into_iter().zip(resolved) {
            results[n] = Some(match r {
                Some(r) => match resolution_result(r) {
                    resolve_identity_response::Result::Resolved(c) => {
                        resolve_identities_result::Result::Resolved(c)
                    }
                    resolve_identity_response::Result::Conflict(c) => {
                        resolve_identities_result::Result::Conflict(c)
                    }
                },
                None => refusal(ApiError::NotFound {
                    resource: "customer",
                    id: "for these identifiers".into(),
                }),
            });
        }
        Ok(Response::new(ResolveIdentitiesResponse {
            results: results
                .into_iter()
                .map(|result| ResolveIdentitiesResult { result })
                .collect(),
        }))
    }

    async fn import_customers(
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

    async fn find_duplicates(
        &self,
        request: Request<FindDuplicatesRequest>,
    ) -> Result<Response<FindDuplicatesResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = page_size(&mut v, req.page_size);
        let only = if req.customer_id.trim().is_empty() {
            None
        } else {
            Some(parse_id(&mut v, "customer_id", &req.customer_id))
        };
        if !(0.0..=1.0).contains(&req.min_score) {
            v.add("min_score", "must be in 0..=1");
        }
        v.finish()?;
        let min_score = if req.min_score == 0.0 {
            0.5
        } else {
            req.min_score
        };
        let only = match only {
            Some(id) => {
                let mut conn = self.pool.acquire().await.map_err(Error::from)?;
                Some(store::follow(&mut conn, tenant, id).await?)
            }
            None => None,
        };
        let scope = scope(
            tenant,
            "FindDuplicates",
            &json!({"customer_id": only, "min_score": min_score}),
        );
        let after: Option<(f64, String, String)> = self.decode(&scope, &req.page_token)?;
        let all = store::find_duplicates(&self.pool, tenant, only, min_score).await?;
        let start = match &after {
            None => 0,
            Some((score, first, second)) => all
                .iter()
                .position(|c| {
                    c.score < *score
                        || (c.score == *score
                            && (&c.first_customer_id, &c.second_customer_id) > (first, second))
                })
                .unwrap_or(all.len()),
        };
        let limit = usize::try_from(limit).unwrap_or(50);
        let page: Vec<DuplicateCandidate> = all.iter().skip(start).take(limit).cloned().collect();
        let next = if start + page.len() < all.len() {
            page.last().map(|c| {
                (
                    c.score,
                    c.first_customer_id.clone(),
                    c.second_customer_id.clone(),
                )
            })
        } else {
            None
        };
        Ok(Response::new(FindDuplicatesResponse {
            candidates: page,
            next_page_token: self.encode(&scope, next),
        }))
    }

    async fn merge_customers(
        &self,
        request: Request<MergeCustomersRequest>,
    ) -> Result<Response<MergeCustomersResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let survivor = parse_id(&mut v, "survivor_customer_id", &req.survivor_customer_id);
        let merged = parse_id(&mut v, "merged_customer_id", &req.merged_customer_id);
        if v.is_empty() && survivor == merged {
            v.add(
                "merged_customer_id",
                "must differ from survivor_customer_id",
            );
        }
        let key = request_key(
            &mut v,
            &req.request_id,
            &json!({"survivor": survivor, "merged": merged, "etag": req.survivor_etag}),
        );
        v.finish()?;
        let (stored, time) = store::merge(
            &self.pool,
            tenant,
            survivor,
            merged,
            req.survivor_etag.trim(),
            key.as_ref(),
        )
        .await?;
        Ok(Response::new(MergeCustomersResponse {
            survivor: Some(cust::to_proto(&stored)),
            merge_time: Some(rapport_kit::convert::timestamp(time)),
        }))
    }

    async fn unmerge_customers(
        &self,
        request: Request<UnmergeCustomersRequest>,
    ) -> Result<Response<UnmergeCustomersResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let merged = parse_id(&mut v, "merged_customer_id", &req.merged_customer_id);
        let key = request_key(&mut v, &req.request_id, &json!({"merged": merged}));
        v.finish()?;
        let (restored, survivor) = store::unmerge(&self.pool, tenant, merged, key.as_ref()).await?;
        Ok(Response::new(UnmergeCustomersResponse {
            restored: Some(cust::to_proto(&restored)),
            survivor: Some(cust::to_proto(&survivor)),
        }))
    }

    async fn mark_not_duplicate(
        &self,
        request: Request<MarkNotDuplicateRequest>,
    ) -> Result<Response<MarkNotDuplicateResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let a = parse_id(&mut v, "first_customer_id", &req.first_customer_id);
        let b = parse_id(&mut v, "second_customer_id", &req.second_customer_id);
        if v.is_empty() && a == b {
            v.add("second_customer_id", "must differ from first_customer_id");
        }
        v.finish()?;
        let (first, second, time) = store::mark_not_duplicate(&self.pool, tenant, a, b).await?;
        Ok(Response::new(MarkNotDuplicateResponse {
            first_customer_id: first.to_string(),
            second_customer_id: second.to_string(),
            mark_time: Some(rapport_kit::convert::timestamp(time)),
        }))
    }

    async fn erase_customer(
        &self,
        request: Request<EraseCustomerRequest>,
    ) -> Result<Response<EraseCustomerResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse_id(&mut v, "customer_id", &req.customer_id);
        let reference = match normalize::text(&req.request_reference, 128) {
            Ok(r) => r,
            Err(e) => {
                v.add("request_reference", e);
                String::new()
            }
        };
        v.finish()?;
        let (merged, time) = store::erase(&self.pool, tenant, id, &reference).await?;
        Ok(Response::new(EraseCustomerResponse {
            customer_id: id.to_string(),
            erased_merged_customer_ids: merged.iter().map(Uuid::to_string).collect(),
            erase_time: Some(rapport_kit::convert::timestamp(time)),
        }))
    }

    async fn link_contact(
        &self,
        request: Request<LinkContactRequest>,
    ) -> Result<Response<LinkContactResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let Some(l) = req.link else {
            return Err(invalid("link", "required").into());
        };
        let mut v = Violations::new();
        let person = parse_id(&mut v, "link.person_customer_id", &l.person_customer_id);
        let organization = parse_id(
            &mut v,
            "link.organization_customer_id",
            &l.organization_customer_id,
        );
        enum_ok(&mut v, "link.role", l.role, 6, true);
        let job_title = match normalize::text(&l.job_title, 200) {
            Ok(t) => t,
            Err(e) => {
                v.add("link.job_title", e);
                String::new()
            }
        };
        let start = date_of(&mut v, "link.start_date", l.start_date.as_ref());
        let end = date_of(&mut v, "link.end_date", l.end_date.as_ref());
        if let (Some(s), Some(e)) = (start.and_then(|d| d.naive()), end.and_then(|d| d.naive()))
            && e < s
        {
            v.add("link.end_date", "must not be before start_date");
        }
        v.finish()?;
        let (row, created) = store::link_contact(
            &self.pool,
            tenant,
            &store::LinkInput {
                person,
                organization,
                role: l.role as i16,
                job_title,
                start_date: start,
                end_date: end,
                primary: l.primary,
            },
        )
        .await?;
        Ok(Response::new(LinkContactResponse {
            link: Some(row.to_proto()),
            created,
        }))
    }

    async fn unlink_contact(
        &self,
        request: Request<UnlinkContactRequest>,
    ) -> Result<Response<UnlinkContactResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let person = parse_id(&mut v, "person_customer_id", &req.person_customer_id);
        let organization = parse_id(
            &mut v,
            "organization_customer_id",
            &req.organization_customer_id,
        );
        enum_ok(&mut v, "role", req.role, 6, true);
        v.finish()?;
        let row = store::unlink_contact(&self.pool, tenant, person, organization, req.role as i16)
            .await?;
        Ok(Response::new(UnlinkContactResponse {
            link: Some(row.to_proto()),
        }))
    }

    async fn list_contacts(
        &self,
        request: Request<ListContactsRequest>,
    ) -> Result<Response<ListContactsResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = page_size(&mut v, req.page_size);
        let id = parse_id(
            &mut v,
            "organization_customer_id",
            &req.organization_customer_id,
        );
        enum_ok(&mut v, "role", req.role, 6, false);
        v.finish()?;
        let scope = scope(
            tenant,
            "ListContacts",
            &json!({"id": id, "role": req.role, "ended": req.include_ended}),
        );
        let after: Option<store::LinkCursor> = self.decode(&scope, &req.page_token)?;
        let (rows, next) = store::list_links(
            &self.pool,
            tenant,
            id,
            true,
            req.role as i16,
            req.include_ended,
            after.as_ref(),
            limit,
        )
        .await?;
        Ok(Response::new(ListContactsResponse {
            links: rows.iter().map(store::LinkRow::to_proto).collect(),
            next_page_token: self.encode(&scope, next),
        }))
    }

    async fn list_organizations(
        &self,
        request: Request<ListOrganizationsRequest>,
    ) -> Result<Response<ListOrganizationsResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = page_size(&mut v, req.page_size);
        let id = parse_id(&mut v, "person_customer_id", &req.person_customer_id);
        v.finish()?;
        let scope = scope(
            tenant,
            "ListOrganizations",
            &json!({"id": id, "ended": req.include_ended}),
        );
        let after: Option<store::LinkCursor> = self.decode(&scope, &req.page_token)?;
        let (rows, next) = store::list_links(
            &self.pool,
            tenant,
            id,
            false,
            0,
            req.include_ended,
            after.as_ref(),
            limit,
        )
        .await?;
        Ok(Response::new(ListOrganizationsResponse {
            links: rows.iter().map(store::LinkRow::to_proto).collect(),
            next_page_token: self.encode(&scope, next),
        }))
    }

    async fn set_consent(
        &self,
        request: Request<SetConsentRequest>,
    ) -> Result<Response<SetConsentResponse>, Status> {
        let ctx = CallContext::of(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer = parse_id(&mut v, "customer_id", &req.customer_id);
        enum_ok(&mut v, "channel", req.channel, 6, true);
        enum_ok(&mut v, "purpose", req.purpose, 4, true);
        enum_ok(&mut v, "status", req.status, 3, true);
        let source = req.source.trim().to_string();
        let n = source.chars().count();
        if n == 0 || n > 128 || source.chars().any(char::is_control) {
            v.add(
                "source",
                "required: 1 to 128 characters, e.g. \"web-signup-form\"",
            );
        } else if source.starts_with("rapport:") {
            v.add("source", "sources starting with \"rapport:\" are reserved");
        }
        let evidence = match normalize::text(&req.evidence, 1000) {
            Ok(e) => e,
            Err(e) => {
                v.add("evidence", e);
                String::new()
            }
        };
        let effective_time = match &req.effective_time {
            None => None,
            Some(t) => match rapport_kit::convert::from_timestamp(t) {
                Some(t) if t > Utc::now() + store::consent_future_slack() => {
                    v.add(
                        "effective_time",
                        "may not be more than 5 minutes in the future",
                    );
                    None
                }
                Some(t) => Some(t),
                None => {
                    v.add("effective_time", "not a valid timestamp");
                    None
                }
            },
        };
        let input = store::ConsentInput {
            customer,
            channel: req.channel as i16,
            purpose: req.purpose as i16,
            status: req.status as i16,
            source,
            evidence,
            effective_time,
        };
        let key = request_key(&mut v, &req.request_id, &input);
        v.finish()?;
        let (row, changed) = store::set_consent(
            &self.pool,
            ctx.tenant_id,
            &ctx.principal,
            &input,
            key.as_ref(),
        )
        .await?;
        Ok(Response::new(SetConsentResponse {
            record: Some(row.to_proto()),
            changed,
        }))
    }

    async fn check_consent(
        &self,
        request: Request<CheckConsentRequest>,
    ) -> Result<Response<CheckConsentResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer = parse_id(&mut v, "customer_id", &req.customer_id);
        enum_ok(&mut v, "channel", req.channel, 6, true);
        enum_ok(&mut v, "purpose", req.purpose, 4, true);
        v.finish()?;
        let (deleted, own, any) = store::consent_state(
            &self.pool,
            tenant,
            customer,
            req.channel as i16,
            req.purpose as i16,
        )
        .await?;
        let decision = consent_rules::check(
            deleted,
            req.purpose,
            own.as_ref().map(store::ConsentRow::rec).as_ref(),
            any.as_ref().map(store::ConsentRow::rec).as_ref(),
        );
        let deciding = match decision.deciding_own {
            Some(true) => own,
            Some(false) => any,
            None => None,
        };
        let explanation = consent_rules::explain(
            &decision,
            req.channel,
            req.purpose,
            deciding.as_ref().map_or("", |r| r.source.as_str()),
            deciding.as_ref().map(|r| r.effective_time),
        );
        Ok(Response::new(CheckConsentResponse {
            allowed: decision.allowed,
            reason: decision.reason as i32,
            deciding_record: deciding.as_ref().map(store::ConsentRow::to_proto),
            explanation,
        }))
    }

    async fn list_consent_history(
        &self,
        request: Request<ListConsentHistoryRequest>,
    ) -> Result<Response<ListConsentHistoryResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = page_size(&mut v, req.page_size);
        let customer = parse_id(&mut v, "customer_id", &req.customer_id);
        enum_ok(&mut v, "channel", req.channel, 6, false);
        enum_ok(&mut v, "purpose", req.purpose, 4, false);
        v.finish()?;
        let scope = scope(
            tenant,
            "ListConsentHistory",
            &json!({"id": customer, "channel": req.channel, "purpose": req.purpose}),
        );
        let after: Option<store::ConsentCursor> = self.decode(&scope, &req.page_token)?;
        let (rows, next) = store::consent_history(
            &self.pool,
            tenant,
            customer,
            req.channel as i16,
            req.purpose as i16,
            after.as_ref(),
            limit,
        )
        .await?;
        Ok(Response::new(ListConsentHistoryResponse {
            records: rows.iter().map(store::ConsentRow::to_proto).collect(),
            next_page_token: self.encode(&scope, next),
        }))
    }

    async fn create_attribute_definition(
        &self,
        request: Request<CreateAttributeDefinitionRequest>,
    ) -> Result<Response<CreateAttributeDefinitionResponse>, Status> {
        let tenant = tenant(&request)?;
        let Some(d) = request.into_inner().definition else {
            return Err(invalid("definition", "required").into());
        };
        let mut v = Violations::new();
        let name = d.name.trim().to_string();
        if !attributes::valid_name(&name) {
            v.add(
                "definition.name",
                "1 to 64 characters: a lower-case letter, then lower-case letters, digits and \"_\"",
            );
        }
        enum_ok(&mut v, "definition.type", d.r#type, 5, true);
        let description = match attributes::description(&d.description) {
            Ok(t) => t,
            Err(e) => {
                v.add("definition.description", e);
                String::new()
            }
        };
        v.finish()?;
        let row = store::create_definition(
            &self.pool,
            tenant,
            &name,
            d.r#type as i16,
            d.required,
            &description,
        )
        .await?;
        Ok(Response::new(CreateAttributeDefinitionResponse {
            definition: Some(row.to_proto()),
        }))
    }

    async fn list_attribute_definitions(
        &self,
        request: Request<ListAttributeDefinitionsRequest>,
    ) -> Result<Response<ListAttributeDefinitionsResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = page_size(&mut v, req.page_size);
        v.finish()?;
        let scope = scope(
            tenant,
            "ListAttributeDefinitions",
            &json!({"deprecated": req.show_deprecated}),
        );
        let after: Option<String> = self.decode(&scope, &req.page_token)?;
        let (rows, next) = store::list_definitions(
            &self.pool,
            tenant,
            req.show_deprecated,
            after.as_deref(),
            limit,
        )
        .await?;
        Ok(Response::new(ListAttributeDefinitionsResponse {
            definitions: rows.iter().map(store::DefinitionRow::to_proto).collect(),
            next_page_token: self.encode(&scope, next),
        }))
    }

    async fn update_attribute_definition(
        &self,
        request: Request<UpdateAttributeDefinitionRequest>,
    ) -> Result<Response<UpdateAttributeDefinitionResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let Some(d) = req.definition else {
            return Err(invalid("definition", "required").into());
        };
        let mut v = Violations::new();
        let name = d.name.trim().to_string();
        if name.is_empty() {
            v.add("definition.name", "required");
        } else if !attributes::valid_name(&name) {
            v.add(
                "definition.name",
                "not an attribute name: a lower-case letter, then lower-case letters, digits and \"_\"",
            );
        }
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "required: [\"description\"]");
        }
        for (i, p) in paths.iter().enumerate() {
            if p != "description" {
                v.add(
                    format!("update_mask.paths[{i}]"),
                    "only \"description\" can be updated",
                );
            }
        }
        let description = match attributes::description(&d.description) {
            Ok(t) => t,
            Err(e) => {
                v.add("definition.description", e);
                String::new()
            }
        };
        v.finish()?;
        let row =
            store::change_definition(&self.pool, tenant, &name, Some(&description), d.etag.trim())
                .await?;
        Ok(Response::new(UpdateAttributeDefinitionResponse {
            definition: Some(row.to_proto()),
        }))
    }

    async fn deprecate_attribute_definition(
        &self,
        request: Request<DeprecateAttributeDefinitionRequest>,
    ) -> Result<Response<DeprecateAttributeDefinitionResponse>, Status> {
        let tenant = tenant(&request)?;
        let name = request.get_ref().name.trim().to_string();
        if name.is_empty() {
            return Err(invalid("name", "required").into());
        }
        if !attributes::valid_name(&name) {
            return Err(invalid(
                "name",
                "not an attribute name: a lower-case letter, then lower-case letters, digits and \"_\"",
            )
            .into());
        }
        let row = store::change_definition(&self.pool, tenant, &name, None, "").await?;
        Ok(Response::new(DeprecateAttributeDefinitionResponse {
            definition: Some(row.to_proto()),
        }))
    }

    type WatchChangesStream =
        futures::stream::BoxStream<'static, Result<WatchChangesResponse, Status>>;

    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let stream = rapport_kit::feed::serve_watch::<rapport_kit::feed::ProfileFeed>(
            self.pool.clone(),
            crate::SCHEMA.schema,
            request,
            self.shutdown.clone(),
        )?;
        Ok(Response::new(stream))
    }
}

/// How many ImportCustomers batches of one stream run at once.
const IMPORT_PIPELINE: usize = 2;

/// What two batches of one import must not share to run at once: an
/// identifier (kind, system, value) or a request_id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ImportKey {
    Identifier(i16, String, String),
    RequestId(String),
}

fn import_keys_of(batch: &[crate::import::Item]) -> HashSet<ImportKey> {
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
struct ImportRun {
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
async fn take_import_results(
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

/// Most identifier sets of one ResolveIdentities call.
pub const MAX_RESOLVE_SETS: usize = 1000;

/// Validates one ResolveIdentity request: its identifiers (normalised,
/// duplicates collapsed) and traits. Problems go to `v`, with field paths
/// relative to the request.
fn validate_resolve(
    req: &ResolveIdentityRequest,
    defs: &Definitions,
    v: &mut Violations,
) -> (Vec<Ident>, cust::Validated) {
    if req.identifiers.is_empty() || req.identifiers.len() > 20 {
        v.add("identifiers", "1 to 20 identifiers");
    }
    let traits = req.traits.clone().unwrap_or_default();
    enum_ok(v, "traits.kind", traits.kind, 2, false);
    let kind = if traits.kind == CustomerKind::Organization as i32 {
        traits.kind
    } else {
        CustomerKind::Person as i32
    };
    let validated = validate_customer(&traits, "traits", kind, defs, false, Source::Traits, v);
    let region = validated.profile.country_code.clone();
    let mut idents: Vec<Ident> = Vec::new();
    let mut seen = HashSet::new();
    for (i, id) in req.identifiers.iter().enumerate() {
        match cust::normalize_identifier(id, &region) {
            Ok(ident) => {
                if seen.insert(ident.key()) {
                    idents.push(ident);
                }
            }
            Err((sub, e)) => v.add(format!("identifiers[{i}].{sub}"), e),
        }
    }
    (idents, validated)
}

/// The contract's form of a resolution.
fn resolution_result(r: store::Resolution) -> resolve_identity_response::Result {
    match r {
        store::Resolution::Resolved {
            customer,
            created,
            attached,
        } => resolve_identity_response::Result::Resolved(ResolvedCustomer {
            customer: Some(cust::to_proto(&customer)),
            created,
            attached_identifiers: attached.iter().map(Ident::to_identifier).collect(),
        }),
        store::Resolution::Conflict(matches) => {
            resolve_identity_response::Result::Conflict(IdentityConflict {
                matches: matches
                    .into_iter()
                    .map(|(id, list)| IdentityConflictMatch {
                        customer_id: id.to_string(),
                        identifiers: list.iter().map(Ident::to_identifier).collect(),
                    })
                    .collect(),
            })
        }
    }
}

/// One refused set of ResolveIdentities: the status ResolveIdentity would
/// have answered for it, as data.
fn refusal(e: ApiError) -> resolve_identities_result::Result {
    let code = e.code() as i32;
    let (message, field_violations) = match e {
        ApiError::InvalidArgument(list) => (
            "invalid identifier set".to_string(),
            list.into_iter()
                .map(|x| ResolveFieldViolation {
                    field: x.field,
                    description: x.description,
                })
                .collect(),
        ),
        other => (Status::from(other).message().to_string(), Vec::new()),
    };
    resolve_identities_result::Result::Refused(ResolveRefusal {
        code,
        message,
        field_violations,
    })
}

/// Most items per ImportCustomers message.
pub const MAX_IMPORT_ITEMS: usize = 1000;
/// Most rejections listed in an ImportCustomers answer.
const MAX_IMPORT_REJECTIONS: usize = 10_000;

fn import_reason(r: crate::import::Refused) -> ImportRejectionReason {
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
fn validate_import_item(
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
