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

mod import;
mod listing;
mod resolve;

pub use import::MAX_IMPORT_ITEMS;
pub use resolve::MAX_RESOLVE_SETS;
use resolve::*;

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
    v.uuid(field, raw.trim()).unwrap_or_else(Uuid::nil)
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
        let stored = crate::customers::create(&self.pool, tenant, &validated, key.as_ref()).await?;
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
        let stored = crate::customers::update(&self.pool, tenant, id, &etag, apply).await?;
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
        let stored =
            crate::customers::set_deleted(&self.pool, tenant, id, req.etag.trim(), true).await?;
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
        let stored =
            crate::customers::set_deleted(&self.pool, tenant, id, req.etag.trim(), false).await?;
        Ok(Response::new(UndeleteCustomerResponse {
            customer: Some(cust::to_proto(&stored)),
        }))
    }

    async fn list_customers(
        &self,
        request: Request<ListCustomersRequest>,
    ) -> Result<Response<ListCustomersResponse>, Status> {
        self.list(request).await
    }

    async fn search_customers(
        &self,
        request: Request<SearchCustomersRequest>,
    ) -> Result<Response<SearchCustomersResponse>, Status> {
        self.search(request).await
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
            crate::resolution::resolve(&self.pool, tenant, &idents, &validated, req.lookup_only)
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
        self.resolve_many(request).await
    }

    async fn import_customers(
        &self,
        request: Request<tonic::Streaming<ImportCustomersRequest>>,
    ) -> Result<Response<ImportCustomersResponse>, Status> {
        self.import(request).await
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
                Some(store::chain_end(&mut conn, tenant, id).await?)
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
        let (stored, time) = crate::merge::merge(
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
        let (restored, survivor) =
            crate::merge::unmerge(&self.pool, tenant, merged, key.as_ref()).await?;
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
        let (first, second, time) =
            crate::merge::mark_not_duplicate(&self.pool, tenant, a, b).await?;
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
        let (merged, time) = crate::erase::erase(&self.pool, tenant, id, &reference).await?;
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
        let (row, created) = crate::contacts::link(
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
        let row =
            crate::contacts::unlink(&self.pool, tenant, person, organization, req.role as i16)
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
        let (row, changed) = crate::consent::set(
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
        let row = crate::definitions::create(
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
        let row = crate::definitions::change(
            &self.pool,
            tenant,
            &name,
            Some(&description),
            d.etag.trim(),
        )
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
        let row = crate::definitions::change(&self.pool, tenant, &name, None, "").await?;
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
