//! `rapport seed`: a realistic demo tenant, generated from a seed and sent
//! through the gateway's public APIs with an API key, as any client would.
//!
//! Everything it sends is idempotent (request ids on creations, idempotency
//! keys on interactions), so running it twice with the same seed and `--as-of`
//! leaves the tenant as one run does.

pub mod costs;
pub mod engagement;
pub mod plan;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, Money, customer_ref,
};
use rapport_proto::rapport::engagement::v1::engagement_service_client::EngagementServiceClient;
use rapport_proto::rapport::interaction::v1::campaign_service_client::CampaignServiceClient;
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Campaign, Channel as ContactChannel, CreateCampaignRequest, Initiator, Interaction,
    InteractionType, LineItem, RecordInteractionRequest, RecordInteractionsRequest,
    ServiceRequestStatus, Survey, UpdateServiceRequestRequest,
};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    AttributeDefinition, AttributeType, AttributeValue, ConsentChannel, ConsentPurpose,
    ConsentStatus, CreateAttributeDefinitionRequest, CreateCustomerRequest, Customer, CustomerKind,
    EmailAddress, OrganizationDetails, PersonDetails, PhoneNumber, SetConsentRequest, StringList,
    attribute_value, customer,
};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use tonic::Code;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use plan::{CampaignStep, ContactKind, CustomerPlan, Kind, What};

/// `rapport seed` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SeedArgs {
    /// How many customers to create.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// The random seed: the same seed (and --as-of) gives the same tenant.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The gateway to send to.
    #[arg(
        long,
        env = "RAPPORT_GATEWAY",
        default_value = "http://127.0.0.1:50051"
    )]
    pub gateway: String,
    /// An API key with profile:write, interaction:write and engagement:write (default: the
    /// development key `rapport dev` keeps in DATA_DIR/dev-api-key).
    #[arg(long, env = "RAPPORT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Where `rapport dev` keeps its data (for its API key).
    #[arg(long, env = "RAPPORT_DATA_DIR", default_value = ".rapport")]
    pub data_dir: PathBuf,
    /// Histories end at this instant (RFC 3339; default: today, 00:00 UTC).
    #[arg(long)]
    pub as_of: Option<DateTime<Utc>>,
    /// Customers in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

/// What a run sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub customers: usize,
    pub interactions_accepted: i64,
    pub interactions_duplicate: i64,
    pub interactions_rejected: i64,
    pub service_requests_resolved: usize,
    /// Treatments created, decisions made and outcomes recorded.
    pub engagement: engagement::Sent,
    /// The version of the cost model set.
    pub cost_model_version: i32,
}

/// Sends an API key with every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A channel that sends the API key.
pub type Authed = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
struct Clients {
    profile: ProfileServiceClient<Authed>,
    interactions: InteractionServiceClient<Authed>,
    campaigns: CampaignServiceClient<Authed>,
}

/// The midnight (UTC) that starts today.
fn today() -> DateTime<Utc> {
    let now = Utc::now();
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |d| d.and_utc())
}

/// The API key given, or else the development key `rapport dev` keeps in
/// `data_dir`.
pub fn api_key(given: Option<&str>, data_dir: &std::path::Path) -> anyhow::Result<String> {
    // An empty key (e.g. `RAPPORT_API_KEY=`) is no key.
    match given.map(str::trim).filter(|k| !k.is_empty()) {
        Some(k) => Ok(k.to_string()),
        None => {
            let file = data_dir.join("dev-api-key");
            std::fs::read_to_string(&file)
                .map(|k| k.trim().to_string())
                .with_context(|| {
                    format!(
                        "no --api-key given and no development key at {}; start `rapport dev` or pass --api-key",
                        file.display()
                    )
                })
        }
    }
}

/// A channel to the gateway at `gateway` and the interceptor that sends
/// API key `key` with every call.
pub async fn connect(gateway: &str, key: &str) -> anyhow::Result<(Channel, Bearer)> {
    let channel = Endpoint::from_shared(gateway.to_string())
        .with_context(|| format!("bad gateway address {gateway:?}"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the gateway at {gateway}"))?;
    let bearer = Bearer(
        format!("Bearer {key}")
            .parse()
            .context("the API key is not valid in a header")?,
    );
    Ok((channel, bearer))
}

/// Runs `rapport seed`.
pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let key = api_key(args.api_key.as_deref(), &args.data_dir)?;
    let started = Instant::now();
    let as_of = args.as_of.unwrap_or_else(today);
    println!(
        "Seeding {} customers (seed {}, histories up to {}) through {} ...",
        args.customers,
        args.seed,
        as_of.to_rfc3339(),
        args.gateway
    );
    let report = seed(
        &args.gateway,
        &key,
        args.customers,
        args.seed,
        as_of,
        args.concurrency,
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "Seeded {} customers and {} interactions ({} already there, {} refused) in {secs:.1} s; {} service requests resolved; {} treatments, {} decisions, {} outcomes; cost model version {}.",
        report.customers,
        report.interactions_accepted,
        report.interactions_duplicate,
        report.interactions_rejected,
        report.service_requests_resolved,
        report.engagement.treatments,
        report.engagement.decisions,
        report.engagement.outcomes,
        report.cost_model_version,
    );
    Ok(())
}

/// Whether the key's tenant already has a customer (demo data of an earlier
/// run, or real data).
pub async fn has_customers(gateway: &str, key: &str) -> anyhow::Result<bool> {
    let (channel, bearer) = connect(gateway, key).await?;
    let mut profile = ProfileServiceClient::with_interceptor(channel, bearer);
    let page = profile
        .list_customers(rapport_proto::rapport::profile::v1::ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(!page.customers.is_empty())
}

/// Sends the plan for `customers` customers of `seed` to the gateway at
/// `gateway` with API key `key`.
pub async fn seed(
    gateway: &str,
    key: &str,
    customers: usize,
    seed: u64,
    as_of: DateTime<Utc>,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let (channel, bearer) = connect(gateway, key).await?;
    let engagement = EngagementServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let valuation = ValuationServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let clients = Clients {
        profile: ProfileServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        interactions: InteractionServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        campaigns: CampaignServiceClient::with_interceptor(channel, bearer),
    };

    define_attributes(&clients).await?;
    let campaign_ids = create_campaigns(&clients, seed, as_of).await?;

    let mut report = Report {
        cost_model_version: costs::seed(&valuation, seed, as_of)
            .await
            .context("SetCostModel")?,
        ..Report::default()
    };
    let mut all_ids = Vec::with_capacity(customers);
    // Customers go in chunks: created concurrently, then their interactions
    // in one streaming call.
    const CHUNK: usize = 250;
    // A bar on a terminal; nothing when standard error is redirected.
    let bar = crate::import::progress(customers as u64, "customers");
    let mut start = 0;
    while start < customers {
        let end = (start + CHUNK).min(customers);
        let plans: Vec<CustomerPlan> = (start..end)
            .map(|i| plan::customer(seed, i, as_of))
            .collect();
        let created: Vec<anyhow::Result<String>> = futures::stream::iter(plans.clone())
            .map(|p| {
                let c = clients.clone();
                async move { create_customer(&c, seed, &p).await }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let mut ids = Vec::with_capacity(created.len());
        for c in created {
            ids.push(c?);
        }
        report.customers += ids.len();
        all_ids.extend(ids.iter().cloned());

        let mut batch = Vec::new();
        let mut requests = Vec::new();
        for (p, id) in plans.iter().zip(&ids) {
            for (k, e) in p.events.iter().enumerate() {
                let i = interaction(seed, p, k, e, id, &campaign_ids);
                match e.what {
                    What::ServiceRequest { resolved_after } => {
                        requests.push((i, resolved_after));
                    }
                    _ => batch.push(i),
                }
            }
        }
        let messages: Vec<RecordInteractionsRequest> = batch
            .chunks(500)
            .map(|c| RecordInteractionsRequest {
                interactions: c.to_vec(),
            })
            .collect();
        let answer = within_limits(
            &clients.interactions,
            &messages,
            |mut client, messages| async move {
                client
                    .record_interactions(futures::stream::iter(messages))
                    .await
            },
        )
        .await
        .context("RecordInteractions")?
        .into_inner();
        report.interactions_accepted += answer.accepted_count;
        report.interactions_duplicate += answer.duplicate_count;
        report.interactions_rejected += answer.rejected_count;
        if let Some(r) = answer.rejections.first() {
            tracing::warn!(reason = ?r.reason, detail = %r.message, "an interaction was refused");
        }

        let resolved: Vec<anyhow::Result<bool>> = futures::stream::iter(requests)
            .map(|(i, after)| {
                let c = clients.clone();
                async move { service_request(&c, i, after, as_of).await }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        for r in resolved {
            report.service_requests_resolved += usize::from(r?);
        }
        start = end;
        bar.set_position(end as u64);
    }
    bar.finish_and_clear();
    report.engagement = engagement::seed(&engagement, seed, &all_ids)
        .await
        .context("the engagement part")?;
    Ok(report)
}

/// Makes a call again while the gateway refuses it for the API key's rate
/// limit (RESOURCE_EXHAUSTED), after the delay its RetryInfo names, as a
/// well-behaved client does: a refused call did nothing, and every call of
/// the seed is idempotent besides.
/// Each try calls `call` with a clone of `client` and of `request`.
pub(super) async fn within_limits<C, R, T, Fut>(
    client: &C,
    request: &R,
    call: impl Fn(C, R) -> Fut,
) -> Result<T, tonic::Status>
where
    C: Clone,
    R: Clone,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    use tonic_types::StatusExt;
    let mut refused = 0;
    loop {
        match call(client.clone(), request.clone()).await {
            Err(s) if s.code() == Code::ResourceExhausted && refused < 1000 => {
                refused += 1;
                let wait = s
                    .get_error_details()
                    .retry_info()
                    .and_then(|r| r.retry_delay)
                    .unwrap_or(std::time::Duration::from_millis(100));
                tokio::time::sleep(wait.max(std::time::Duration::from_millis(1))).await;
            }
            answer => return answer,
        }
    }
}

async fn define_attributes(c: &Clients) -> anyhow::Result<()> {
    for (name, ty, description) in [
        (
            "tier",
            AttributeType::String,
            "Loyalty tier: bronze, silver, gold or platinum",
        ),
        (
            "interests",
            AttributeType::StringList,
            "Interests the customer told us about",
        ),
    ] {
        let request = CreateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: name.into(),
                r#type: ty as i32,
                description: description.into(),
                ..Default::default()
            }),
        };
        let r = within_limits(&c.profile, &request, |mut client, request| async move {
            client.create_attribute_definition(request).await
        })
        .await;
        match r {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(anyhow::anyhow!("defining attribute {name}: {s}")),
        }
    }
    Ok(())
}

async fn create_campaigns(
    c: &Clients,
    seed: u64,
    as_of: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for (k, p) in plan::campaigns().iter().enumerate() {
        let start = as_of - chrono::Duration::weeks(p.weeks_ago);
        let request = CreateCampaignRequest {
            campaign: Some(Campaign {
                name: p.name.into(),
                description: p.description.into(),
                channel: ContactChannel::Email as i32,
                start_time: Some(timestamp(start)),
                end_time: Some(timestamp(start + chrono::Duration::weeks(2))),
                ..Default::default()
            }),
            request_id: format!("seed-{seed}-{}-campaign-{k}", as_of.timestamp()),
        };
        let created = within_limits(&c.campaigns, &request, |mut client, request| async move {
            client.create_campaign(request).await
        })
        .await
        .with_context(|| format!("creating campaign {:?}", p.name))?
        .into_inner();
        ids.push(created.campaign.map(|c| c.campaign_id).unwrap_or_default());
    }
    Ok(ids)
}

fn money(cents: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        units: cents / 100,
        nanos: ((cents % 100) * 10_000_000) as i32,
    }
}

async fn create_customer(c: &Clients, seed: u64, p: &CustomerPlan) -> anyhow::Result<String> {
    let mut attributes = std::collections::HashMap::new();
    attributes.insert(
        "tier".to_string(),
        AttributeValue {
            value: Some(attribute_value::Value::StringValue(p.tier.into())),
        },
    );
    if !p.interests.is_empty() {
        attributes.insert(
            "interests".to_string(),
            AttributeValue {
                value: Some(attribute_value::Value::StringListValue(StringList {
                    values: p.interests.iter().map(|s| s.to_string()).collect(),
                })),
            },
        );
    }
    let (kind, details) = match p.kind {
        Kind::Person => (
            CustomerKind::Person,
            customer::Details::Person(PersonDetails {
                given_name: p.given_name.clone(),
                family_name: p.family_name.clone(),
                ..Default::default()
            }),
        ),
        Kind::Organization => (
            CustomerKind::Organization,
            customer::Details::Organization(OrganizationDetails {
                legal_name: p.legal_name.clone(),
                industry: p.industry.clone(),
                ..Default::default()
            }),
        ),
    };
    let customer = Customer {
        kind: kind as i32,
        details: Some(details),
        emails: vec![EmailAddress {
            address: p.email.clone(),
            primary: true,
            ..Default::default()
        }],
        phones: p
            .phone
            .iter()
            .map(|n| PhoneNumber {
                number: n.clone(),
                primary: true,
                ..Default::default()
            })
            .collect(),
        country_code: p.country.into(),
        external_identifiers: vec![Identifier {
            kind: IdentifierKind::External as i32,
            system: "shop".into(),
            value: format!("seed-{seed}-{}", p.index),
        }],
        attributes,
        tags: p.tags.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let request = CreateCustomerRequest {
        customer: Some(customer),
        request_id: format!("seed-{seed}-customer-{}", p.index),
    };
    let created = within_limits(&c.profile, &request, |mut client, request| async move {
        client.create_customer(request).await
    })
    .await
    .with_context(|| format!("creating customer {}", p.index))?
    .into_inner();
    let id = created.customer.map(|c| c.customer_id).unwrap_or_default();
    if let Some(at) = p.email_marketing {
        let request = SetConsentRequest {
            customer_id: id.clone(),
            channel: ConsentChannel::Email as i32,
            purpose: ConsentPurpose::Marketing as i32,
            status: ConsentStatus::Granted as i32,
            source: "signup form".into(),
            evidence: String::new(),
            effective_time: Some(timestamp(at)),
            request_id: format!("seed-{seed}-consent-{}", p.index),
        };
        within_limits(&c.profile, &request, |mut client, request| async move {
            client.set_consent(request).await
        })
        .await
        .with_context(|| format!("consent of customer {}", p.index))?;
    }
    Ok(id)
}

fn interaction(
    seed: u64,
    p: &CustomerPlan,
    k: usize,
    e: &plan::EventPlan,
    customer_id: &str,
    campaigns: &[String],
) -> Interaction {
    let mut i = Interaction {
        customer: Some(CustomerRef {
            r#ref: Some(customer_ref::Ref::CustomerId(customer_id.to_string())),
        }),
        occur_time: Some(timestamp(e.at)),
        initiator: Initiator::Customer as i32,
        idempotency_key: format!("seed-{seed}-{}-{k}", p.index),
        ..Default::default()
    };
    match &e.what {
        What::Purchase {
            amount_cents,
            margin_cents,
            items,
            campaign,
        } => {
            i.r#type = InteractionType::Purchase as i32;
            i.channel = if campaign.is_some() {
                ContactChannel::Web
            } else if p.kind == Kind::Organization {
                ContactChannel::Field
            } else {
                ContactChannel::Store
            } as i32;
            i.amount = Some(money(*amount_cents));
            i.margin = Some(money(*margin_cents));
            i.line_items = items
                .iter()
                .map(|l| LineItem {
                    sku: l.sku.into(),
                    name: l.name.into(),
                    category: l.category.into(),
                    quantity: f64::from(l.quantity),
                    unit_price: Some(money(l.unit_cents)),
                })
                .collect();
            if let Some(c) = campaign {
                i.campaign_id = campaigns.get(*c).cloned().unwrap_or_default();
            }
        }
        What::Return { amount_cents } => {
            i.r#type = InteractionType::Return as i32;
            i.channel = ContactChannel::Store as i32;
            i.amount = Some(money(*amount_cents));
        }
        What::Contact { kind, by_customer } => {
            let (t, ch) = match kind {
                ContactKind::Call => (InteractionType::Call, ContactChannel::Phone),
                ContactKind::Email => (InteractionType::Email, ContactChannel::Email),
                ContactKind::Chat => (InteractionType::Chat, ContactChannel::Web),
                ContactKind::Meeting => (InteractionType::Meeting, ContactChannel::Field),
            };
            i.r#type = t as i32;
            i.channel = ch as i32;
            i.initiator = if *by_customer {
                Initiator::Customer
            } else {
                Initiator::Company
            } as i32;
            if !by_customer {
                i.agent_id = "agent-7".into();
            }
        }
        What::ServiceRequest { .. } => {
            i.r#type = InteractionType::ServiceRequest as i32;
            i.channel = ContactChannel::Phone as i32;
            i.service_request_status = ServiceRequestStatus::Open as i32;
        }
        What::Complaint => {
            i.r#type = InteractionType::Complaint as i32;
            i.channel = ContactChannel::Email as i32;
        }
        What::Survey { csat, nps } => {
            i.r#type = InteractionType::SurveyResponse as i32;
            i.channel = ContactChannel::Email as i32;
            i.survey = Some(Survey {
                csat: Some(*csat),
                nps: Some(*nps),
                comment: String::new(),
            });
        }
        What::WebVisit => {
            i.r#type = InteractionType::WebVisit as i32;
            i.channel = ContactChannel::Web as i32;
        }
        What::Campaign { campaign, step } => {
            i.r#type = match step {
                CampaignStep::Sent => InteractionType::CampaignSent,
                CampaignStep::Opened => InteractionType::CampaignOpened,
                CampaignStep::Clicked => InteractionType::CampaignClicked,
                CampaignStep::Converted => InteractionType::CampaignConverted,
            } as i32;
            i.initiator = if *step == CampaignStep::Sent {
                Initiator::Company
            } else {
                Initiator::Customer
            } as i32;
            i.channel = ContactChannel::Email as i32;
            i.campaign_id = campaigns.get(*campaign).cloned().unwrap_or_default();
        }
    }
    i
}

/// Records a service request and, when the plan resolves it before `as_of`,
/// moves it to in progress and then resolved. Returns whether it resolved
/// it now (a request already recorded by an earlier run is left as it is).
async fn service_request(
    c: &Clients,
    i: Interaction,
    resolved_after: Option<chrono::Duration>,
    as_of: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let opened = i
        .occur_time
        .as_ref()
        .and_then(rapport_kit::convert::from_timestamp);
    let request = RecordInteractionRequest {
        interaction: Some(i),
    };
    let recorded = within_limits(
        &c.interactions,
        &request,
        |mut client, request| async move { client.record_interaction(request).await },
    )
    .await
    .context("recording a service request")?
    .into_inner();
    let (Some(stored), Some(after), Some(opened)) = (recorded.interaction, resolved_after, opened)
    else {
        return Ok(false);
    };
    if !recorded.created || opened + after > as_of {
        return Ok(false);
    }
    let mut etag = stored.etag;
    for status in [
        ServiceRequestStatus::InProgress,
        ServiceRequestStatus::Resolved,
    ] {
        let request = UpdateServiceRequestRequest {
            interaction_id: stored.interaction_id.clone(),
            status: status as i32,
            etag: etag.clone(),
            agent_id: "agent-7".into(),
        };
        let updated = within_limits(
            &c.interactions,
            &request,
            |mut client, request| async move { client.update_service_request(request).await },
        )
        .await
        .context("updating a service request")?
        .into_inner();
        etag = updated.interaction.map(|i| i.etag).unwrap_or_default();
    }
    Ok(true)
}
