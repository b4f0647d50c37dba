//! Reading about segments: previews, membership history, explanations.

use super::*;

impl SegmentationApi {
    pub(super) async fn preview(
        &self,
        ctx: CallContext,
        r: pb::PreviewSegmentRequest,
    ) -> Result<pb::PreviewSegmentResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        v.check(
            !(0..=100).contains(&r.sample_size),
            "sample_size",
            format!("must be 0 to 100, got {}", r.sample_size),
        );
        let parsed = match &r.rule_definition {
            Some(preview_segment_request::RuleDefinition::RuleText(t)) => {
                if t.is_empty() {
                    v.add("rule_text", "required: the rule to evaluate");
                    None
                } else {
                    parse_rule(&mut v, t, None, "rule_text", "rule")
                }
            }
            Some(preview_segment_request::RuleDefinition::Rule(p)) => {
                parse_rule(&mut v, "", Some(p), "rule_text", "rule")
            }
            None => {
                v.add("rule_text", "give the rule in rule_text or in rule");
                None
            }
        };
        v.finish()?;
        let Some((mut expr, form)) = parsed else {
            return Err(ApiError::invalid("rule_text", "required"));
        };
        let catalog = self.catalog(&ctx).await?;
        let mut conn = self.pool.acquire().await?;
        let names = store::segment_names(&mut conn, tenant).await?;
        check_rule(
            &mut expr,
            &catalog,
            &names,
            if form == "text" { "rule_text" } else { "rule" },
        )?;
        let now = Utc::now();
        let sample = if r.sample_size == 0 {
            10
        } else {
            i64::from(r.sample_size)
        };
        let sql = rule::compile_sql(&expr, &catalog, now);
        let (count, ids) = store::preview(&mut conn, tenant, &sql, sample).await?;
        let total = store::customer_count(&mut conn, tenant).await?;
        Ok(pb::PreviewSegmentResponse {
            match_count: count,
            customer_count: total,
            sample_customer_ids: ids.iter().map(Uuid::to_string).collect(),
            rule_text: rule::print(&expr, &namer(&names)),
            rule: Some(rule::to_proto(&expr)),
            evaluate_time: Some(ts(now)),
        })
    }

    pub(super) async fn rule_matches(
        &self,
        ctx: CallContext,
        r: pb::ListRuleMatchesRequest,
    ) -> Result<pb::ListRuleMatchesResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        v.check(r.page_size < 0, "page_size", "must not be negative");
        let limit = match r.page_size {
            n if n <= 0 => 1000,
            n => i64::from(n.min(10_000)),
        };
        let parsed = match &r.rule_definition {
            Some(list_rule_matches_request::RuleDefinition::RuleText(t)) if !t.is_empty() => {
                parse_rule(&mut v, t, None, "rule_text", "rule")
            }
            Some(list_rule_matches_request::RuleDefinition::Rule(p)) => {
                parse_rule(&mut v, "", Some(p), "rule_text", "rule")
            }
            _ => {
                v.add("rule_text", "give the rule in rule_text or in rule");
                None
            }
        };
        v.finish()?;
        let Some((mut expr, form)) = parsed else {
            return Err(ApiError::invalid("rule_text", "required"));
        };
        let catalog = self.catalog(&ctx).await?;
        let mut conn = self.pool.acquire().await?;
        let names = store::segment_names(&mut conn, tenant).await?;
        check_rule(
            &mut expr,
            &catalog,
            &names,
            if form == "text" { "rule_text" } else { "rule" },
        )?;
        // Tokens are for this tenant and this rule (as printed: the same rule
        // in either form).
        let printed = rule::print(&expr, &namer(&names));
        let scope = format!(
            "{tenant}/rule_matches/{}",
            Sha256::digest(printed.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let after = self.page_tokens.decode::<Uuid>(&scope, &r.page_token)?;
        let now = Utc::now();
        let sql = rule::compile_sql(&expr, &catalog, now);
        let mut ids = store::rule_matches(&mut conn, tenant, &sql, after, limit + 1).await?;
        let next = self
            .page_tokens
            .trim_page(&scope, &mut ids, limit, |id| *id);
        Ok(pb::ListRuleMatchesResponse {
            customer_ids: ids.iter().map(Uuid::to_string).collect(),
            next_page_token: next,
            evaluate_time: Some(ts(now)),
        })
    }

    pub(super) async fn history(
        &self,
        ctx: CallContext,
        r: pb::GetSegmentHistoryRequest,
    ) -> Result<pb::GetSegmentHistoryResponse, Status> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let id = v.uuid("segment_id", &r.segment_id);
        let g = match HistoryGranularity::try_from(r.granularity) {
            Ok(HistoryGranularity::Unspecified) => HistoryGranularity::Day,
            Ok(g) => g,
            Err(_) => {
                v.add(
                    "granularity",
                    format!("unknown granularity {}", r.granularity),
                );
                HistoryGranularity::Day
            }
        };
        let now = Utc::now();
        let end = r.end_time.as_ref().map(from_timestamp);
        let start = r.start_time.as_ref().map(from_timestamp);
        if matches!(end, Some(None)) {
            v.add("end_time", "not a valid timestamp");
        }
        if matches!(start, Some(None)) {
            v.add("start_time", "not a valid timestamp");
        }
        v.finish().map_err(status)?;
        let Some(id) = id else {
            return Err(ApiError::invalid("segment_id", "required").into());
        };
        let end = seg::ceil_to(end.flatten().unwrap_or(now), g);
        let start = seg::floor_to(start.flatten().unwrap_or(end - seg::step(g) * 30), g);
        if start >= end {
            return Err(ApiError::invalid("start_time", "must be before end_time").into());
        }
        let n = (end - start).num_seconds() / seg::step(g).num_seconds().max(1);
        if n > 1000 {
            return Err(ApiError::invalid(
                "granularity",
                format!("the range holds {n} intervals, more than 1,000: choose a coarser granularity or a shorter range"),
            )
            .into());
        }
        if start < now - Duration::days(400) {
            return Err(Status::out_of_range(
                "the history is kept for 400 days: start_time must be within the last 400 days",
            ));
        }
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let row = self.load(&mut conn, tenant, id).await.map_err(status)?;
        let rows = store::history(&mut conn, tenant, id, start, end, seg::step(g))
            .await
            .map_err(db)?;
        let after_end = store::net_changes_since(&mut conn, tenant, id, end)
            .await
            .map_err(db)?;
        let current = row.member_count;
        // Walk back from the end: the count at the end of each interval.
        let mut points = Vec::with_capacity(rows.len());
        let mut net_after = after_end;
        for (s, en, ex) in rows.iter().rev() {
            let e = *s + seg::step(g);
            let count = if e > now {
                current
            } else {
                current - net_after
            };
            points.push(pb::SegmentSizePoint {
                start_time: Some(ts(*s)),
                end_time: Some(ts(e)),
                member_count: count,
                entered_count: *en,
                exited_count: *ex,
            });
            net_after += en - ex;
        }
        points.reverse();
        points.retain(|p| {
            p.end_time
                .as_ref()
                .and_then(from_timestamp)
                .is_some_and(|e| e > row.create_time)
        });
        Ok(pb::GetSegmentHistoryResponse { points })
    }

    pub(super) async fn explain(
        &self,
        ctx: CallContext,
        r: pb::ExplainMembershipRequest,
    ) -> Result<pb::ExplainMembershipResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let customer = v.uuid("customer_id", &r.customer_id);
        let segment = v.uuid("segment_id", &r.segment_id);
        v.finish()?;
        let (Some(customer), Some(segment)) = (customer, segment) else {
            return Err(ApiError::invalid("customer_id", "required"));
        };
        let catalog = self.catalog(&ctx).await?;
        let mut conn = self.pool.acquire().await?;
        let row = self.load(&mut conn, tenant, segment).await?;
        let Some(features) = store::features_json(&mut conn, tenant, customer).await? else {
            return Err(ApiError::not_found("customer", customer.to_string()));
        };
        let enter = store::membership(&mut conn, tenant, segment, customer).await?;
        let now = Utc::now();
        let mut out = pb::ExplainMembershipResponse {
            customer_id: customer.to_string(),
            segment_id: segment.to_string(),
            kind: row.kind.to_proto() as i32,
            member: enter.is_some(),
            enter_time: enter.map(ts),
            rule_held: false,
            explanation: None,
            evaluate_time: Some(ts(now)),
        };
        let Some(expr) = row.rule.as_deref().and_then(engine::decode_rule) else {
            return Ok(out);
        };
        let mut facts = Facts {
            values: rule::facts_from_row(&features, &catalog),
            consents: rule::consents_from_row(&features),
            ..Default::default()
        };
        facts.events = store::customer_events(&mut conn, tenant, customer).await?;
        facts.segments = store::segments_of(&mut conn, tenant, customer)
            .await?
            .into_iter()
            .collect();
        for field in rule::ranked_fields(&expr) {
            if let Some((greater, smaller, total)) =
                store::rank_of(&mut conn, tenant, customer, &field).await?
            {
                facts.ranks.insert(
                    field,
                    RankFacts {
                        greater,
                        smaller,
                        total,
                    },
                );
            }
        }
        let names = store::segment_names(&mut conn, tenant).await?;
        out.rule_held = rule::evaluate(&expr, &facts, now);
        out.explanation = Some(rule::explain(&expr, &facts, now, &namer(&names)));
        Ok(out)
    }
}
