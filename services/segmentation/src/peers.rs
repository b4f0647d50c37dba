//! The services this one follows: their change feeds (profile, interaction,
//! valuation) and the profile service's attribute definitions, called with
//! the internal credential.

use futures::StreamExt;
use futures::future::BoxFuture;
use rapport_kit::context::{CallContext, InternalCredential};
use rapport_kit::feed::{EventStream, FeedSource};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{AttributeType, ListAttributeDefinitionsRequest};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

type Chan = InterceptedService<Channel, InternalCredential>;

fn channel(url: &str, token: Option<&str>) -> Result<Chan, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    Ok(InterceptedService::new(
        endpoint.connect_lazy(),
        InternalCredential::new(token),
    ))
}

/// A peer whose change feed this service follows.
#[derive(Clone)]
pub enum Peer {
    Profile(ProfileServiceClient<Chan>),
    Interaction(InteractionServiceClient<Chan>),
    Valuation(ValuationServiceClient<Chan>),
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::Profile(_) => "Peer(profile)",
            Peer::Interaction(_) => "Peer(interaction)",
            Peer::Valuation(_) => "Peer(valuation)",
        })
    }
}

impl Peer {
    /// The profile service at `url`.
    pub fn profile(url: &str, token: Option<&str>) -> Result<Self, String> {
        Ok(Peer::Profile(
            ProfileServiceClient::new(channel(url, token)?)
                .max_decoding_message_size(64 * 1024 * 1024),
        ))
    }
    /// The interaction service at `url`.
    pub fn interaction(url: &str, token: Option<&str>) -> Result<Self, String> {
        Ok(Peer::Interaction(
            InteractionServiceClient::new(channel(url, token)?)
                .max_decoding_message_size(64 * 1024 * 1024),
        ))
    }
    /// The valuation service at `url`.
    pub fn valuation(url: &str, token: Option<&str>) -> Result<Self, String> {
        Ok(Peer::Valuation(
            ValuationServiceClient::new(channel(url, token)?)
                .max_decoding_message_size(64 * 1024 * 1024),
        ))
    }
}

macro_rules! open_feed {
    ($client:expr, $module:ident, $after:expr, $what:literal) => {{
        let stream = $client
            .clone()
            .watch_changes(rapport_proto::rapport::$module::v1::WatchChangesRequest {
                after_sequence: $after,
            })
            .await?
            .into_inner();
        stream
            .map(|r| {
                r.and_then(|m| {
                    m.event.ok_or_else(|| {
                        Status::internal(concat!("a ", $what, " feed message without an event"))
                    })
                })
            })
            .boxed()
    }};
}

impl FeedSource for Peer {
    fn open(&self, after_sequence: i64) -> BoxFuture<'_, Result<EventStream, Status>> {
        Box::pin(async move {
            Ok(match self {
                Peer::Profile(c) => open_feed!(c, profile, after_sequence, "profile"),
                Peer::Interaction(c) => open_feed!(c, interaction, after_sequence, "interaction"),
                Peer::Valuation(c) => open_feed!(c, valuation, after_sequence, "valuation"),
            })
        })
    }
}

/// A custom attribute definition as the catalogue needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDef {
    pub name: String,
    /// "string", "decimal", "bool", "timestamp" or "string_list".
    pub ty: &'static str,
    pub description: String,
}

/// The stored name of a profile attribute type.
pub fn attribute_type_name(t: i32) -> Option<&'static str> {
    match AttributeType::try_from(t).ok()? {
        AttributeType::String => Some("string"),
        AttributeType::Number => Some("decimal"),
        AttributeType::Boolean => Some("bool"),
        AttributeType::Timestamp => Some("timestamp"),
        AttributeType::StringList => Some("string_list"),
        AttributeType::Unspecified => None,
    }
}

/// The tenant's attribute definitions (deprecated ones included: customers
/// keep their values), or the call's error.
pub async fn attribute_definitions(
    peer: &Peer,
    ctx: &CallContext,
) -> Result<Vec<AttributeDef>, Status> {
    let Peer::Profile(client) = peer else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let mut req = Request::new(ListAttributeDefinitionsRequest {
            page_size: 1000,
            page_token: token.clone(),
            show_deprecated: true,
        });
        ctx.write(req.metadata_mut());
        req.set_timeout(std::time::Duration::from_secs(2));
        let page = client
            .clone()
            .list_attribute_definitions(req)
            .await?
            .into_inner();
        for d in page.definitions {
            if let Some(ty) = attribute_type_name(d.r#type) {
                out.push(AttributeDef {
                    name: d.name,
                    ty,
                    description: d.description,
                });
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}
