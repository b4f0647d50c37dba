//! The field catalogue (ListFields); the type checker is in `check.rs`.

use proto::{AggregateMeasure, AggregateSource, FieldDescriptor, FieldType, SourceService};
use rapport_proto::rapport::segmentation::v1 as proto;

pub const LADDER: &[&str] = &["stranger", "acquaintance", "friend", "partner"];
pub const STAGES: &[&str] = &[
    "awareness",
    "exploration",
    "expansion",
    "commitment",
    "dissolution",
];
pub const RFM_SEGMENTS: &[&str] = &[
    "Champions",
    "Loyal",
    "Potential Loyalist",
    "New Customers",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Cannot Lose Them",
    "Hibernating",
    "Lost",
];
pub const KINDS: &[&str] = &["person", "organization"];
pub const VALUE_TIERS: &[&str] = &["top", "high", "medium", "low"];
pub const CHANNELS: &[&str] = &["email", "sms", "phone", "post", "push", "any"];
pub const PURPOSES: &[&str] = &["marketing", "profiling", "service", "research"];

/// The interaction types `contact` stands for.
pub const CONTACT_TYPES: &[&str] = &[
    "sales_visit",
    "call",
    "email",
    "meeting",
    "chat",
    "service_request",
    "complaint",
];
/// The interaction types `campaign_response` stands for.
pub const CAMPAIGN_RESPONSE_TYPES: &[&str] =
    &["campaign_opened", "campaign_clicked", "campaign_converted"];

/// A built-in field: name, type, features column, source service, description,
/// allowed values.
pub(crate) struct Builtin {
    pub name: &'static str,
    pub ty: FieldType,
    pub column: &'static str,
    pub source: SourceService,
    pub description: &'static str,
    pub allowed: &'static [&'static str],
}

macro_rules! builtin {
    ($name:expr, $ty:ident, $col:expr, $src:ident, $desc:expr) => {
        builtin!($name, $ty, $col, $src, $desc, &[])
    };
    ($name:expr, $ty:ident, $col:expr, $src:ident, $desc:expr, $allowed:expr) => {
        Builtin {
            name: $name,
            ty: FieldType::$ty,
            column: $col,
            source: SourceService::$src,
            description: $desc,
            allowed: $allowed,
        }
    };
}

pub(crate) const BUILTINS: &[Builtin] = &[
    builtin!(
        "kind",
        Enum,
        "kind",
        Profile,
        "Whether the customer is a person or an organization.",
        KINDS
    ),
    builtin!(
        "country",
        String,
        "country",
        Profile,
        "Country, an ISO 3166-1 alpha-2 code in upper case (e.g. \"ES\")."
    ),
    builtin!(
        "tags",
        StringList,
        "tags",
        Profile,
        "The customer's tags, in lower case."
    ),
    builtin!(
        "profile_stage",
        Enum,
        "profile_stage",
        Profile,
        "The Dwyer relationship stage set by the client on the profile.",
        STAGES
    ),
    builtin!(
        "first_purchase",
        Timestamp,
        "first_purchase",
        Interaction,
        "Time of the first purchase."
    ),
    builtin!(
        "last_purchase",
        Timestamp,
        "last_purchase",
        Interaction,
        "Time of the latest purchase."
    ),
    builtin!(
        "purchases",
        Integer,
        "purchases",
        Interaction,
        "Number of purchases, all time."
    ),
    builtin!(
        "monetary",
        Money,
        "monetary",
        Interaction,
        "Total purchase amount in the tenant's currency (returns not netted); no value before the first purchase."
    ),
    builtin!(
        "avg_order_value",
        Money,
        "avg_order_value",
        Interaction,
        "Mean purchase amount in the tenant's currency; no value before the first purchase."
    ),
    builtin!(
        "contacts",
        Integer,
        "contacts",
        Interaction,
        "Number of contact interactions (sales visits, calls, e-mails, meetings, chats, service requests, complaints), all time."
    ),
    builtin!(
        "last_contact",
        Timestamp,
        "last_contact",
        Interaction,
        "Time of the latest contact interaction."
    ),
    builtin!(
        "open_service_requests",
        Integer,
        "open_service_requests",
        Interaction,
        "Service requests with status open or in progress."
    ),
    builtin!(
        "complaints",
        Integer,
        "complaints",
        Interaction,
        "Number of complaints, all time."
    ),
    builtin!(
        "open_complaints",
        Integer,
        "open_complaints",
        Interaction,
        "Complaints with status open or in progress."
    ),
    builtin!(
        "csat",
        Integer,
        "csat",
        Interaction,
        "Latest CSAT survey answer, 1 to 5."
    ),
    builtin!(
        "nps",
        Integer,
        "nps",
        Interaction,
        "Latest NPS survey answer, 0 to 10."
    ),
    builtin!(
        "campaign_response_rate",
        Decimal,
        "campaign_response_rate",
        Interaction,
        "Share of campaigns sent that the customer responded to, 0 to 1, as the interaction service reports it."
    ),
    builtin!(
        "clv",
        Money,
        "clv",
        Valuation,
        "Customer lifetime value from the valuation service, in the tenant's currency."
    ),
    builtin!(
        "p_alive",
        Decimal,
        "p_alive",
        Valuation,
        "Probability that the customer is still active (alive), 0 to 1."
    ),
    builtin!(
        "expected_purchases",
        Decimal,
        "expected_purchases",
        Valuation,
        "Expected number of purchases over the valuation scoring horizon."
    ),
    builtin!(
        "value_tier",
        Enum,
        "value_tier",
        Valuation,
        "The customer's value tier from the valuation service.",
        VALUE_TIERS
    ),
    builtin!(
        "net_clv",
        Money,
        "net_clv",
        Valuation,
        "Customer lifetime value net of the expected cost to serve, in the tenant's currency."
    ),
    builtin!(
        "cost_to_serve",
        Money,
        "cost_to_serve",
        Valuation,
        "Cost to serve over the 365 days before the customer was last scored."
    ),
    builtin!(
        "net_profit",
        Money,
        "net_profit",
        Valuation,
        "Gross margin minus cost to serve over the 365 days before the customer was last scored."
    ),
    builtin!(
        "profit_decile",
        Integer,
        "profit_decile",
        Valuation,
        "Profit decile among the tenant's customers: 1 for the most profitable tenth, 10 for the least."
    ),
    builtin!(
        "rfm.r",
        Integer,
        "rfm_r",
        Segmentation,
        "RFM recency score, 1 to 5."
    ),
    builtin!(
        "rfm.f",
        Integer,
        "rfm_f",
        Segmentation,
        "RFM frequency score, 1 to 5."
    ),
    builtin!(
        "rfm.m",
        Integer,
        "rfm_m",
        Segmentation,
        "RFM monetary score, 1 to 5."
    ),
    builtin!(
        "rfm.fm",
        Integer,
        "rfm_fm",
        Segmentation,
        "RFM combined frequency-monetary score, 1 to 5: (F + M + 1) / 2."
    ),
    builtin!(
        "rfm.segment",
        Enum,
        "rfm_segment",
        Segmentation,
        "The RFM segment name.",
        RFM_SEGMENTS
    ),
    builtin!(
        "ladder",
        Enum,
        "ladder",
        Segmentation,
        "The relationship ladder rung.",
        LADDER
    ),
    builtin!(
        "stage",
        Enum,
        "stage",
        Segmentation,
        "The classified Dwyer relationship stage; no value when none applies.",
        STAGES
    ),
];

/// Built-in aggregate sources with their measures (name, type, description).
pub(crate) type Measures = &'static [(&'static str, FieldType, &'static str)];
pub(crate) const BUILTIN_SOURCES: &[(&str, Measures)] = &[
    (
        "purchase",
        &[
            (
                "amount",
                FieldType::Money,
                "The amount paid, in the tenant's currency; purchases in other currencies are left out.",
            ),
            (
                "margin",
                FieldType::Money,
                "The margin, in the tenant's currency; purchases in other currencies or without a margin are left out.",
            ),
        ],
    ),
    (
        "return",
        &[(
            "amount",
            FieldType::Money,
            "The amount refunded, in the tenant's currency; returns in other currencies are left out.",
        )],
    ),
    ("sales_visit", &[]),
    ("call", &[]),
    ("email", &[]),
    ("meeting", &[]),
    ("chat", &[]),
    ("service_request", &[]),
    ("complaint", &[]),
    ("campaign_sent", &[]),
    ("campaign_opened", &[]),
    ("campaign_clicked", &[]),
    ("campaign_converted", &[]),
    ("campaign_unsubscribed", &[]),
    (
        "survey_response",
        &[
            (
                "csat",
                FieldType::Integer,
                "The CSAT answer, 1 to 5; responses without one are left out.",
            ),
            (
                "nps",
                FieldType::Integer,
                "The NPS answer, 0 to 10; responses without one are left out.",
            ),
        ],
    ),
    ("web_visit", &[]),
    ("contact", &[]),
    ("campaign_response", &[]),
];

/// A tenant attribute definition, as a catalogue field `attr.<name>`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttributeField {
    /// The definition's name (without `attr.`).
    pub name: String,
    /// STRING, DECIMAL, BOOL, TIMESTAMP or STRING_LIST.
    pub ty: FieldType,
    pub description: String,
}

/// Where a field's value lives in the `features` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A column of `features`.
    Column(&'static str),
    /// A key of `features.attributes`.
    Attribute(String),
}

/// A catalogue field.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub storage: Storage,
    pub allowed: Vec<String>,
}

/// The field catalogue of one tenant: the built-in fields, one `attr.<name>`
/// field per attribute definition, and the aggregate sources (built-in types
/// and the custom types seen so far).
#[derive(Clone, Debug)]
pub struct Catalog {
    attributes: Vec<AttributeField>,
    custom_types: Vec<String>,
}

impl Catalog {
    /// The catalogue with the tenant's attribute definitions and custom
    /// interaction types. Attribute types other than STRING, DECIMAL, BOOL,
    /// TIMESTAMP and STRING_LIST are left out.
    pub fn new(attributes: Vec<AttributeField>, custom_types: Vec<String>) -> Catalog {
        let mut attributes: Vec<AttributeField> = attributes
            .into_iter()
            .filter(|a| {
                matches!(
                    a.ty,
                    FieldType::String
                        | FieldType::Decimal
                        | FieldType::Bool
                        | FieldType::Timestamp
                        | FieldType::StringList
                )
            })
            .collect();
        attributes.sort_by(|a, b| a.name.cmp(&b.name));
        attributes.dedup_by(|a, b| a.name == b.name);
        let mut custom_types: Vec<String> = custom_types
            .into_iter()
            .filter(|t| !BUILTIN_SOURCES.iter().any(|(b, _)| b == t))
            .collect();
        custom_types.sort();
        custom_types.dedup();
        Catalog {
            attributes,
            custom_types,
        }
    }

    /// Every field, built-in ones first, then `attr.<name>` in name order.
    pub fn fields(&self) -> Vec<FieldDescriptor> {
        let mut out: Vec<FieldDescriptor> = BUILTINS
            .iter()
            .map(|b| FieldDescriptor {
                name: b.name.to_string(),
                r#type: b.ty as i32,
                description: b.description.to_string(),
                source: b.source as i32,
                allowed_values: b.allowed.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        out.extend(self.attributes.iter().map(|a| FieldDescriptor {
            name: format!("attr.{}", a.name),
            r#type: a.ty as i32,
            description: a.description.clone(),
            source: SourceService::Profile as i32,
            allowed_values: Vec::new(),
        }));
        out
    }

    /// Every aggregate source: the built-in types, then the custom ones.
    pub fn aggregate_sources(&self) -> Vec<AggregateSource> {
        let mut out: Vec<AggregateSource> = BUILTIN_SOURCES
            .iter()
            .map(|(name, measures)| AggregateSource {
                interaction_type: name.to_string(),
                custom: false,
                measures: measures
                    .iter()
                    .map(|(m, ty, d)| AggregateMeasure {
                        name: m.to_string(),
                        r#type: *ty as i32,
                        description: d.to_string(),
                    })
                    .collect(),
            })
            .collect();
        out.extend(self.custom_types.iter().map(|t| AggregateSource {
            interaction_type: t.clone(),
            custom: true,
            measures: Vec::new(),
        }));
        out
    }

    /// The field named `name`, if the catalogue has it.
    pub fn field(&self, name: &str) -> Option<Field> {
        if let Some(b) = BUILTINS.iter().find(|b| b.name == name) {
            return Some(Field {
                name: b.name.to_string(),
                ty: b.ty,
                storage: Storage::Column(b.column),
                allowed: b.allowed.iter().map(|s| s.to_string()).collect(),
            });
        }
        let attr = name.strip_prefix("attr.")?;
        let a = self.attributes.iter().find(|a| a.name == attr)?;
        Some(Field {
            name: name.to_string(),
            ty: a.ty,
            storage: Storage::Attribute(a.name.clone()),
            allowed: Vec::new(),
        })
    }

    pub(super) fn field_names(&self) -> Vec<String> {
        BUILTINS
            .iter()
            .map(|b| b.name.to_string())
            .chain(self.attributes.iter().map(|a| format!("attr.{}", a.name)))
            .collect()
    }

    /// Whether `source` is a custom type of the catalogue.
    pub fn is_custom(&self, source: &str) -> bool {
        self.custom_types.iter().any(|t| t == source)
    }

    pub(super) fn source_names(&self) -> Vec<String> {
        BUILTIN_SOURCES
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(self.custom_types.iter().cloned())
            .collect()
    }
}

/// The type of a measure of a built-in source.
pub(crate) fn measure_type(source: &str, measure: &str) -> Option<FieldType> {
    BUILTIN_SOURCES
        .iter()
        .find(|(n, _)| *n == source)
        .and_then(|(_, ms)| ms.iter().find(|(m, _, _)| *m == measure))
        .map(|(_, ty, _)| *ty)
}

pub fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Unspecified => "UNSPECIFIED",
        FieldType::Bool => "BOOL",
        FieldType::Integer => "INTEGER",
        FieldType::Decimal => "DECIMAL",
        FieldType::Money => "MONEY",
        FieldType::String => "STRING",
        FieldType::Enum => "ENUM",
        FieldType::Timestamp => "TIMESTAMP",
        FieldType::StringList => "STRING_LIST",
    }
}

pub fn is_numeric(ty: FieldType) -> bool {
    matches!(
        ty,
        FieldType::Integer | FieldType::Decimal | FieldType::Money
    )
}
