//! Facts about interaction types and statuses.

use rapport_proto::rapport::interaction::v1::{InteractionType, ServiceRequestStatus};

/// The contact types, in the order `CustomerSummary.contacts_by_type` lists them.
pub const CONTACT_TYPES: [InteractionType; 7] = [
    InteractionType::SalesVisit,
    InteractionType::Call,
    InteractionType::Email,
    InteractionType::Meeting,
    InteractionType::Chat,
    InteractionType::ServiceRequest,
    InteractionType::Complaint,
];

/// True for the CAMPAIGN_* types.
pub fn is_campaign_type(t: InteractionType) -> bool {
    matches!(
        t,
        InteractionType::CampaignSent
            | InteractionType::CampaignOpened
            | InteractionType::CampaignClicked
            | InteractionType::CampaignConverted
            | InteractionType::CampaignUnsubscribed
    )
}

/// True for the types that carry a service-request status.
pub fn is_tracked_request(t: InteractionType) -> bool {
    matches!(
        t,
        InteractionType::ServiceRequest | InteractionType::Complaint
    )
}

/// True for the contact types.
pub fn is_contact(t: InteractionType) -> bool {
    CONTACT_TYPES.contains(&t)
}

/// True while a request counts as open (OPEN or IN_PROGRESS).
pub fn is_open_status(s: i32) -> bool {
    s == ServiceRequestStatus::Open as i32 || s == ServiceRequestStatus::InProgress as i32
}
