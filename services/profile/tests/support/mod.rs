//! A profile service on a fresh database, served in-process over real gRPC,
//! and clients bound to a tenant.

#![allow(dead_code)]

use rapport_kit::context::TENANT_HEADER;
use rapport_proto::rapport::common::v1::{Identifier, IdentifierKind};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::*;
use rapport_testkit::Running;
use sqlx::{Connection, PgConnection};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;
// Not every test binary calls a service.
#[allow(unused_imports)]
pub use rapport_testkit::{Answer, Refused};

/// Adds a tenant to every call.
#[derive(Clone)]
pub struct Tenant(pub Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Tenant {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut().insert(TENANT_HEADER, t.clone());
        }
        Ok(r)
    }
}

/// A client of the service under test.
pub type Client = ProfileServiceClient<InterceptedService<Channel, Tenant>>;

/// The service under test.
pub struct Env {
    /// The running server.
    pub running: Running,
    /// Superuser URL of its database.
    pub db_url: String,
    /// The first tenant.
    pub tenant: Uuid,
    /// A client of the first tenant.
    pub client: Client,
    channel: Channel,
}

impl Env {
    /// A client for `tenant` (or without a tenant).
    pub fn client_for(&self, tenant: Option<Uuid>) -> Client {
        let value = tenant.map(|t| t.to_string().parse().expect("ascii uuid"));
        ProfileServiceClient::with_interceptor(self.channel.clone(), Tenant(value))
    }

    /// A connection to the database (superuser).
    pub async fn db(&self) -> PgConnection {
        PgConnection::connect(&self.db_url).await.expect("connect")
    }

    /// A connection to the database once every committed event of the
    /// profile feed has its sequence (readers number them; see
    /// `rapport_kit::feed::number_committed`).
    pub async fn feed_db(&self) -> PgConnection {
        let mut c = self.db().await;
        sqlx::query(
            "SELECT count(profile.outbox_number_committed(t))
               FROM (SELECT DISTINCT tenant_id AS t FROM profile.outbox_commits
                      WHERE first_sequence IS NULL ORDER BY 1) x",
        )
        .execute(&mut c)
        .await
        .expect("number the feed");
        c
    }

    /// A scalar query's answer.
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        let mut c = self.db().await;
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut c)
            .await
            .expect("query")
    }

    /// How many events the outbox holds.
    pub async fn events(&self) -> i64 {
        self.scalar("SELECT count(*) FROM profile.outbox").await
    }

    /// The typed events of the outbox whose type is `event_type`, in order
    /// (the envelope decoded from the stored bytes, as consumers see it):
    /// tenant after tenant, in the order of each tenant's first event, each
    /// tenant's in sequence order.
    pub async fn typed_events(&self, event_type: &str) -> Vec<profile_event::Event> {
        use prost::Message;
        let mut c = self.feed_db().await;
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT event_type_url, event FROM profile.outbox_events WHERE event_type = $1
              ORDER BY min(commit_time) OVER (PARTITION BY tenant_id), tenant_id, sequence",
        )
        .bind(event_type)
        .fetch_all(&mut c)
        .await
        .expect("query");
        rows.into_iter()
            .map(|(url, body)| {
                assert_eq!(url, "type.googleapis.com/rapport.profile.v1.ProfileEvent");
                ProfileEvent::decode(body.as_slice())
                    .expect("a ProfileEvent")
                    .event
                    .expect("a case")
            })
            .collect()
    }

    /// The event types on the outbox, in order (as `typed_events`).
    pub async fn event_types(&self) -> Vec<String> {
        let mut c = self.feed_db().await;
        sqlx::query_scalar(
            "SELECT event_type FROM profile.outbox_events
              ORDER BY min(commit_time) OVER (PARTITION BY tenant_id), tenant_id, sequence",
        )
        .fetch_all(&mut c)
        .await
        .expect("query")
    }
}

/// Starts the service on a fresh, migrated database, and hands back a
/// client of its first tenant and one of another tenant.
pub async fn start_two_tenants() -> (Env, Client, Client) {
    let env = start().await;
    let a = env.client.clone();
    let b = env.client_for(Some(Uuid::new_v4()));
    (env, a, b)
}

/// Starts the service on a fresh, migrated database.
pub async fn start() -> Env {
    let profile = rapport_testkit::service!(rapport_profile);
    let db = rapport_testkit::migrated(&[profile]).await;
    let running = profile.serve(rapport_testkit::service_config(&db)).await;
    let channel = connect(&running).await;
    let tenant = Uuid::new_v4();
    let client = ProfileServiceClient::with_interceptor(
        channel.clone(),
        Tenant(Some(tenant.to_string().parse().expect("ascii"))),
    );
    Env {
        running,
        db_url: db.url,
        tenant,
        client,
        channel,
    }
}

async fn connect(running: &Running) -> Channel {
    for _ in 0..100 {
        if let Ok(c) = tonic::transport::Endpoint::from_shared(running.endpoint())
            .expect("endpoint")
            .connect()
            .await
        {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the service did not start");
}

/// A person with a name, an e-mail and optionally a phone.
pub fn person(given: &str, family: &str, email: &str) -> Customer {
    Customer {
        kind: CustomerKind::Person as i32,
        details: Some(customer::Details::Person(PersonDetails {
            given_name: given.into(),
            family_name: family.into(),
            birth_date: None,
        })),
        emails: if email.is_empty() {
            vec![]
        } else {
            vec![EmailAddress {
                address: email.into(),
                primary: false,
                label: String::new(),
            }]
        },
        country_code: "ES".into(),
        ..Default::default()
    }
}

/// An organisation with a legal name.
pub fn organization(legal: &str) -> Customer {
    Customer {
        kind: CustomerKind::Organization as i32,
        details: Some(customer::Details::Organization(OrganizationDetails {
            legal_name: legal.into(),
            ..Default::default()
        })),
        country_code: "ES".into(),
        ..Default::default()
    }
}

/// Creates a customer and returns it.
pub async fn create(client: &mut Client, c: Customer) -> Customer {
    client
        .create_customer(CreateCustomerRequest {
            customer: Some(c),
            request_id: String::new(),
        })
        .await
        .expect_answer("create")
        .customer
        .expect("customer")
}

/// Gets a customer.
pub async fn get(client: &mut Client, id: &str) -> Result<GetCustomerResponse, tonic::Status> {
    client
        .get_customer(GetCustomerRequest {
            customer_id: id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// An e-mail identifier.
pub fn email(v: &str) -> Identifier {
    Identifier {
        kind: IdentifierKind::Email as i32,
        system: String::new(),
        value: v.into(),
    }
}

/// A phone identifier.
pub fn phone(v: &str) -> Identifier {
    Identifier {
        kind: IdentifierKind::Phone as i32,
        system: String::new(),
        value: v.into(),
    }
}

/// An external identifier.
pub fn external(system: &str, v: &str) -> Identifier {
    Identifier {
        kind: IdentifierKind::External as i32,
        system: system.into(),
        value: v.into(),
    }
}

/// The field paths of an INVALID_ARGUMENT's BadRequest detail.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    rapport_testkit::hostile::violations(status)
}

/// Resolves identifiers; the resolved customer and whether it was created.
pub async fn resolve(client: &mut Client, ids: Vec<Identifier>) -> ResolveIdentityResponse {
    client
        .resolve_identity(ResolveIdentityRequest {
            identifiers: ids,
            traits: None,
            lookup_only: false,
        })
        .await
        .expect_answer("resolve")
}
