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
        let new = crate::segments::NewSegment {
            name: s.name.clone(),
            description: s.description.clone(),
            kind: kind_str,
            marketing_approach: s.marketing_approach as i16,
            refresh_interval_seconds: interval,
            rule: parsed,
            request: (!r.request_id.is_empty()).then(|| (r.request_id.clone(), fingerprint(s))),
        };
        let (row, names) = crate::segments::create(&self.pool, tenant, new, &catalog).await?;
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
        let id = v.uuid("segment.segment_id", &s.segment_id);
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

        let edit = |row: &mut SegmentRow| {
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
            Ok(new_rule)
        };
        let done = crate::segments::update(
            &self.pool,
            tenant,
            id,
            &s.etag,
            &paths,
            catalog.as_ref(),
            edit,
        )
        .await?;
        let (row, names) = (done.row, done.names);
        let (entered, exited) = (done.entered, done.exited);
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
        let id = v.uuid("segment_id", segment_id);
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
        crate::segments::change_members(&self.pool, tenant, id, &ids, add).await
    }
}
