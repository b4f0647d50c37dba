//! The profile service's attribute definitions, as this service calls them
//! (the feeds of profile, interaction and valuation are read with the kit's
//! `PeerFeed`).

use rapport_kit::context::CallContext;
use rapport_kit::peer::{MAX_MESSAGE_BYTES, Peer, PeerChannel};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{AttributeType, ListAttributeDefinitionsRequest};
use tonic::{Request, Status};

/// The profile service, for the catalogue's attribute definitions.
#[derive(Clone)]
pub struct Profile {
    client: ProfileServiceClient<PeerChannel>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Profile(..)")
    }
}

impl Profile {
    /// A client of the profile service behind `peer`, connecting on first use.
    pub fn new(peer: &Peer) -> Self {
        Self {
            client: ProfileServiceClient::new(peer.channel())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
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
    profile: &Profile,
    ctx: &CallContext,
) -> Result<Vec<AttributeDef>, Status> {
    let client = &profile.client;
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
