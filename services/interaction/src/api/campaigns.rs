//! The gRPC handlers of `rapport.interaction.v1.CampaignService`.

use super::*;

/// `rapport.interaction.v1.CampaignService`.
#[derive(Clone)]
pub struct CampaignApi {
    pool: PgPool,
    page_tokens: PageTokens,
}

impl CampaignApi {
    /// Handlers over `pool`.
    pub fn new(pool: PgPool, page_tokens: PageTokens) -> Self {
        Self { pool, page_tokens }
    }
}

fn invalid(list: Vec<Violation>) -> Status {
    ApiError::InvalidArgument(list).into()
}

#[tonic::async_trait]
impl CampaignService for CampaignApi {
    async fn create_campaign(
        &self,
        req: Request<pb::CreateCampaignRequest>,
    ) -> Result<Response<pb::CreateCampaignResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let campaign = r.campaign.unwrap_or_default();
        let mut list = match validate_new(&campaign, "campaign") {
            Ok(_) => Vec::new(),
            Err(l) => l,
        };
        if !r.request_id.is_empty() && !is_printable_key(&r.request_id) {
            list.push(Violation {
                field: "request_id".into(),
                description: "must be 1 to 128 printable ASCII characters".into(),
            });
        }
        if !list.is_empty() {
            return Err(invalid(list));
        }
        let input = validate_new(&campaign, "campaign").map_err(invalid)?;
        let hash = input_hash(&input);
        let tenant = ctx.tenant_id;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let request = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        let same_request =
            |found: Option<(crate::domain::model::StoredCampaign, Vec<u8>)>| match found {
                Some((c, h)) if h == hash => Ok(Some(c)),
                Some(_) => Err(ApiError::AlreadyExists(format!(
                    "request_id {:?} was already used to create a different campaign",
                    r.request_id
                ))),
                None => Ok(None),
            };
        if let Some(rid) = request {
            let found = store::campaign_by_request(&mut tx, tenant, rid)
                .await
                .map_err(ApiError::from)?;
            if let Some(c) = same_request(found)? {
                tx.commit().await.map_err(ApiError::from)?;
                return Ok(Response::new(pb::CreateCampaignResponse {
                    campaign: Some(c.to_proto()),
                }));
            }
        }
        let id = Uuid::now_v7();
        let created = store::insert_campaign(
            &mut tx,
            tenant,
            id,
            &input,
            request.map(|rid| (rid, hash.as_slice())),
        )
        .await
        .map_err(ApiError::from)?;
        let created = match created {
            Some(c) => c,
            None => {
                // A concurrent call with the same request id won: answer as a retry.
                drop(tx);
                let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
                let found =
                    store::campaign_by_request(&mut conn, tenant, request.unwrap_or_default())
                        .await
                        .map_err(ApiError::from)?;
                let c = same_request(found)?.ok_or_else(|| {
                    ApiError::Aborted("a concurrent request interfered; retry".into())
                })?;
                return Ok(Response::new(pb::CreateCampaignResponse {
                    campaign: Some(c.to_proto()),
                }));
            }
        };
        feed::append(
            &mut tx,
            &[NewEvent::new(
                tenant,
                "campaign",
                id.to_string(),
                "CampaignCreated",
                &envelope(Event::CampaignCreated(created.changed_event(None))),
            )],
        )
        .await
        .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::CreateCampaignResponse {
            campaign: Some(created.to_proto()),
        }))
    }

    async fn get_campaign(
        &self,
        req: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::GetCampaignResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let id = Uuid::parse_str(&req.get_ref().campaign_id)
            .map_err(|_| ApiError::invalid("campaign_id", "must be a UUID"))?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let c = store::get_campaign(&mut conn, ctx.tenant_id, id, false)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("campaign", id.to_string()))?;
        Ok(Response::new(pb::GetCampaignResponse {
            campaign: Some(c.to_proto()),
        }))
    }

    async fn list_campaigns(
        &self,
        req: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let mut f = CampaignFilter::default();
        match Channel::try_from(r.channel) {
            Ok(Channel::Unspecified) => {}
            Ok(c) => f.channel = Some(c as i16),
            Err(_) => v.add("channel", "not a Channel value"),
        }
        if !r.target_segment_id.is_empty() {
            f.target_segment_id = parse_uuid(&mut v, "target_segment_id", &r.target_segment_id);
        }
        if let Some(t) = &r.active_time {
            f.active_time = from_timestamp(t);
            v.check(
                f.active_time.is_none(),
                "active_time",
                "is not a valid timestamp",
            );
        }
        let limit = page_size(&mut v, r.page_size);
        let scope = format!(
            "{}/ListCampaigns/{:?}/{:?}/{:?}",
            ctx.tenant_id, f.channel, f.target_segment_id, f.active_time
        );
        let cursor = match self.page_tokens.decode::<Cursor>(&scope, &r.page_token) {
            Ok(c) => c,
            Err(ApiError::InvalidArgument(list)) => {
                for x in list {
                    v.add(x.field, x.description);
                }
                None
            }
            Err(e) => return Err(e.into()),
        };
        v.finish()?;
        let after = match &cursor {
            Some(c) => Some(
                c.key()
                    .ok_or_else(|| ApiError::invalid("page_token", "malformed"))?,
            ),
            None => None,
        };
        let mut rows = store::list_campaigns(&self.pool, ctx.tenant_id, &f, after, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .map(|l| {
                    self.page_tokens
                        .encode(&scope, &Cursor::of(l.create_time, l.campaign_id))
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: rows.iter().map(|c| c.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn update_campaign(
        &self,
        req: Request<pb::UpdateCampaignRequest>,
    ) -> Result<Response<pb::UpdateCampaignResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let campaign = r.campaign.unwrap_or_default();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        let id = parse_uuid(&mut v, "campaign.campaign_id", &campaign.campaign_id);
        check_mask(&mut v, &paths);
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid("campaign.campaign_id", "must be a UUID"))?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let current = store::get_campaign(&mut tx, ctx.tenant_id, id, true)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("campaign", id.to_string()))?;
        let input = apply_update(&current, &campaign, &paths).map_err(invalid)?;
        if !campaign.etag.is_empty() && campaign.etag != current.etag() {
            return Err(ApiError::Aborted(format!(
                "campaign {id} has changed since it was read (etag {}); read it again and retry",
                current.etag()
            ))
            .into());
        }
        let updated = store::update_campaign(&mut tx, ctx.tenant_id, id, &input)
            .await
            .map_err(ApiError::from)?;
        feed::append(
            &mut tx,
            &[NewEvent::new(
                ctx.tenant_id,
                "campaign",
                id.to_string(),
                "CampaignUpdated",
                &envelope(Event::CampaignUpdated(updated.changed_event(Some(&paths)))),
            )],
        )
        .await
        .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::UpdateCampaignResponse {
            campaign: Some(updated.to_proto()),
        }))
    }

    async fn get_campaign_report(
        &self,
        req: Request<pb::GetCampaignReportRequest>,
    ) -> Result<Response<pb::GetCampaignReportResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = parse_uuid(&mut v, "campaign_id", &r.campaign_id);
        let window = r
            .attribution_window
            .unwrap_or(campaign::DEFAULT_ATTRIBUTION_WINDOW);
        let window_nanos =
            campaign::check_attribution_window(&mut v, "attribution_window", &window);
        v.finish()?;
        let (Some(id), Some(window_nanos)) = (id, window_nanos) else {
            return Err(ApiError::invalid("campaign_id", "must be a UUID").into());
        };
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        store::get_campaign(&mut conn, ctx.tenant_id, id, false)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("campaign", id.to_string()))?;
        drop(conn);
        let report_time = Utc::now();
        let counts = store::campaign_counts(&self.pool, ctx.tenant_id, id)
            .await
            .map_err(ApiError::from)?;
        let seconds = window_nanos as f64 / 1e9;
        let purchases = store::attributed_purchases(&self.pool, ctx.tenant_id, id, seconds)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetCampaignReportResponse {
            report: Some(campaign::report(
                id,
                report_time,
                window,
                counts,
                &purchases,
            )),
        }))
    }
}
