//! ResolveIdentities over real gRPC and PostgreSQL: one call resolves many
//! identifier sets exactly as ResolveIdentity would resolve them one after
//! the other, refuses bad sets alone, and never creates duplicates when
//! concurrent callers race on the same new identifiers.

mod support;

use std::collections::{HashMap, HashSet};

use rapport_proto::rapport::common::v1::Identifier;
use rapport_proto::rapport::profile::v1::*;
use support::*;
use tonic::Code;
use uuid::Uuid;

fn set(ids: Vec<Identifier>) -> ResolveIdentityRequest {
    ResolveIdentityRequest {
        identifiers: ids,
        ..Default::default()
    }
}

/// A result with customer ids replaced by the index of the first set that
/// named the customer, so two tenants' answers can be compared.
#[derive(Debug, PartialEq)]
enum Shape {
    Resolved {
        customer: usize,
        created: bool,
        attached: Vec<String>,
        identifiers: Vec<String>,
    },
    Conflict(Vec<(usize, Vec<String>)>),
    Refused {
        code: i32,
        fields: Vec<String>,
    },
}

struct Namer(HashMap<String, usize>);

impl Namer {
    fn name(&mut self, id: &str) -> usize {
        let n = self.0.len();
        *self.0.entry(id.to_string()).or_insert(n)
    }
}

fn values(ids: &[Identifier]) -> Vec<String> {
    ids.iter()
        .map(|i| format!("{}:{}", i.kind, i.value))
        .collect()
}

fn shape_single(namer: &mut Namer, r: Result<ResolveIdentityResponse, tonic::Status>) -> Shape {
    match r {
        Err(s) => Shape::Refused {
            code: s.code() as i32,
            fields: if s.code() == Code::InvalidArgument {
                violations(&s)
            } else {
                vec![]
            },
        },
        Ok(r) => match r.result.unwrap() {
            resolve_identity_response::Result::Resolved(c) => resolved_shape(namer, c),
            resolve_identity_response::Result::Conflict(c) => conflict_shape(namer, c),
        },
    }
}

fn resolved_shape(namer: &mut Namer, c: ResolvedCustomer) -> Shape {
    let customer = c.customer.unwrap();
    let mut identifiers: Vec<String> = customer
        .emails
        .iter()
        .map(|e| format!("e:{}:{}", e.address, e.primary))
        .chain(
            customer
                .phones
                .iter()
                .map(|p| format!("p:{}:{}", p.number, p.primary)),
        )
        .collect();
    identifiers.sort();
    Shape::Resolved {
        customer: namer.name(&customer.customer_id),
        created: c.created,
        attached: values(&c.attached_identifiers),
        identifiers,
    }
}

fn conflict_shape(namer: &mut Namer, c: IdentityConflict) -> Shape {
    Shape::Conflict(
        c.matches
            .into_iter()
            .map(|m| (namer.name(&m.customer_id), values(&m.identifiers)))
            .collect(),
    )
}

fn shape_bulk(namer: &mut Namer, r: ResolveIdentitiesResult) -> Shape {
    match r.result.unwrap() {
        resolve_identities_result::Result::Resolved(c) => resolved_shape(namer, c),
        resolve_identities_result::Result::Conflict(c) => conflict_shape(namer, c),
        resolve_identities_result::Result::Refused(r) => Shape::Refused {
            code: r.code,
            fields: r.field_violations.into_iter().map(|f| f.field).collect(),
        },
    }
}

#[tokio::test]
async fn a_bulk_call_decides_exactly_as_single_calls_in_order() {
    let env = start().await;
    let bulk_tenant = env.tenant;
    let single_tenant = Uuid::new_v4();
    let mut bulk = env.client_for(Some(bulk_tenant));
    let mut single = env.client_for(Some(single_tenant));
    // Both tenants start with the same two customers.
    for c in [&mut bulk, &mut single] {
        create(c, person("Ana", "López", "ana@x.com")).await;
        create(c, person("Bo", "Berg", "bo@x.com")).await;
    }
    let mut lookup = set(vec![email("nobody@x.com")]);
    lookup.lookup_only = true;
    let mut lookup_found = set(vec![email("new1@x.com"), phone("+34600000009")]);
    lookup_found.lookup_only = true;
    let mut traits = set(vec![email("org@x.com")]);
    let mut org = organization("Acme SL");
    org.emails.clear();
    org.country_code = "ES".into();
    traits.traits = Some(org);
    let sets = vec![
        // New: created.
        set(vec![email("new1@x.com")]),
        // Shares new1 with the set before: found, its phone attached.
        set(vec![email("New1@X.com"), phone("+34 600 000 001")]),
        // Known: found, a second e-mail attached (not primary).
        set(vec![email("ana@x.com"), email("ana.work@x.com")]),
        // Two customers: a conflict, nothing changed.
        set(vec![email("bo@x.com"), email("ana@x.com")]),
        // Invalid: refused alone.
        set(vec![email("not an e-mail"), phone("12")]),
        set(vec![]),
        // Lookup only: not found, and found (by the phone attached above).
        lookup,
        lookup_found,
        // With traits.
        traits,
        // A new customer found again in the same call, duplicates collapsing.
        set(vec![email("new2@x.com"), email("new2@x.com")]),
        set(vec![email("new2@x.com")]),
    ];
    let answer = bulk
        .resolve_identities(ResolveIdentitiesRequest {
            requests: sets.clone(),
        })
        .await
        .answer();
    assert_eq!(answer.results.len(), sets.len());
    let mut bulk_names = Namer(HashMap::new());
    let got: Vec<Shape> = answer
        .results
        .into_iter()
        .map(|r| shape_bulk(&mut bulk_names, r))
        .collect();
    let mut single_names = Namer(HashMap::new());
    let mut want = Vec::new();
    for s in &sets {
        let r = single
            .resolve_identity(s.clone())
            .await
            .map(|r| r.into_inner());
        want.push(shape_single(&mut single_names, r));
    }
    // Bulk answers show customers as they are at the end of the call: the
    // first set's customer already has the phone the second set attached.
    let after_second = match &want[1] {
        Shape::Resolved { identifiers, .. } => identifiers.clone(),
        other => panic!("{other:?}"),
    };
    if let Shape::Resolved { identifiers, .. } = &mut want[0] {
        *identifiers = after_second;
    }
    assert_eq!(got, want);
    assert!(
        matches!(got[4], Shape::Refused { code: 3, .. }),
        "{:?}",
        got[4]
    );
    assert!(
        matches!(got[6], Shape::Refused { code: 5, .. }),
        "{:?}",
        got[6]
    );

    // The same rows and events as the single calls made.
    let counts = |tenant: Uuid| {
        let url = env.db_url.clone();
        async move {
            let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            let q = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(tenant);
            (
                q("SELECT count(*) FROM profile.customers WHERE tenant_id = $1")
                    .fetch_one(&mut db)
                    .await
                    .unwrap(),
                q("SELECT count(*) FROM profile.identifiers WHERE tenant_id = $1")
                    .fetch_one(&mut db)
                    .await
                    .unwrap(),
                q("SELECT count(*) FROM profile.outbox WHERE tenant_id = $1 AND event_type = 'CustomerCreated'")
                    .fetch_one(&mut db)
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(counts(bulk_tenant).await, counts(single_tenant).await);
    // One CustomerCreated per created customer, with its final snapshot.
    let created = env.typed_events("CustomerCreated").await;
    let snapshot_of_first = created.iter().find_map(|e| match e {
        profile_event::Event::CustomerCreated(c)
            if c.customer
                .as_ref()
                .is_some_and(|c| c.emails.iter().any(|e| e.address == "new1@x.com")) =>
        {
            c.customer.clone()
        }
        _ => None,
    });
    let snapshot = snapshot_of_first.expect("CustomerCreated for new1");
    assert_eq!(snapshot.phones.len(), 1, "{snapshot:?}");
    assert_eq!(
        snapshot.kind,
        CustomerKind::Person as i32,
        "a person: traits of other sets do not leak"
    );
    let org = created.iter().find_map(|e| match e {
        profile_event::Event::CustomerCreated(c)
            if c.customer
                .as_ref()
                .is_some_and(|c| c.emails.iter().any(|e| e.address == "org@x.com")) =>
        {
            c.customer.clone()
        }
        _ => None,
    });
    let org = org.expect("CustomerCreated for the organisation");
    assert_eq!(org.kind, CustomerKind::Organization as i32);
    assert_eq!(org.country_code, "ES");
}

#[tokio::test]
async fn concurrent_bulk_and_single_callers_never_duplicate_a_customer() {
    let env = start().await;
    // 8 bulk callers and 8 single callers race on the same 200 new e-mails,
    // each bulk caller in its own order.
    let emails: Vec<String> = (0..200).map(|n| format!("race{n}@x.com")).collect();
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let mut c = env.client.clone();
        let mut mine = emails.clone();
        mine.rotate_left(w * 25);
        if w % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let r = c
                .resolve_identities(ResolveIdentitiesRequest {
                    requests: mine.iter().map(|e| set(vec![email(e)])).collect(),
                })
                .await
                .answer();
            r.results
                .into_iter()
                .map(|r| match r.result {
                    Some(resolve_identities_result::Result::Resolved(c)) => {
                        c.customer.unwrap().customer_id
                    }
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        }));
    }
    for w in 0..8usize {
        let mut c = env.client.clone();
        let pick: Vec<String> = emails.iter().skip(w).step_by(8).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for e in pick {
                let r = resolve(&mut c, vec![email(&e)]).await;
                match r.result {
                    Some(resolve_identity_response::Result::Resolved(c)) => {
                        out.push(c.customer.unwrap().customer_id)
                    }
                    other => panic!("{other:?}"),
                }
            }
            out
        }));
    }
    let mut seen: HashSet<String> = HashSet::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    assert_eq!(seen.len(), 200, "every e-mail names one customer");
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        200
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.outbox WHERE event_type = 'CustomerCreated'")
            .await,
        200
    );
}

#[tokio::test]
async fn bulk_calls_are_bounded_and_tenant_bound() {
    let env = start().await;
    let mut c = env.client.clone();
    let e = c
        .resolve_identities(ResolveIdentitiesRequest { requests: vec![] })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["requests"]);
    let e = c
        .resolve_identities(ResolveIdentitiesRequest {
            requests: (0..1001)
                .map(|n| set(vec![email(&format!("m{n}@x.com"))]))
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["requests"]);
    assert_eq!(env.events().await, 0, "nothing written");
    // 1,000 sets are fine.
    let ok = c
        .resolve_identities(ResolveIdentitiesRequest {
            requests: (0..1000)
                .map(|n| set(vec![email(&format!("m{n}@x.com"))]))
                .collect(),
        })
        .await
        .answer();
    assert_eq!(ok.results.len(), 1000);
    // Another tenant's identifiers are unknown here: it creates its own.
    let mut other = env.client_for(Some(Uuid::new_v4()));
    let r = other
        .resolve_identities(ResolveIdentitiesRequest {
            requests: vec![set(vec![email("m1@x.com")])],
        })
        .await
        .answer();
    let Some(resolve_identities_result::Result::Resolved(c)) = &r.results[0].result else {
        panic!("{r:?}");
    };
    assert!(c.created);
    // No tenant: refused.
    let mut none = env.client_for(None);
    let e = none
        .resolve_identities(ResolveIdentitiesRequest {
            requests: vec![set(vec![email("m1@x.com")])],
        })
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
}
