//! Tenancy: every method without a valid tenant, and feed positions of other tenants.

use super::*;

/// Every tenant-scoped method with an otherwise harmless request.
pub(crate) async fn call_every_method(c: &mut Client) -> Vec<(&'static str, Status)> {
    let id = Uuid::new_v4().to_string();
    let other = Uuid::new_v4().to_string();
    let mut out = Vec::new();
    macro_rules! call {
        ($name:literal, $e:expr) => {
            match $e.await {
                Ok(_) => panic!("{} answered without a valid tenant", $name),
                Err(s) => out.push(($name, s)),
            }
        };
    }
    call!(
        "CreateCustomer",
        c.create_customer(CreateCustomerRequest {
            customer: Some(person("Ana", "", "ana@x.com")),
            request_id: String::new(),
        })
    );
    call!(
        "ResolveIdentities",
        c.resolve_identities(ResolveIdentitiesRequest {
            requests: vec![ResolveIdentityRequest {
                identifiers: vec![email("ana@x.com")],
                ..Default::default()
            }],
        })
    );
    call!(
        "ImportCustomers",
        c.import_customers(futures::stream::iter(vec![ImportCustomersRequest {
            items: vec![ImportCustomerItem {
                customer: Some(person("Ana", "", "ana@x.com")),
                ..Default::default()
            }],
        }]))
    );
    call!(
        "GetCustomer",
        c.get_customer(GetCustomerRequest {
            customer_id: id.clone()
        })
    );
    call!(
        "BatchGetCustomers",
        c.batch_get_customers(BatchGetCustomersRequest {
            customer_ids: vec![id.clone()]
        })
    );
    call!(
        "UpdateCustomer",
        c.update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: id.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["tags"]),
        })
    );
    call!(
        "DeleteCustomer",
        c.delete_customer(DeleteCustomerRequest {
            customer_id: id.clone(),
            etag: String::new()
        })
    );
    call!(
        "UndeleteCustomer",
        c.undelete_customer(UndeleteCustomerRequest {
            customer_id: id.clone(),
            etag: String::new()
        })
    );
    call!(
        "ListCustomers",
        c.list_customers(ListCustomersRequest::default())
    );
    call!(
        "SearchCustomers",
        c.search_customers(SearchCustomersRequest {
            query: "ana".into(),
            ..Default::default()
        })
    );
    call!(
        "ResolveIdentity",
        c.resolve_identity(ResolveIdentityRequest {
            identifiers: vec![email("ana@x.com")],
            traits: None,
            lookup_only: false,
        })
    );
    call!(
        "FindDuplicates",
        c.find_duplicates(FindDuplicatesRequest::default())
    );
    call!(
        "MergeCustomers",
        c.merge_customers(MergeCustomersRequest {
            survivor_customer_id: id.clone(),
            merged_customer_id: other.clone(),
            ..Default::default()
        })
    );
    call!(
        "UnmergeCustomers",
        c.unmerge_customers(UnmergeCustomersRequest {
            merged_customer_id: id.clone(),
            request_id: String::new(),
        })
    );
    call!(
        "MarkNotDuplicate",
        c.mark_not_duplicate(MarkNotDuplicateRequest {
            first_customer_id: id.clone(),
            second_customer_id: other.clone(),
        })
    );
    call!(
        "EraseCustomer",
        c.erase_customer(EraseCustomerRequest {
            customer_id: id.clone(),
            request_reference: String::new(),
        })
    );
    call!(
        "LinkContact",
        c.link_contact(LinkContactRequest {
            link: Some(ContactLink {
                person_customer_id: id.clone(),
                organization_customer_id: other.clone(),
                role: ContactRole::Buyer as i32,
                ..Default::default()
            }),
        })
    );
    call!(
        "UnlinkContact",
        c.unlink_contact(UnlinkContactRequest {
            person_customer_id: id.clone(),
            organization_customer_id: other.clone(),
            role: ContactRole::Buyer as i32,
        })
    );
    call!(
        "ListContacts",
        c.list_contacts(ListContactsRequest {
            organization_customer_id: id.clone(),
            ..Default::default()
        })
    );
    call!(
        "ListOrganizations",
        c.list_organizations(ListOrganizationsRequest {
            person_customer_id: id.clone(),
            ..Default::default()
        })
    );
    call!(
        "SetConsent",
        c.set_consent(consent_request(&id, ConsentStatus::Granted))
    );
    call!(
        "CheckConsent",
        c.check_consent(CheckConsentRequest {
            customer_id: id.clone(),
            channel: ConsentChannel::Email as i32,
            purpose: ConsentPurpose::Marketing as i32,
        })
    );
    call!(
        "ListConsentHistory",
        c.list_consent_history(ListConsentHistoryRequest {
            customer_id: id.clone(),
            ..Default::default()
        })
    );
    call!(
        "CreateAttributeDefinition",
        c.create_attribute_definition(CreateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                r#type: AttributeType::String as i32,
                ..Default::default()
            }),
        })
    );
    call!(
        "ListAttributeDefinitions",
        c.list_attribute_definitions(ListAttributeDefinitionsRequest::default())
    );
    call!(
        "UpdateAttributeDefinition",
        c.update_attribute_definition(UpdateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                description: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
    );
    call!(
        "DeprecateAttributeDefinition",
        c.deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
            name: "tier".into()
        })
    );
    out
}

#[tokio::test]
async fn a_call_without_a_valid_tenant_is_unauthenticated_on_every_method() {
    let env = start().await;
    let channel = rapport_testkit::channel(&env.running).await;
    let mut clients = vec![env.client_for(None)];
    for raw in ["not-a-tenant", "1 OR 1=1", "../x", ""] {
        let value = raw.parse().expect("ascii metadata");
        clients.push(ProfileServiceClient::with_interceptor(
            channel.clone(),
            Tenant(Some(value)),
        ));
    }
    for mut c in clients {
        let answers = call_every_method(&mut c).await;
        assert_eq!(answers.len(), 27, "every tenant-scoped method");
        for (method, status) in answers {
            assert_eq!(status.code(), Code::Unauthenticated, "{method}: {status:?}");
        }
    }
    // Nothing was written by any of them.
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        0
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.attribute_definitions")
            .await,
        0
    );
    assert_eq!(env.events().await, 0);
}

#[tokio::test]
async fn watch_changes_refuses_negative_sequences_and_foreign_positions() {
    let env = start().await;
    let mut internal = env.client_for(None);
    for after in [-1, i64::MIN] {
        refused(
            internal
                .watch_changes(WatchChangesRequest {
                    after_sequence: after,
                    ..Default::default()
                })
                .await
                .map(|_| Response::new(())),
            "after_sequence",
        );
    }
    // On behalf of a tenant: a negative sequence, or a position naming
    // another tenant, is refused with its field.
    let mut tenant = env.client.clone();
    refused(
        tenant
            .watch_changes(WatchChangesRequest {
                after_sequence: -1,
                ..Default::default()
            })
            .await
            .map(|_| Response::new(())),
        "after_sequence",
    );
    for (bad, field) in [
        ("not-a-tenant".to_string(), "positions[0].tenant_id"),
        (Uuid::new_v4().to_string(), "positions[0].tenant_id"),
    ] {
        refused(
            tenant
                .watch_changes(WatchChangesRequest {
                    after_sequence: 0,
                    positions: vec![FeedPosition {
                        tenant_id: bad,
                        after_sequence: 0,
                    }],
                })
                .await
                .map(|_| Response::new(())),
            field,
        );
    }
    refused(
        internal
            .watch_changes(WatchChangesRequest {
                after_sequence: 0,
                positions: vec![FeedPosition {
                    tenant_id: Uuid::new_v4().to_string(),
                    after_sequence: -5,
                }],
            })
            .await
            .map(|_| Response::new(())),
        "positions[0].after_sequence",
    );
    // A sequence far beyond the last event is simply "nothing yet".
    create(&mut tenant, person("Ana", "", "ana@x.com")).await;
    let mut stream = internal
        .watch_changes(WatchChangesRequest {
            after_sequence: i64::MAX,
            ..Default::default()
        })
        .await
        .expect_answer("a sequence beyond the end is valid");
    let next = tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "no event after i64::MAX: {next:?}");
    // From 0 the backlog arrives.
    let mut stream = internal
        .watch_changes(WatchChangesRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .expect_answer("watch");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("the backlog arrives")
        .expect("an item")
        .expect("an event");
    assert_eq!(first.event.expect("event").event_type, "CustomerCreated");
}
