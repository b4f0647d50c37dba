//! ListCustomers and SearchCustomers: filtered, ordered pages of customers.

use super::*;

impl ProfileApi {
    pub(super) async fn list(
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

    pub(super) async fn search(
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
}
