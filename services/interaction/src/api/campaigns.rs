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
        let request = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        let created = crate::campaigns::create(&self.pool, ctx.tenant_id, &input, request).await?;
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
            f.target_segment_id = v.uuid("target_segment_id", &r.target_segment_id);
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
        let next_page_token = self.page_tokens.trim_page(&scope, &mut rows, limit, |l| {
            Cursor::of(l.create_time, l.campaign_id)
        });
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
        let id = v.uuid("campaign.campaign_id", &campaign.campaign_id);
        check_mask(&mut v, &paths);
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid("campaign.campaign_id", "must be a UUID"))?;
        let updated =
            crate::campaigns::update(&self.pool, ctx.tenant_id, id, &campaign, &paths).await?;
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
        let id = v.uuid("campaign_id", &r.campaign_id);
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
