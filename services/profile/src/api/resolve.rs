//! ResolveIdentities: many identifier sets resolved together, and the
//! validation and answers ResolveIdentity shares with it.

use super::*;

impl ProfileApi {
    pub(super) async fn resolve_many(
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
        let resolved = crate::resolution::resolve_many(&self.pool, tenant, &valid).await?;
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
}

/// Most identifier sets of one ResolveIdentities call.
pub const MAX_RESOLVE_SETS: usize = 1000;

/// Validates one ResolveIdentity request: its identifiers (normalised,
/// duplicates collapsed) and traits. Problems go to `v`, with field paths
/// relative to the request.
pub(super) fn validate_resolve(
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
pub(super) fn resolution_result(r: store::Resolution) -> resolve_identity_response::Result {
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
pub(super) fn refusal(e: ApiError) -> resolve_identities_result::Result {
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
