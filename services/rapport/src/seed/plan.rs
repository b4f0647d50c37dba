//! What a demo tenant looks like: pure, deterministic generation of customers
//! and their histories from a seed. No I/O; `seed::run` sends the plan
//! through the public APIs.
//!
//! Purchases follow the BG/NBD process (Fader, Hardie & Lee 2005) with the
//! parameters the authors fitted to CDNOW (weeks as the unit: r = 0.243,
//! α = 4.414, a = 0.793, b = 2.426), starting at the customer's acquisition;
//! each purchase's value follows Gamma-Gamma spend (p = 6.25, q = 3.74,
//! γ = 15.44), so the valuation service's fits have something true to find.
//! Contacts, service requests, complaints, surveys, web visits, returns and
//! campaign responses are layered on top with plain probabilities.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma};

/// The BG/NBD purchase process and Gamma-Gamma spend of the demo tenant.
pub const BG_NBD: (f64, f64, f64, f64) = (0.243, 4.414, 0.793, 2.426);
/// Gamma-Gamma (p, q, γ).
pub const GAMMA_GAMMA: (f64, f64, f64) = (6.25, 3.74, 15.44);
/// How far back acquisitions go, in weeks.
pub const HISTORY_WEEKS: f64 = 156.0;

/// One campaign of the demo tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignPlan {
    pub name: &'static str,
    pub description: &'static str,
    /// Weeks before `as_of` it started.
    pub weeks_ago: i64,
    /// Share of customers acquired before it who are sent it.
    pub reach: f64,
}

/// The demo tenant's campaigns.
pub fn campaigns() -> Vec<CampaignPlan> {
    vec![
        CampaignPlan {
            name: "Spring sale",
            description: "Seasonal discounts for everyone with marketing consent",
            weeks_ago: 84,
            reach: 0.6,
        },
        CampaignPlan {
            name: "Loyalty club launch",
            description: "Invitation to the loyalty programme",
            weeks_ago: 40,
            reach: 0.5,
        },
        CampaignPlan {
            name: "We miss you",
            description: "Win-back offer for customers who have not bought lately",
            weeks_ago: 12,
            reach: 0.35,
        },
        CampaignPlan {
            name: "New collection",
            description: "Preview of the new collection",
            weeks_ago: 3,
            reach: 0.55,
        },
    ]
}

/// The kind of a planned customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Person,
    Organization,
}

/// A planned customer and everything that happens to it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerPlan {
    /// Its position in the plan (0-based).
    pub index: usize,
    pub kind: Kind,
    pub given_name: String,
    pub family_name: String,
    /// For organisations: the legal name; for people: empty.
    pub legal_name: String,
    pub industry: String,
    pub email: String,
    /// E.164, for customers in countries whose numbers are generated.
    pub phone: Option<String>,
    pub country: &'static str,
    pub tags: Vec<&'static str>,
    /// Custom attribute `tier`.
    pub tier: &'static str,
    /// Custom attribute `interests`.
    pub interests: Vec<&'static str>,
    /// E-mail marketing consent granted (and when), or not asked.
    pub email_marketing: Option<DateTime<Utc>>,
    pub acquired: DateTime<Utc>,
    pub events: Vec<EventPlan>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    Purchase {
        /// In cents.
        amount_cents: i64,
        /// In cents.
        margin_cents: i64,
        items: Vec<ItemPlan>,
        /// Bought in answer to this campaign (index into [`campaigns`]).
        campaign: Option<usize>,
    },
    Return {
        amount_cents: i64,
    },
    Contact {
        /// CALL, EMAIL, CHAT or MEETING.
        kind: ContactKind,
        by_customer: bool,
    },
    /// A service request, resolved after `resolved_after` when set.
    ServiceRequest {
        resolved_after: Option<Duration>,
    },
    Complaint,
    Survey {
        csat: i32,
        nps: i32,
    },
    WebVisit,
    Campaign {
        campaign: usize,
        step: CampaignStep,
    },
}

/// A contact type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactKind {
    Call,
    Email,
    Chat,
    Meeting,
}

/// A campaign response step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignStep {
    Sent,
    Opened,
    Clicked,
    Converted,
}

/// One line of a purchase.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemPlan {
    pub sku: &'static str,
    pub name: &'static str,
    pub category: &'static str,
    pub quantity: u32,
    pub unit_cents: i64,
}

/// One event of a customer's history.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPlan {
    pub at: DateTime<Utc>,
    pub what: What,
}

const GIVEN: [&str; 24] = [
    "Ana", "Lucía", "Marta", "Sofía", "Elena", "Carmen", "Julia", "Paula", "Claire", "Emma",
    "Hannah", "Olivia", "Javier", "Carlos", "Diego", "Pablo", "Luis", "Miguel", "Louis", "Hugo",
    "Lukas", "Jonas", "James", "Noah",
];
const FAMILY: [&str; 20] = [
    "García",
    "López",
    "Martínez",
    "Sánchez",
    "Pérez",
    "Gómez",
    "Ruiz",
    "Hernández",
    "Díaz",
    "Moreno",
    "Martin",
    "Bernard",
    "Dubois",
    "Müller",
    "Schmidt",
    "Fischer",
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
];
const ORG_WORDS: [&str; 12] = [
    "Atlas", "Boreal", "Cobalt", "Delta", "Estrella", "Faro", "Granito", "Helios", "Iris",
    "Júpiter", "Kora", "Lumen",
];
const ORG_KINDS: [&str; 6] = [
    "Logística",
    "Hoteles",
    "Retail",
    "Consulting",
    "Foods",
    "Systems",
];
const INDUSTRIES: [&str; 6] = [
    "logistics",
    "hospitality",
    "retail",
    "consulting",
    "food",
    "software",
];
/// Countries with their weights.
const COUNTRIES: [(&str, u32); 6] = [
    ("ES", 30),
    ("MX", 15),
    ("FR", 15),
    ("DE", 15),
    ("GB", 10),
    ("US", 15),
];
const TIERS: [(&str, u32); 4] = [
    ("bronze", 40),
    ("silver", 30),
    ("gold", 20),
    ("platinum", 10),
];
const INTERESTS: [&str; 6] = ["running", "golf", "cooking", "travel", "design", "music"];
const CATALOGUE: [(&str, &str, &str, i64); 8] = [
    ("SKU-TEE-01", "Organic cotton tee", "apparel", 1900),
    ("SKU-JKT-02", "Rain jacket", "apparel", 8900),
    ("SKU-SNK-03", "Trail sneakers", "footwear", 11900),
    ("SKU-MUG-04", "Ceramic mug", "home", 1200),
    ("SKU-LMP-05", "Desk lamp", "home", 4500),
    ("SKU-BAG-06", "Canvas backpack", "accessories", 5900),
    ("SKU-BTL-07", "Steel bottle", "accessories", 2400),
    ("SKU-BOK-08", "Field notebook", "stationery", 900),
];

fn pick<'a, T, R: Rng + ?Sized>(rng: &mut R, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn weighted<R: Rng + ?Sized>(rng: &mut R, items: &[(&'static str, u32)]) -> &'static str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (v, w) in items {
        if x < *w {
            return v;
        }
        x -= w;
    }
    items[0].0
}

fn ascii_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' | 'à' => 'a',
            'é' | 'è' => 'e',
            'í' => 'i',
            'ó' => 'o',
            'ú' | 'ü' => 'u',
            'ñ' => 'n',
            c => c.to_ascii_lowercase(),
        })
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn weeks(w: f64) -> Duration {
    Duration::seconds((w * 7.0 * 86_400.0).round() as i64)
}

/// The customer at `index` of the plan for `seed`, with history up to `as_of`.
/// Each customer has its own random stream, so a plan is the same whatever
/// the order or concurrency in which it is sent.
pub fn customer(seed: u64, index: usize, as_of: DateTime<Utc>) -> CustomerPlan {
    let mut rng = StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9),
    );
    let kind = if rng.random_bool(0.15) {
        Kind::Organization
    } else {
        Kind::Person
    };
    let given = pick(&mut rng, &GIVEN).to_string();
    let family = pick(&mut rng, &FAMILY).to_string();
    let country = weighted(&mut rng, &COUNTRIES);
    let (legal_name, industry, email) = match kind {
        Kind::Person => (
            String::new(),
            String::new(),
            format!(
                "{}.{}.{index}@example.com",
                ascii_lower(&given),
                ascii_lower(&family)
            ),
        ),
        Kind::Organization => {
            let k = rng.random_range(0..ORG_KINDS.len());
            let name = format!("{} {}", pick(&mut rng, &ORG_WORDS), ORG_KINDS[k]);
            let email = format!("purchasing.{}.{index}@example.org", ascii_lower(&name));
            (name, INDUSTRIES[k].to_string(), email)
        }
    };
    // Mobile ranges every number of which is valid: Spain 6xx xxx xxx,
    // France 06 1x xx xx xx.
    let phone = match country {
        "ES" => Some(format!("+346{:08}", rng.random_range(0..100_000_000u32))),
        "FR" => Some(format!("+3361{:07}", rng.random_range(0..10_000_000u32))),
        _ => None,
    };
    let mut tags = Vec::new();
    if rng.random_bool(0.05) {
        tags.push("vip");
    }
    if rng.random_bool(0.4) {
        tags.push("newsletter");
    }
    if kind == Kind::Organization {
        tags.push("b2b");
        if rng.random_bool(0.3) {
            tags.push("contract");
        }
    }
    let tier = weighted(&mut rng, &TIERS);
    let interests: Vec<&'static str> = INTERESTS
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.25))
        .collect();

    let acquired = as_of - weeks(rng.random_range(1.0 / 7.0..HISTORY_WEEKS));
    let email_marketing = rng
        .random_bool(0.6)
        .then(|| acquired + Duration::hours(rng.random_range(0..48)));

    let mut events = Vec::new();
    // BG/NBD: a purchase rate and a dropout probability per customer.
    let (r, alpha, a, b) = BG_NBD;
    let lambda = Gamma::new(r, 1.0 / alpha)
        .map_or(0.05, |g| g.sample(&mut rng))
        .max(1e-6);
    let p = Beta::new(a, b).map_or(0.25, |d| d.sample(&mut rng));
    let (gp, gq, gg) = GAMMA_GAMMA;
    let nu = Gamma::new(gq, 1.0 / gg)
        .map_or(0.07, |g| g.sample(&mut rng))
        .max(1e-6);
    let spend = Gamma::new(gp, 1.0 / nu).ok();
    let mut purchase_times = vec![acquired];
    if let Ok(gap) = Exp::new(lambda) {
        let mut t = acquired;
        loop {
            if rng.random::<f64>() < p {
                break;
            }
            t += weeks(gap.sample(&mut rng));
            if t >= as_of {
                break;
            }
            purchase_times.push(t);
        }
    }
    for &at in &purchase_times {
        let value = spend
            .as_ref()
            .map_or(35.0, |g| g.sample(&mut rng))
            .clamp(1.0, 5_000.0);
        let amount_cents = (value * 100.0).round() as i64;
        let items = basket(&mut rng, amount_cents);
        events.push(EventPlan {
            at,
            what: What::Purchase {
                amount_cents,
                margin_cents: amount_cents * rng.random_range(20..45) / 100,
                items,
                campaign: None,
            },
        });
        if rng.random_bool(0.05) {
            let back = at + Duration::days(rng.random_range(2..20));
            if back < as_of {
                events.push(EventPlan {
                    at: back,
                    what: What::Return {
                        amount_cents: amount_cents / 2,
                    },
                });
            }
        }
    }

    let span = (as_of - acquired).num_seconds().max(1);
    let at_random = |rng: &mut StdRng| acquired + Duration::seconds(rng.random_range(0..span));
    for _ in 0..rng.random_range(0..4) {
        let kind = *pick(
            &mut rng,
            &[
                ContactKind::Call,
                ContactKind::Email,
                ContactKind::Chat,
                ContactKind::Meeting,
            ],
        );
        let at = at_random(&mut rng);
        let by_customer = rng.random_bool(0.5);
        events.push(EventPlan {
            at,
            what: What::Contact { kind, by_customer },
        });
    }
    if rng.random_bool(0.15) {
        let at = at_random(&mut rng);
        let resolved_after = rng
            .random_bool(0.7)
            .then(|| Duration::hours(rng.random_range(2..240)));
        events.push(EventPlan {
            at,
            what: What::ServiceRequest { resolved_after },
        });
    }
    if rng.random_bool(0.05) {
        let at = at_random(&mut rng);
        events.push(EventPlan {
            at,
            what: What::Complaint,
        });
    }
    if rng.random_bool(0.3) {
        let at = at_random(&mut rng);
        let csat = *pick(&mut rng, &[2, 3, 4, 4, 5, 5, 5]);
        let nps = (csat * 2 + rng.random_range(-1..=1)).clamp(0, 10);
        events.push(EventPlan {
            at,
            what: What::Survey { csat, nps },
        });
    }
    for _ in 0..rng.random_range(0..6) {
        let at = at_random(&mut rng);
        events.push(EventPlan {
            at,
            what: What::WebVisit,
        });
    }
    for (c, plan) in campaigns().iter().enumerate() {
        let start = as_of - Duration::weeks(plan.weeks_ago);
        if acquired >= start || email_marketing.is_none() || !rng.random_bool(plan.reach) {
            continue;
        }
        let mut at = start + Duration::hours(rng.random_range(0..72));
        for (step, chance) in [
            (CampaignStep::Sent, 1.0),
            (CampaignStep::Opened, 0.4),
            (CampaignStep::Clicked, 0.3),
            (CampaignStep::Converted, 0.2),
        ] {
            if at >= as_of || !rng.random_bool(chance) {
                break;
            }
            events.push(EventPlan {
                at,
                what: What::Campaign { campaign: c, step },
            });
            if step == CampaignStep::Converted {
                let amount_cents = rng.random_range(1500..12000);
                let items = basket(&mut rng, amount_cents);
                events.push(EventPlan {
                    at,
                    what: What::Purchase {
                        amount_cents,
                        margin_cents: amount_cents / 4,
                        items,
                        campaign: Some(c),
                    },
                });
            }
            at += Duration::minutes(rng.random_range(5..3000));
        }
    }
    events.retain(|e| e.at <= as_of);
    events.sort_by_key(|e| e.at);

    CustomerPlan {
        index,
        kind,
        given_name: given,
        family_name: family,
        legal_name,
        industry,
        email,
        phone,
        country,
        tags,
        tier,
        interests,
        email_marketing,
        acquired,
        events,
    }
}

/// Line items adding up to `amount_cents`: catalogue items, the last line
/// priced to make up the difference.
fn basket(rng: &mut StdRng, amount_cents: i64) -> Vec<ItemPlan> {
    let (sku, name, category, list) = *pick(rng, &CATALOGUE);
    let quantity = (amount_cents / list).clamp(1, 5) as u32;
    let unit_cents = (amount_cents / i64::from(quantity)).max(1);
    vec![ItemPlan {
        sku,
        name,
        category,
        quantity,
        unit_cents,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn as_of() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_seed_gives_the_same_customers_and_another_seed_others() {
        let a: Vec<_> = (0..50).map(|i| customer(7, i, as_of())).collect();
        let b: Vec<_> = (0..50).map(|i| customer(7, i, as_of())).collect();
        let c: Vec<_> = (0..50).map(|i| customer(8, i, as_of())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Order does not matter: customer 30 alone is customer 30.
        assert_eq!(customer(7, 30, as_of()), a[30]);
    }

    #[test]
    fn histories_are_plausible() {
        let plans: Vec<_> = (0..3000).map(|i| customer(1, i, as_of())).collect();
        let mut purchases = 0usize;
        let mut repeaters = 0usize;
        for p in &plans {
            assert!(p.acquired < as_of());
            assert!(
                p.events
                    .iter()
                    .all(|e| e.at >= p.acquired && e.at <= as_of())
            );
            assert!(p.events.windows(2).all(|w| w[0].at <= w[1].at));
            // The first purchase is the acquisition.
            let first = p
                .events
                .iter()
                .find(|e| matches!(e.what, What::Purchase { .. }))
                .unwrap();
            assert_eq!(first.at, p.acquired);
            let n = p
                .events
                .iter()
                .filter(|e| matches!(e.what, What::Purchase { campaign: None, .. }))
                .count();
            purchases += n;
            repeaters += usize::from(n > 1);
            for e in &p.events {
                if let What::Purchase {
                    amount_cents,
                    margin_cents,
                    items,
                    ..
                } = &e.what
                {
                    assert!(*amount_cents >= 100 && margin_cents < amount_cents);
                    assert!(!items.is_empty());
                }
            }
            assert!(p.email.contains('@') && p.email.is_ascii());
            if let Some(phone) = &p.phone {
                assert!(phone.starts_with('+') && phone.len() == 12);
            }
        }
        // CDNOW-like: most customers buy once, a substantial minority repeat.
        let share = repeaters as f64 / plans.len() as f64;
        assert!((0.2..0.7).contains(&share), "repeat share {share}");
        assert!(purchases > plans.len());
    }
}
