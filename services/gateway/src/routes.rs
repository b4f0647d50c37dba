//! Which service owns a gRPC method and which scope calling it needs: pure
//! logic over the method path, so forwarding needs no per-method code.

/// What the gateway does with a call, decided from its path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Forward to the backend serving `area` (profile, interaction,
    /// segmentation, valuation), after checking `scope`.
    Forward {
        /// The backend: `profile`, `interaction`, `segmentation` or `valuation`.
        area: &'static str,
        /// The scope the key needs.
        scope: String,
        /// Whether the method streams (counted against the key's open streams).
        streaming: bool,
    },
    /// A change feed: internal to the services, never forwarded.
    Internal,
    /// Not a method of any public service.
    Unknown,
}

/// Public services the gateway forwards, each with its backend area.
pub const FORWARDED: [(&str, &str); 6] = [
    ("rapport.profile.v1.ProfileService", "profile"),
    ("rapport.interaction.v1.InteractionService", "interaction"),
    ("rapport.interaction.v1.CampaignService", "interaction"),
    (
        "rapport.segmentation.v1.SegmentationService",
        "segmentation",
    ),
    ("rapport.valuation.v1.ValuationService", "valuation"),
    ("rapport.engagement.v1.EngagementService", "engagement"),
];

/// The methods that only read, per forwarded service (AdminService's
/// documentation lists them); every other method needs the write scope.
const READS: [(&str, &[&str]); 6] = [
    (
        "rapport.profile.v1.ProfileService",
        &[
            "GetCustomer",
            "BatchGetCustomers",
            "ListCustomers",
            "SearchCustomers",
            "FindDuplicates",
            "CheckConsent",
            "ListConsentHistory",
            "ListContacts",
            "ListOrganizations",
            "ListAttributeDefinitions",
        ],
    ),
    (
        "rapport.interaction.v1.InteractionService",
        &[
            "GetInteraction",
            "ListInteractions",
            "GetCustomerSummary",
            "ExportSummaries",
        ],
    ),
    (
        "rapport.interaction.v1.CampaignService",
        &["GetCampaign", "ListCampaigns", "GetCampaignReport"],
    ),
    (
        "rapport.segmentation.v1.SegmentationService",
        &[
            "ListFields",
            "GetSegment",
            "ListSegments",
            "PreviewSegment",
            "ListRuleMatches",
            "ListMembers",
            "GetCustomerSegments",
            "GetSegmentHistory",
            "WatchMembership",
            "ExplainMembership",
            "GetRfmReport",
            "ClassifyCustomer",
            "GetClassificationPolicy",
        ],
    ),
    (
        "rapport.valuation.v1.ValuationService",
        &[
            "CompareModels",
            "GetModel",
            "ListModels",
            "GetCustomerValue",
            "BatchGetCustomerValues",
            "RankCustomers",
            "GetValueConcentration",
            "GetCohortReport",
            "GetSegmentValue",
            "GetRelationshipScores",
            "GetCostModel",
            "ListCostModels",
            "GetCustomerProfitability",
            "GetProfitabilityReport",
        ],
    ),
    (
        "rapport.engagement.v1.EngagementService",
        &[
            "GetTreatment",
            "ListTreatments",
            "GetPolicy",
            "ListDecisions",
            "GetTreatmentReport",
        ],
    ),
];

/// Which services a gateway forwards and which of their methods only read.
#[derive(Debug, Clone)]
pub struct RouteTable {
    entries: Vec<(String, &'static str, Vec<String>)>,
    streaming: std::collections::HashSet<String>,
}

impl RouteTable {
    /// The public services in `served`, with their documented read methods.
    pub fn public(served: &[&str]) -> Self {
        let entries = FORWARDED
            .iter()
            .filter(|(s, _)| served.contains(s))
            .map(|(s, area)| {
                let reads = READS
                    .iter()
                    .find(|(r, _)| r == s)
                    .map_or(&[][..], |(_, m)| *m);
                (
                    s.to_string(),
                    *area,
                    reads.iter().map(|m| m.to_string()).collect(),
                )
            })
            .collect();
        let streaming = served
            .iter()
            .flat_map(|s| rapport_kit::server::any_streaming_methods(s))
            .collect();
        Self { entries, streaming }
    }

    /// Marks `paths` (`/package.Service/Method`) as streaming methods.
    pub fn with_streaming(mut self, paths: &[&str]) -> Self {
        self.streaming.extend(paths.iter().map(|p| p.to_string()));
        self
    }

    /// A table of explicit entries: service, backend area, read methods.
    pub fn new(entries: Vec<(String, &'static str, Vec<String>)>) -> Self {
        Self {
            entries,
            streaming: Default::default(),
        }
    }

    /// The services this table forwards.
    pub fn services(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.entries.iter().map(|(s, a, _)| (s.as_str(), *a))
    }

    /// The route of a call to `path` under this table.
    pub fn route(&self, path: &str) -> Route {
        let Some((service, method)) = split_path(path) else {
            return Route::Unknown;
        };
        let Some((_, area, reads)) = self.entries.iter().find(|(s, _, _)| s == service) else {
            return Route::Unknown;
        };
        if method == "WatchChanges" || method == "GetFeedHead" {
            return Route::Internal;
        }
        let access = if reads.iter().any(|m| m == method) {
            "read"
        } else {
            "write"
        };
        Route::Forward {
            area,
            scope: format!("{area}:{access}"),
            streaming: self.streaming.contains(path),
        }
    }
}

/// Splits `/package.Service/Method`.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The route of a call to `path` among all public services.
pub fn route(path: &str) -> Route {
    let all: Vec<&str> = FORWARDED.iter().map(|(s, _)| *s).collect();
    RouteTable::public(&all).route(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(area: &'static str, scope: &str) -> Route {
        Route::Forward {
            area,
            scope: scope.into(),
            streaming: false,
        }
    }

    #[test]
    fn routes_by_service_and_access() {
        assert_eq!(
            route("/rapport.profile.v1.ProfileService/GetCustomer"),
            fwd("profile", "profile:read")
        );
        assert_eq!(
            route("/rapport.profile.v1.ProfileService/ResolveIdentity"),
            fwd("profile", "profile:write")
        );
        assert_eq!(
            route("/rapport.interaction.v1.CampaignService/GetCampaignReport"),
            fwd("interaction", "interaction:read")
        );
        assert_eq!(
            route("/rapport.interaction.v1.InteractionService/RecordInteractions"),
            Route::Forward {
                area: "interaction",
                scope: "interaction:write".into(),
                streaming: true
            }
        );
        assert_eq!(
            route("/rapport.segmentation.v1.SegmentationService/WatchMembership"),
            Route::Forward {
                area: "segmentation",
                scope: "segmentation:read".into(),
                streaming: true
            }
        );
        assert_eq!(
            route("/rapport.valuation.v1.ValuationService/FitModel"),
            fwd("valuation", "valuation:write")
        );
        // Unlisted methods need the write scope.
        assert_eq!(
            route("/rapport.valuation.v1.ValuationService/SomethingNew"),
            fwd("valuation", "valuation:write")
        );
    }

    #[test]
    fn feeds_are_internal_and_others_unknown() {
        assert_eq!(
            route("/rapport.profile.v1.ProfileService/WatchChanges"),
            Route::Internal
        );
        assert_eq!(
            route("/rapport.interaction.v1.InteractionService/WatchChanges"),
            Route::Internal
        );
        assert_eq!(
            route("/rapport.interaction.v1.InteractionService/GetFeedHead"),
            Route::Internal
        );
        assert_eq!(route("/rapport.other.v1.Nope/Get"), Route::Unknown);
        assert_eq!(route("/"), Route::Unknown);
        assert_eq!(route("/a/b/c"), Route::Unknown);
        assert_eq!(route("no-slash"), Route::Unknown);
    }
}
