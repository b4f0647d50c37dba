//! Contact links.

use super::*;

pub(crate) fn link(person: &str, org: &str, role: i32) -> ContactLink {
    ContactLink {
        person_customer_id: person.into(),
        organization_customer_id: org.into(),
        role,
        ..Default::default()
    }
}

pub(crate) async fn contacts_of(c: &mut Client, org: &str) -> Vec<ContactLink> {
    c.list_contacts(ListContactsRequest {
        organization_customer_id: org.into(),
        include_ended: true,
        ..Default::default()
    })
    .await
    .expect_answer("contacts")
    .links
}

#[tokio::test]
async fn link_and_unlink_contact_refuse_bad_input_and_change_nothing() {
    let (env, mut a, mut b) = start_two_tenants().await;
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let acme = create(&mut a, organization("Acme")).await;
    let bea = create(&mut b, person("Bea", "", "bea@x.com")).await;
    let globex = create(&mut b, organization("Globex")).await;
    let buyer = ContactRole::Buyer as i32;
    let mut original = link(&ana.customer_id, &acme.customer_id, buyer);
    original.job_title = TEXT.into();
    original.start_date = date(1, 1, 1);
    original.end_date = date(9999, 12, 31);
    let stored = a
        .link_contact(LinkContactRequest {
            link: Some(original.clone()),
        })
        .await
        .expect_answer("hostile title and extreme dates are valid")
        .link
        .expect("link");
    assert_eq!(stored.job_title, TEXT);
    assert_eq!(stored.start_date, date(1, 1, 1));
    assert_eq!(stored.end_date, date(9999, 12, 31));
    let events = env.events().await;
    let (p, o) = (ana.customer_id.clone(), acme.customer_id.clone());
    let ana_linked = current(&mut a, &p).await;
    let acme_linked = current(&mut a, &o).await;

    refused(
        a.link_contact(LinkContactRequest { link: None }).await,
        "link",
    );
    let mut cases: Vec<(ContactLink, &str)> = Vec::new();
    for raw in BAD_IDS {
        cases.push((link(raw, &o, buyer), "link.person_customer_id"));
        cases.push((link(&p, raw, buyer), "link.organization_customer_id"));
    }
    for role in [0, 7, 999, -1] {
        cases.push((link(&p, &o, role), "link.role"));
    }
    let with = |f: &dyn Fn(&mut ContactLink)| {
        let mut l = original.clone();
        f(&mut l);
        l
    };
    cases.push((with(&|l| l.job_title = "x".repeat(201)), "link.job_title"));
    cases.push((with(&|l| l.job_title = NUL.into()), "link.job_title"));
    for bad in [
        date(0, 1, 1),
        date(10_000, 1, 1),
        date(-1, 1, 1),
        date(2024, 13, 1),
        date(2023, 2, 29),
        date(2024, 1, 0),
        date(i32::MAX, i32::MIN, i32::MAX),
    ] {
        cases.push((with(&|l| l.start_date = bad), "link.start_date"));
        cases.push((with(&|l| l.end_date = bad), "link.end_date"));
    }
    cases.push((
        with(&|l| {
            l.start_date = date(2024, 1, 2);
            l.end_date = date(2024, 1, 1);
        }),
        "link.end_date",
    ));
    for (l, field) in cases {
        refused(
            a.link_contact(LinkContactRequest { link: Some(l) }).await,
            field,
        );
    }
    // Unknown customers and the other tenant's customers: NOT_FOUND.
    let unknown = Uuid::new_v4().to_string();
    for l in [
        link(&unknown, &o, buyer),
        link(&p, &unknown, buyer),
        link(&bea.customer_id, &o, buyer),
        link(&p, &globex.customer_id, buyer),
    ] {
        failed(
            a.link_contact(LinkContactRequest { link: Some(l) }).await,
            Code::NotFound,
        );
    }
    failed(
        b.link_contact(LinkContactRequest {
            link: Some(original.clone()),
        })
        .await,
        Code::NotFound,
    );
    // Kinds the wrong way round: FAILED_PRECONDITION.
    failed(
        a.link_contact(LinkContactRequest {
            link: Some(link(&o, &p, buyer)),
        })
        .await,
        Code::FailedPrecondition,
    );

    // UnlinkContact.
    for raw in BAD_IDS {
        refused(
            a.unlink_contact(UnlinkContactRequest {
                person_customer_id: raw.into(),
                organization_customer_id: o.clone(),
                role: buyer,
            })
            .await,
            "person_customer_id",
        );
        refused(
            a.unlink_contact(UnlinkContactRequest {
                person_customer_id: p.clone(),
                organization_customer_id: raw.into(),
                role: buyer,
            })
            .await,
            "organization_customer_id",
        );
    }
    for role in [0, 7, 999, -1] {
        refused(
            a.unlink_contact(UnlinkContactRequest {
                person_customer_id: p.clone(),
                organization_customer_id: o.clone(),
                role,
            })
            .await,
            "role",
        );
    }
    for (mut client, person_id, org_id, role) in [
        (a.clone(), p.clone(), o.clone(), ContactRole::User as i32),
        (a.clone(), unknown.clone(), o.clone(), buyer),
        (a.clone(), p.clone(), unknown.clone(), buyer),
        (b.clone(), p.clone(), o.clone(), buyer),
    ] {
        failed(
            client
                .unlink_contact(UnlinkContactRequest {
                    person_customer_id: person_id,
                    organization_customer_id: org_id,
                    role,
                })
                .await,
            Code::NotFound,
        );
    }
    assert_eq!(contacts_of(&mut a, &o).await, vec![stored]);
    assert_eq!(env.events().await, events);
    unchanged(&mut a, &ana_linked).await;
    unchanged(&mut a, &acme_linked).await;
}

#[tokio::test]
async fn list_contacts_and_organizations_refuse_bad_ids_and_tokens() {
    let (_env, mut a, mut b) = start_two_tenants().await;
    let acme = create(&mut a, organization("Acme")).await;
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let globex = create(&mut b, organization("Globex")).await;
    let bea = create(&mut b, person("Bea", "", "bea@x.com")).await;
    for role in [ContactRole::Buyer, ContactRole::User, ContactRole::Other] {
        a.link_contact(LinkContactRequest {
            link: Some(link(&ana.customer_id, &acme.customer_id, role as i32)),
        })
        .await
        .expect("link");
        b.link_contact(LinkContactRequest {
            link: Some(link(&bea.customer_id, &globex.customer_id, role as i32)),
        })
        .await
        .expect("link");
    }
    let contacts = |org: &str, role: i32, size: i32, token: String| ListContactsRequest {
        organization_customer_id: org.into(),
        role,
        include_ended: false,
        page_size: size,
        page_token: token,
    };
    let orgs = |person: &str, size: i32, token: String| ListOrganizationsRequest {
        person_customer_id: person.into(),
        include_ended: false,
        page_size: size,
        page_token: token,
    };
    for raw in BAD_IDS {
        refused(
            a.list_contacts(contacts(raw, 0, 0, String::new())).await,
            "organization_customer_id",
        );
        refused(
            a.list_organizations(orgs(raw, 0, String::new())).await,
            "person_customer_id",
        );
    }
    for role in [7, 999, -1] {
        refused(
            a.list_contacts(contacts(&acme.customer_id, role, 0, String::new()))
                .await,
            "role",
        );
    }
    refused(
        a.list_contacts(contacts(&acme.customer_id, 0, -1, String::new()))
            .await,
        "page_size",
    );
    refused(
        a.list_organizations(orgs(&ana.customer_id, i32::MIN, String::new()))
            .await,
        "page_size",
    );
    // Unknown and foreign ids: NOT_FOUND; the wrong kind: FAILED_PRECONDITION.
    for id in [Uuid::new_v4().to_string(), globex.customer_id.clone()] {
        failed(
            a.list_contacts(contacts(&id, 0, 0, String::new())).await,
            Code::NotFound,
        );
    }
    for id in [Uuid::new_v4().to_string(), bea.customer_id.clone()] {
        failed(
            a.list_organizations(orgs(&id, 0, String::new())).await,
            Code::NotFound,
        );
    }
    failed(
        a.list_contacts(contacts(&ana.customer_id, 0, 0, String::new()))
            .await,
        Code::FailedPrecondition,
    );
    failed(
        a.list_organizations(orgs(&acme.customer_id, 0, String::new()))
            .await,
        Code::FailedPrecondition,
    );

    // Tokens.
    let genuine = a
        .list_contacts(contacts(&acme.customer_id, 0, 1, String::new()))
        .await
        .expect_answer("page")
        .next_page_token;
    let foreign = b
        .list_contacts(contacts(&globex.customer_id, 0, 1, String::new()))
        .await
        .expect_answer("page")
        .next_page_token;
    let orgs_token = a
        .list_organizations(orgs(&ana.customer_id, 1, String::new()))
        .await
        .expect_answer("page")
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign.clone());
    tokens.push(orgs_token.clone());
    for token in tokens {
        refused(
            a.list_contacts(contacts(&acme.customer_id, 0, 1, token))
                .await,
            "page_token",
        );
    }
    refused(
        a.list_contacts(contacts(
            &acme.customer_id,
            ContactRole::Buyer as i32,
            1,
            genuine.clone(),
        ))
        .await,
        "page_token",
    );
    let mut tokens = forged_tokens(&orgs_token);
    tokens.push(genuine.clone());
    tokens.push(foreign);
    for token in tokens {
        refused(
            a.list_organizations(orgs(&ana.customer_id, 1, token)).await,
            "page_token",
        );
    }
    assert_eq!(
        a.list_contacts(contacts(&acme.customer_id, 0, i32::MAX, genuine))
            .await
            .expect_answer("genuine")
            .links
            .len(),
        2
    );
}
