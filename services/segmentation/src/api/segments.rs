//! Writing segments: create, update, and changes to a static segment's members.

use super::*;

impl SegmentationApi {
    pub(super) async fn create(
        &self,
        ctx: CallContext,
        r: pb::CreateSegmentRequest,
    ) -> Result<pb::Segment, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let Some(s) = r.segment.as_ref() else {
            return Err(ApiError::invalid("segment", "required"));
        };
        if let Some(p) = check_name(&s.name) {
            v.add("segment.name", p);
        }
        if let Some(p) = check_description(&s.description) {
            v.add("segment.description", p);
        }
        if let Some(p) = check_approach(s.marketing_approach) {
            v.add("segment.marketing_approach", p);
        }
        if let Some(p) = check_request_id(&r.request_id) {
            v.add("request_id", p);
        }
        let kind = SegmentKind::try_from(s.kind).unwrap_or(SegmentKind::Unspecified);
        let kind_str = Kind::from_proto(kind);
        if kind_str.is_none() {
            v.add("segment.kind", "required: DYNAMIC, SNAPSHOT or STATIC");
        }
        let interval = match check_refresh_interval(kind, s.refresh_interval.as_ref()) {
            Ok(i) => i,
            Err(p) => {
                v.add("segment.refresh_interval", p);
                None
            }
        };
        let mut parsed = None;
        if kind == SegmentKind::Static {
            if !s.rule_text.is_empty() || s.rule.is_some() {
                v.add(
                    if s.rule_text.is_empty() {
                        "segment.rule"
                    } else {
                        "segment.rule_text"
                    },
                    "a STATIC segment has no rule: leave rule_text and rule empty",
                );
            }
        } else if kind_str.is_some() {
            parsed = parse_rule(
                &mut v,
                &s.rule_text,
                s.rule.as_ref(),
                "segment.rule_text",
                "segment.rule",
            );
            if s.rule_text.is_empty() && s.rule.is_none() {
                v.add(
                    "segment.rule_text",
                    "required for a DYNAMIC or SNAPSHOT segment: give rule_text or rule",
                );
            }
        }
        v.finish()?;
        let Some(kind_str) = kind_str else {
            return Err(ApiError::invalid("segment.kind", "required"));
        };

        let catalog = self.catalog(&ctx).await?;
        let mut tx = self.pool.begin().await?;
        store::lock_tenant(&mut tx, tenant).await?;
        let names = store::segment_names(&mut tx, tenant).await?;
        let mut expr = None;
        if let Some((mut e, form)) = parsed {
            let field = if form == "text" {
                "segment.rule_text"
            } else {
                "segment.rule"
            };
            check_rule(&mut e, &catalog, &names, field)?;
            expr = Some(e);
        }
        let fp = fingerprint(s);
        if !r.request_id.is_empty()
            && let Some((stored_fp, id)) =
                store::request_key(&mut tx, tenant, &r.request_id).await?
        {
            if stored_fp != fp {
                return Err(ApiError::AlreadyExists(format!(
                    "request_id {:?} was used for a different segment; use a new request_id",
                    r.request_id
                )));
            }
            return self.output(&mut tx, tenant, id).await;
        }
        let id = Uuid::now_v7();
        if !r.request_id.is_empty()
            && !store::save_request_key(&mut tx, tenant, &r.request_id, &fp, id).await?
        {
            return Err(ApiError::Aborted(
                "another call with this request_id is in progress; retry".into(),
            ));
        }
        let new = store::NewSegment {
            segment_id: id,
            name: s.name.clone(),
            description: s.description.clone(),
            kind: kind_str,
            marketing_approach: s.marketing_approach as i16,
            rule: expr.as_ref().map(engine::encode_rule),
            refresh_interval_seconds: interval,
        };
        if let Err(e) = store::insert_segment(&mut tx, tenant, &new).await {
            if is_unique_violation(&e, None) {
                return Err(ApiError::AlreadyExists(format!(
                    "a segment named {:?} exists; choose another name or update that segment",
                    s.name
                )));
            }
            return Err(e.into());
        }
        if let Some(e) = &expr {
            store::set_refs(&mut tx, tenant, id, &engine::referenced_ids(e)).await?;
            let now = Utc::now();
            let compiled = Compiled {
                id,
                name: s.name.clone(),
                expr: e.clone(),
            };
            engine::evaluate_segment(
                &mut tx,
                tenant,
                &compiled,
                &catalog,
                now,
                MembershipChangeReason::SegmentCreated,
            )
            .await?;
            store::set_refreshed(
                &mut tx,
                tenant,
                id,
                now,
                engine::next_refresh(kind_str, interval, now),
            )
            .await?;
        }
        let row = self.load(&mut tx, tenant, id).await?;
        let mut names = names;
        names.insert(id, row.name.clone());
        feed::append(
            &mut tx,
            &[NewEvent::new(
                tenant,
                "segment",
                id.to_string(),
                "SegmentCreated",
                &envelope(segmentation_event::Event::SegmentCreated(segment_event(
                    &row, &names, None,
                ))),
            )],
        )
        .await?;
        tx.commit().await?;
        Ok(segment_proto(&row, &names))
    }

    pub(super) async fn update(
        &self,
        ctx: CallContext,
        r: pb::UpdateSegmentRequest,
    ) -> Result<pb::UpdateSegmentResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let Some(s) = r.segment.as_ref() else {
            return Err(ApiError::invalid("segment", "required"));
        };
        let id = parse_uuid(&mut v, "segment.segment_id", &s.segment_id);
        let paths: Vec<String> = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        for (f, d) in check_mask(&paths) {
            v.add(f, d);
        }
        v.finish()?;
        let Some(id) = id else {
            return Err(ApiError::invalid("segment.segment_id", "required"));
        };
        let has = |p: &str| paths.iter().any(|x| x == p);
        let catalog = if has("rule") || has("rule_text") {
            Some(self.catalog(&ctx).await?)
        } else {
            None
        };

        let mut tx = self.pool.begin().await?;
        store::lock_tenant(&mut tx, tenant).await?;
        let Some(mut row) = store::segment(&mut tx, tenant, id, true).await? else {
            return Err(ApiError::not_found("segment", id.to_string()));
        };
        if !s.etag.is_empty() && s.etag != seg::etag(row.version) {
            return Err(ApiError::Aborted(format!(
                "segment {id} changed since etag {:?} (now {:?}): get it again and retry",
                s.etag,
                seg::etag(row.version)
            )));
        }
        let kind = row.kind.to_proto();
        let mut v = Violations::new();
        if has("name") {
            match check_name(&s.name) {
                Some(p) => v.add("segment.name", p),
                None => row.name = s.name.clone(),
            }
        }
        if has("description") {
            match check_description(&s.description) {
                Some(p) => v.add("segment.description", p),
                None => row.description = s.description.clone(),
            }
        }
        if has("marketing_approach") {
            match check_approach(s.marketing_approach) {
                Some(p) => v.add("segment.marketing_approach", p),
                None => row.marketing_approach = s.marketing_approach as i16,
            }
        }
        if has("refresh_interval") {
            match check_refresh_interval(kind, s.refresh_interval.as_ref()) {
                Ok(i) => {
                    row.refresh_interval_seconds = i;
                    row.next_refresh_time = engine::next_refresh(
                        row.kind,
                        i,
                        row.last_refresh_time.unwrap_or_else(Utc::now),
                    );
                }
                Err(p) => v.add("segment.refresh_interval", p),
            }
        }
        let rule_path = if has("rule_text") {
            Some("rule_text")
        } else if has("rule") {
            Some("rule")
        } else {
            None
        };
        let mut new_rule = None;
        if let Some(path) = rule_path {
            let text = if path == "rule_text" {
                s.rule_text.as_str()
            } else {
                ""
            };
            let proto = if path == "rule" {
                s.rule.as_ref()
            } else {
                None
            };
            if kind == SegmentKind::Static {
                if !text.is_empty() || proto.is_some() {
                    v.add(format!("segment.{path}"), "a STATIC segment has no rule");
                }
            } else if text.is_empty() && proto.is_none() {
                v.add(
                    format!("segment.{path}"),
                    "a DYNAMIC or SNAPSHOT segment needs a rule; it cannot be cleared",
                );
            } else {
                new_rule = parse_rule(&mut v, text, proto, "segment.rule_text", "segment.rule");
            }
        }
        v.finish()?;
        let names = store::segment_names(&mut tx, tenant).await?;
        let mut refs_changed = None;
        if let (Some((mut e, form)), Some(cat)) = (new_rule, catalog.as_ref()) {
            let field = if form == "text" {
                "segment.rule_text"
            } else {
                "segment.rule"
            };
            check_rule(&mut e, cat, &names, field)?;
            let refs = engine::referenced_ids(&e);
            let mut graph = store::reference_graph(&mut tx, tenant).await?;
            graph.remove(&id);
            if let Some(cycle) = find_cycle(&graph, id, &refs) {
                let chain: Vec<String> = cycle
                    .iter()
                    .map(|c| {
                        if *c == id {
                            row.name.clone()
                        } else {
                            names.get(c).cloned().unwrap_or_else(|| c.to_string())
                        }
                    })
                    .collect();
                return Err(ApiError::invalid(
                    field,
                    format!("in_segment makes a cycle: {}", chain.join(" -> ")),
                ));
            }
            row.rule = Some(engine::encode_rule(&e));
            refs_changed = Some((refs, e));
        }
        if let Err(e) = store::update_segment(&mut tx, tenant, &row).await {
            if is_unique_violation(&e, None) {
                return Err(ApiError::AlreadyExists(format!(
                    "a segment named {:?} exists; choose another name",
                    row.name
                )));
            }
            return Err(e.into());
        }
        let (mut entered, mut exited) = (0, 0);
        if let Some((refs, e)) = refs_changed {
            store::set_refs(&mut tx, tenant, id, &refs).await?;
            if kind == SegmentKind::Dynamic
                && let Some(cat) = catalog.as_ref()
            {
                let now = Utc::now();
                let compiled = Compiled {
                    id,
                    name: row.name.clone(),
                    expr: e,
                };
                let (en, ex, _) = engine::evaluate_segment(
                    &mut tx,
                    tenant,
                    &compiled,
                    cat,
                    now,
                    MembershipChangeReason::RuleChanged,
                )
                .await?;
                (entered, exited) = (en, ex);
                store::set_refreshed(
                    &mut tx,
                    tenant,
                    id,
                    now,
                    engine::next_refresh(row.kind, row.refresh_interval_seconds, now),
                )
                .await?;
            }
        }
        let row = self.load(&mut tx, tenant, id).await?;
        let mut names = names;
        names.insert(id, row.name.clone());
        feed::append(
            &mut tx,
            &[NewEvent::new(
                tenant,
                "segment",
                id.to_string(),
                "SegmentUpdated",
                &envelope(segmentation_event::Event::SegmentUpdated(segment_event(
                    &row,
                    &names,
                    Some(&paths),
                ))),
            )],
        )
        .await?;
        tx.commit().await?;
        Ok(pb::UpdateSegmentResponse {
            segment: Some(segment_proto(&row, &names)),
            entered_count: entered,
            exited_count: exited,
        })
    }

    pub(super) async fn members_change(
        &self,
        ctx: CallContext,
        segment_id: &str,
        customer_ids: &[String],
        add: bool,
    ) -> Result<(i64, i64, Vec<String>, i64), ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let id = parse_uuid(&mut v, "segment_id", segment_id);
        if customer_ids.is_empty() {
            v.add("customer_ids", "give 1 to 1,000 customer ids");
        } else if customer_ids.len() > 1000 {
            v.add(
                "customer_ids",
                format!("at most 1,000 customer ids, got {}", customer_ids.len()),
            );
        }
        let mut ids = Vec::new();
        for (i, c) in customer_ids.iter().enumerate() {
            match Uuid::parse_str(c) {
                Ok(u) => ids.push(u),
                Err(_) => v.add(
                    format!("customer_ids[{i}]"),
                    format!("must be a UUID, got {c:?}"),
                ),
            }
        }
        v.finish()?;
        let Some(id) = id else {
            return Err(ApiError::invalid("segment_id", "required"));
        };
        ids.sort();
        ids.dedup();
        let mut tx = self.pool.begin().await?;
        store::lock_tenant(&mut tx, tenant).await?;
        let Some(row) = store::segment(&mut tx, tenant, id, true).await? else {
            return Err(ApiError::not_found("segment", id.to_string()));
        };
        if row.kind != Kind::Static {
            return Err(ApiError::FailedPrecondition(format!(
                "segment {:?} is {}: only STATIC segments take members by hand",
                row.name,
                row.kind.label()
            )));
        }
        let now = Utc::now();
        let (changed, other, missing) = if add {
            let known = store::known_among(&mut tx, tenant, &ids).await?;
            let missing: Vec<String> = ids
                .iter()
                .filter(|i| !known.contains(i))
                .map(Uuid::to_string)
                .collect();
            let added = store::add_members(&mut tx, tenant, id, &known, now).await?;
            let already = (known.len() - added.len()) as i64;
            (added, already, missing)
        } else {
            let removed = store::remove_members(&mut tx, tenant, id, &ids).await?;
            let not = (ids.len() - removed.len()) as i64;
            (removed, not, Vec::new())
        };
        let changes: Vec<Change> = changed
            .iter()
            .map(|c| Change {
                segment_id: id,
                segment_name: row.name.clone(),
                customer_id: *c,
                entered: add,
                reason: MembershipChangeReason::Manual,
            })
            .collect();
        store::record_changes(&mut tx, tenant, &changes, now).await?;
        if !changed.is_empty() {
            let cat = engine::catalog(&mut tx, tenant).await?;
            engine::follow_dependents(&mut tx, tenant, &[id], &changed, &cat, now).await?;
        }
        let count = store::member_count(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok((changed.len() as i64, other, missing, count))
    }
}
