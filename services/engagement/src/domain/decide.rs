//! Deciding for one customer: which active treatments it is eligible for
//! (each left out with the first rule it fails), who is held out in a
//! control group, and the ranking by expected net value, explained.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rapport_proto::rapport::common::v1::{LadderRung, RelationshipStage};
use rapport_proto::rapport::engagement::v1::{ContactChannel, FilterReason, TreatmentKind};
use rapport_proto::rapport::interaction::v1::Channel;
use rapport_proto::rapport::profile::v1::{ConsentChannel, ConsentPurpose};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::consent::{self, Record};
use super::policy::Policy;
use super::propensity::Posterior;
use super::treatment::{Stored, Value};
use super::{Amount, NANOS};

/// What the feeds said of the customer.
#[derive(Debug, Clone, Default)]
pub struct Customer {
    pub customer_id: Uuid,
    /// `LadderRung` number (0: not classified).
    pub ladder_rung: i32,
    /// `RelationshipStage` number (0: not classified).
    pub stage: i32,
    pub clv: Option<Amount>,
    /// CLV net of the cost to serve (in the CLV's currency).
    pub net_clv: Option<Amount>,
    pub p_alive: Option<f64>,
    pub segments: HashSet<Uuid>,
    /// The record in force per (consent channel, purpose).
    pub consents: HashMap<(i32, i32), Record>,
    /// Company-initiated contacts per interaction channel (the times).
    pub contacts: HashMap<i32, Vec<DateTime<Utc>>>,
    pub last_complaint: Option<DateTime<Utc>>,
    pub last_unsubscribe: Option<DateTime<Utc>>,
    /// Gross margin over the last 365 days, in nanos, per currency.
    pub margins: HashMap<String, i64>,
    /// Complaints still open.
    pub open_complaints: i32,
}

/// The consent channel of a treatment channel (`None`: only a consent for
/// ANY channel applies).
pub fn consent_channel(channel: i32) -> Option<i32> {
    let c = match ContactChannel::try_from(channel).ok()? {
        ContactChannel::Email => ConsentChannel::Email,
        ContactChannel::Sms => ConsentChannel::Sms,
        ContactChannel::Push => ConsentChannel::Push,
        ContactChannel::Phone => ConsentChannel::Phone,
        ContactChannel::FieldVisit | ContactChannel::Unspecified => return None,
    };
    Some(c as i32)
}

/// The interaction channel whose company-initiated interactions count as
/// contacts on a treatment channel.
pub fn interaction_channel(channel: i32) -> Option<i32> {
    let c = match ContactChannel::try_from(channel).ok()? {
        ContactChannel::Email => Channel::Email,
        ContactChannel::Sms | ContactChannel::Push => Channel::Mobile,
        ContactChannel::Phone => Channel::Phone,
        ContactChannel::FieldVisit => Channel::Field,
        ContactChannel::Unspecified => return None,
    };
    Some(c as i32)
}

/// Whether the customer is in the treatment's control group: a fixed draw,
/// the first 8 bytes of SHA-256(treatment id ‖ customer id) as a fraction of
/// 2⁶⁴, below the share.
pub fn in_control(treatment: Uuid, customer: Uuid, share_bps: i32) -> bool {
    if share_bps <= 0 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(treatment.as_bytes());
    h.update(customer.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    let u = u64::from_be_bytes(b);
    // u / 2^64 < bps / 10^4  ⇔  u × 10^4 < bps × 2^64
    u128::from(u) * 10_000 < (share_bps as u128) << 64
}

/// One treatment offered.
#[derive(Debug, Clone)]
pub struct Action {
    /// Index in the treatments given.
    pub index: usize,
    pub rank: i32,
    pub posterior: Posterior,
    /// The probability ranked with.
    pub ranked_p: f64,
    pub value: Amount,
    pub cost: Amount,
    /// Expected net value with the posterior mean, in nanos.
    pub expected_net: i128,
    pub score: f64,
    pub eligible_because: Vec<String>,
    pub rank_reason: String,
}

/// One treatment left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    pub index: usize,
    pub reason: FilterReason,
    pub detail: String,
}

/// What was decided.
#[derive(Debug, Clone, Default)]
pub struct Decided {
    pub actions: Vec<Action>,
    pub filtered: Vec<Filtered>,
    /// The name of the play that ordered the kinds, if one matched.
    pub play: Option<String>,
}

/// How the propensity is ranked.
pub enum Ranking<'r, R: Rng + ?Sized> {
    /// By the posterior mean.
    Mean,
    /// By a draw from the posterior.
    Sample(&'r mut R),
}

/// Text of an amount, e.g. "EUR 20.50".
pub fn show(currency: &str, nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let a = nanos.unsigned_abs();
    let units = a / NANOS as u128;
    let frac = format!("{:09}", a % NANOS as u128);
    let trimmed = frac.trim_end_matches('0');
    let frac = if trimmed.len() < 2 {
        &frac[..2]
    } else {
        trimmed
    };
    format!("{currency} {sign}{units}.{frac}")
}

fn rung_name(r: i32) -> &'static str {
    match LadderRung::try_from(r) {
        Ok(LadderRung::Stranger) => "stranger",
        Ok(LadderRung::Acquaintance) => "acquaintance",
        Ok(LadderRung::Friend) => "friend",
        Ok(LadderRung::Partner) => "partner",
        _ => "not classified",
    }
}

fn goal_name(g: i32) -> &'static str {
    match g {
        1 => "acquire",
        2 => "satisfy",
        3 => "retain",
        4 => "enhance",
        _ => "any",
    }
}

fn stage_name(s: i32) -> &'static str {
    match RelationshipStage::try_from(s) {
        Ok(RelationshipStage::Awareness) => "awareness",
        Ok(RelationshipStage::Exploration) => "exploration",
        Ok(RelationshipStage::Expansion) => "expansion",
        Ok(RelationshipStage::Commitment) => "commitment",
        Ok(RelationshipStage::Dissolution) => "dissolution",
        _ => "not classified",
    }
}

fn kind_name(k: i32) -> &'static str {
    TreatmentKind::try_from(k)
        .map(|k| k.as_str_name().trim_start_matches("TREATMENT_KIND_"))
        .unwrap_or("UNKNOWN")
}

fn channel_name(c: i32) -> &'static str {
    ContactChannel::try_from(c)
        .map(|c| c.as_str_name().trim_start_matches("CONTACT_CHANNEL_"))
        .unwrap_or("UNKNOWN")
}

/// Checks one treatment; `Err` is the first rule it fails, `Ok` the reasons
/// it is eligible.
fn eligibility(
    t: &Stored,
    c: &Customer,
    policy: &Policy,
    channel: i32,
    now: DateTime<Utc>,
) -> Result<Vec<String>, (FilterReason, String)> {
    let s = &t.spec;
    let mut why = Vec::new();
    if channel != 0 && s.channel != channel {
        return Err((
            FilterReason::Channel,
            format!(
                "delivered by {}, not {}",
                channel_name(s.channel),
                channel_name(channel)
            ),
        ));
    }
    if let Some(start) = s.start_time
        && now < start
    {
        return Err((
            FilterReason::Schedule,
            format!("starts at {}", start.to_rfc3339()),
        ));
    }
    if let Some(end) = s.end_time
        && now >= end
    {
        return Err((
            FilterReason::Schedule,
            format!("ended at {}", end.to_rfc3339()),
        ));
    }
    if s.ladder_goal != 0 {
        // Goal n serves rung n: acquire strangers … enhance partners.
        if c.ladder_rung != s.ladder_goal {
            return Err((
                FilterReason::LadderRung,
                format!(
                    "its goal {} is for {}s; the customer is {}",
                    goal_name(s.ladder_goal),
                    rung_name(s.ladder_goal),
                    rung_name(c.ladder_rung)
                ),
            ));
        }
        why.push(format!(
            "a {} on the ladder, the rung its goal ({}) serves",
            rung_name(c.ladder_rung),
            goal_name(s.ladder_goal)
        ));
    }
    if !s.stages.is_empty() {
        if !s.stages.contains(&c.stage) {
            return Err((
                FilterReason::Stage,
                format!(
                    "for stages {}; the customer is in {}",
                    s.stages
                        .iter()
                        .map(|x| stage_name(*x))
                        .collect::<Vec<_>>()
                        .join(", "),
                    stage_name(c.stage)
                ),
            ));
        }
        why.push(format!("in the {} stage", stage_name(c.stage)));
    }
    if !s.target_segments.is_empty() {
        let member: Vec<String> = s
            .target_segments
            .iter()
            .filter(|x| c.segments.contains(x))
            .map(Uuid::to_string)
            .collect();
        if member.is_empty() {
            return Err((
                FilterReason::NotTargeted,
                format!(
                    "not a member of any of its {} target segments",
                    s.target_segments.len()
                ),
            ));
        }
        why.push(format!("a member of target segment {}", member.join(", ")));
    }
    if let Some(x) = s.exclude_segments.iter().find(|x| c.segments.contains(x)) {
        return Err((
            FilterReason::ExcludedSegment,
            format!("a member of excluded segment {x}"),
        ));
    }
    let own =
        consent_channel(s.channel).and_then(|ch| c.consents.get(&(ch, s.consent_purpose)).copied());
    let any = c
        .consents
        .get(&(ConsentChannel::Any as i32, s.consent_purpose))
        .copied();
    let (allowed, consent_why) = consent::allows(s.consent_purpose, own, any);
    if !allowed {
        return Err((FilterReason::NoConsent, consent_why));
    }
    why.push(consent_why);
    if let Some(cap) = policy.cap(s.channel) {
        let since = now - Duration::days(i64::from(cap.window_days));
        let used = interaction_channel(s.channel)
            .and_then(|ic| c.contacts.get(&ic))
            .map_or(0, |ts| {
                ts.iter().filter(|t| **t > since && **t <= now).count()
            });
        if used >= cap.max_contacts as usize {
            return Err((
                FilterReason::ContactCap,
                format!(
                    "{used} {} contacts in the last {} days; the cap is {}",
                    channel_name(s.channel),
                    cap.window_days,
                    cap.max_contacts
                ),
            ));
        }
        why.push(format!(
            "{used} of {} {} contacts used in the last {} days",
            cap.max_contacts,
            channel_name(s.channel),
            cap.window_days
        ));
    }
    if let Some(t) = c.last_complaint
        && s.kind != TreatmentKind::ServiceRecovery as i32
        && t > now - Duration::days(i64::from(policy.complaint_quiet_days))
    {
        return Err((
            FilterReason::QuietPeriod,
            format!(
                "complained at {}: only service recovery for {} days",
                t.to_rfc3339(),
                policy.complaint_quiet_days
            ),
        ));
    }
    if let Some(t) = c.last_unsubscribe
        && s.consent_purpose == ConsentPurpose::Marketing as i32
        && t > now - Duration::days(i64::from(policy.unsubscribe_quiet_days))
    {
        return Err((
            FilterReason::QuietPeriod,
            format!(
                "unsubscribed at {}: no marketing for {} days",
                t.to_rfc3339(),
                policy.unsubscribe_quiet_days
            ),
        ));
    }
    if in_control(t.treatment_id, c.customer_id, s.control_share_bps) {
        return Err((
            FilterReason::ControlGroup,
            format!(
                "drawn into its control group ({} % of eligible customers)",
                f64::from(s.control_share_bps) / 100.0
            ),
        ));
    }
    Ok(why)
}

/// The value of the treatment for the customer, or why it has none.
fn value_of(t: &Stored, c: &Customer) -> Result<Amount, String> {
    match &t.spec.value {
        Value::Fixed(a) => Ok(a.clone()),
        Value::ClvShare(bps) => match &c.clv {
            Some(clv) if clv.currency == t.spec.cost.currency => Ok(Amount {
                currency: clv.currency.clone(),
                nanos: i64::try_from(i128::from(clv.nanos) * i128::from(*bps) / 10_000)
                    .unwrap_or(i64::MAX),
            }),
            Some(clv) => Err(format!(
                "its value is {} % of the CLV, which is in {}, not {}",
                f64::from(*bps) / 100.0,
                clv.currency,
                t.spec.cost.currency
            )),
            None => Err(format!(
                "its value is {} % of the CLV, and the customer has not been scored",
                f64::from(*bps) / 100.0
            )),
        },
        Value::NetClvShare(bps) => {
            let pct = f64::from(*bps) / 100.0;
            match &c.net_clv {
                Some(n) if n.currency != t.spec.cost.currency => Err(format!(
                    "its value is {pct} % of the net CLV, which is in {}, not {}",
                    n.currency, t.spec.cost.currency
                )),
                Some(n) if n.nanos <= 0 => Err(format!(
                    "its value is {pct} % of the net CLV, and serving the customer is expected to cost more than it brings"
                )),
                Some(n) => Ok(Amount {
                    currency: n.currency.clone(),
                    nanos: i64::try_from(i128::from(n.nanos) * i128::from(*bps) / 10_000)
                        .unwrap_or(i64::MAX),
                }),
                None => Err(format!(
                    "its value is {pct} % of the net CLV, and the customer's cost to serve is not priced"
                )),
            }
        }
        Value::MarginShare(bps) => {
            let currency = &t.spec.cost.currency;
            match c.margins.get(currency) {
                Some(m) => Ok(Amount {
                    currency: currency.clone(),
                    nanos: i64::try_from(i128::from(*m) * i128::from(*bps) / 10_000)
                        .unwrap_or(i64::MAX),
                }),
                None => Err(format!(
                    "its value is {} % of the customer's margin over the last year, and it has none in {currency}",
                    f64::from(*bps) / 100.0
                )),
            }
        }
    }
}

/// Decides for `c` among `treatments` (active ones), each with its
/// posterior for the customer's rung; at most `limit` actions.
pub fn decide<R: Rng + ?Sized>(
    c: &Customer,
    treatments: &[(Stored, Posterior)],
    policy: &Policy,
    channel: i32,
    limit: usize,
    now: DateTime<Utc>,
    mut ranking: Ranking<'_, R>,
) -> Decided {
    let mut out = Decided::default();
    let mut eligible = Vec::new();
    for (i, (t, post)) in treatments.iter().enumerate() {
        let why = match eligibility(t, c, policy, channel, now) {
            Ok(w) => w,
            Err((reason, detail)) => {
                out.filtered.push(Filtered {
                    index: i,
                    reason,
                    detail,
                });
                continue;
            }
        };
        let value = match value_of(t, c) {
            Ok(v) => v,
            Err(detail) => {
                out.filtered.push(Filtered {
                    index: i,
                    reason: FilterReason::NoValue,
                    detail,
                });
                continue;
            }
        };
        let ranked_p = match &mut ranking {
            Ranking::Mean => post.mean(),
            Ranking::Sample(rng) => post.sample(*rng),
        };
        let cost = i128::from(t.spec.cost.nanos);
        let v = i128::from(value.nanos);
        let expected_net = (post.mean() * v as f64).round() as i128 - cost;
        let ranked_net = (ranked_p * v as f64).round() as i128 - cost;
        if ranked_net <= 0 {
            out.filtered.push(Filtered {
                index: i,
                reason: FilterReason::NotProfitable,
                detail: format!(
                    "expected net value {} = {:.4} × {} − {}",
                    show(&value.currency, ranked_net),
                    ranked_p,
                    show(&value.currency, v),
                    show(&value.currency, cost)
                ),
            });
            continue;
        }
        let score = ranked_net as f64 / NANOS as f64 * f64::from(t.spec.priority_percent) / 100.0;
        eligible.push(Action {
            index: i,
            rank: 0,
            posterior: *post,
            ranked_p,
            cost: t.spec.cost.clone(),
            value,
            expected_net,
            score,
            eligible_because: why,
            rank_reason: String::new(),
        });
    }
    let play = super::playbook::select(&policy.playbook, c, now);
    let position = |t: &Stored| play.map_or(0, |p| p.position(t.spec.kind));
    eligible.sort_by(|a, b| {
        let (ta, tb) = (&treatments[a.index].0, &treatments[b.index].0);
        position(ta)
            .cmp(&position(tb))
            .then(b.score.total_cmp(&a.score))
            .then(tb.spec.priority_percent.cmp(&ta.spec.priority_percent))
            .then(ta.name.cmp(&tb.name))
    });
    out.play = play.map(|p| p.name.clone());
    let n = eligible.len();
    let mut prev: Option<(String, f64, usize)> = None;
    for (k, mut a) in eligible.into_iter().take(limit).enumerate() {
        let t = &treatments[a.index].0;
        let cur = &a.value.currency;
        let p_word = match ranking {
            Ranking::Mean => "mean acceptance",
            Ranking::Sample(_) => "sampled acceptance",
        };
        let pos = position(t);
        let kind = kind_name(t.spec.kind);
        let place = match (&prev, play) {
            (None, None) => format!("the best of {n} eligible"),
            (None, Some(p)) => format!("first of {n} eligible under play \"{}\"", p.name),
            (Some((name, s, before)), Some(p)) if *before < pos => format!(
                "below {name}: play \"{}\" puts {kind} {}",
                p.name,
                if pos < p.kinds.len() {
                    format!("in place {}", pos + 1)
                } else {
                    "after the kinds it names".into()
                }
            ),
            (Some((name, s, _)), _) => format!("below {name} (score {s:.4})"),
        };
        a.rank = k as i32 + 1;
        a.rank_reason = format!(
            "score {:.4} = ({p_word} {:.4} × value {} − cost {}) × priority {} %: {place}",
            a.score,
            a.ranked_p,
            show(cur, i128::from(a.value.nanos)),
            show(cur, i128::from(a.cost.nanos)),
            t.spec.priority_percent,
        );
        prev = Some((t.name.clone(), a.score, pos));
        out.actions.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::treatment::{Draft, Spec};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rapport_proto::rapport::profile::v1::ConsentStatus;

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap() + Duration::days(days)
    }

    fn eur(nanos: i64) -> Amount {
        Amount {
            currency: "EUR".into(),
            nanos,
        }
    }

    fn treatment(name: &str, f: impl FnOnce(&mut Spec)) -> Stored {
        let mut spec = Draft::empty().spec;
        spec.kind = TreatmentKind::Offer as i32;
        spec.channel = ContactChannel::Email as i32;
        spec.consent_purpose = ConsentPurpose::Service as i32;
        spec.cost = eur(500_000_000);
        spec.value = Value::Fixed(eur(20 * 1_000_000_000));
        f(&mut spec);
        Stored {
            treatment_id: Uuid::from_u128(
                name.len() as u128 * 7919 + name.bytes().map(u128::from).sum::<u128>(),
            ),
            name: name.into(),
            archived: false,
            version: 1,
            spec,
            create_time: at(-100),
            update_time: at(-100),
            archive_time: None,
        }
    }

    fn customer() -> Customer {
        Customer {
            customer_id: Uuid::from_u128(42),
            ladder_rung: LadderRung::Friend as i32,
            stage: RelationshipStage::Expansion as i32,
            clv: Some(eur(300 * 1_000_000_000)),
            ..Default::default()
        }
    }

    fn run(c: &Customer, ts: Vec<(Stored, Posterior)>) -> Decided {
        decide::<StdRng>(c, &ts, &Policy::default(), 0, 10, at(0), Ranking::Mean)
    }

    #[test]
    fn ranks_by_expected_net_value_times_priority() {
        // A: 0.1 × 20 − 0.5 = 1.5; B: 0.05 × (10 % of 300 = 30) − 0.5 = 1.0,
        // × 200 % = 2.0; C: 0.2 × 20 − 0.5 = 3.5 × 50 % = 1.75.
        let a = treatment("A", |_| {});
        let b = treatment("B", |s| {
            s.value = Value::ClvShare(1000);
            s.priority_percent = 200;
        });
        let c = treatment("C", |s| s.priority_percent = 50);
        let d = run(
            &customer(),
            vec![
                (a, Posterior::new(1.0, 9.0, 0, 0)),
                (b, Posterior::new(1.0, 19.0, 0, 0)),
                (c, Posterior::new(2.0, 8.0, 0, 0)),
            ],
        );
        let order: Vec<usize> = d.actions.iter().map(|a| a.index).collect();
        assert_eq!(order, vec![1, 2, 0]);
        assert!((d.actions[0].score - 2.0).abs() < 1e-12);
        assert!((d.actions[1].score - 1.75).abs() < 1e-12);
        assert!((d.actions[2].score - 1.5).abs() < 1e-12);
        assert_eq!(d.actions[0].value.nanos, 30 * 1_000_000_000);
        assert_eq!(d.actions[2].expected_net, 1_500_000_000);
        assert_eq!(d.actions[0].rank, 1);
        assert!(
            d.actions[1].rank_reason.contains("below B"),
            "{}",
            d.actions[1].rank_reason
        );
    }

    #[test]
    fn each_rule_filters_with_its_reason() {
        let now = at(0);
        let mut c = customer();
        c.segments.insert(Uuid::from_u128(1));
        c.contacts
            .insert(Channel::Phone as i32, vec![now - Duration::days(2)]);
        c.last_unsubscribe = Some(now - Duration::days(3));
        c.consents.insert(
            (ConsentChannel::Any as i32, ConsentPurpose::Marketing as i32),
            Record {
                status: ConsentStatus::Granted as i32,
                effective_time: at(-50),
            },
        );
        let cases: Vec<(Stored, FilterReason)> = vec![
            (
                treatment("sched", |s| s.start_time = Some(now + Duration::days(1))),
                FilterReason::Schedule,
            ),
            (
                treatment("rung", |s| s.ladder_goal = 4),
                FilterReason::LadderRung,
            ),
            (
                treatment("stage", |s| s.stages = vec![5]),
                FilterReason::Stage,
            ),
            (
                treatment("target", |s| s.target_segments = vec![Uuid::from_u128(2)]),
                FilterReason::NotTargeted,
            ),
            (
                treatment("excl", |s| s.exclude_segments = vec![Uuid::from_u128(1)]),
                FilterReason::ExcludedSegment,
            ),
            (
                treatment("research", |s| {
                    s.consent_purpose = ConsentPurpose::Research as i32
                }),
                FilterReason::NoConsent,
            ),
            (
                treatment("phone", |s| s.channel = ContactChannel::Phone as i32),
                FilterReason::ContactCap,
            ),
            (
                treatment("mkt", |s| {
                    s.consent_purpose = ConsentPurpose::Marketing as i32
                }),
                FilterReason::QuietPeriod,
            ),
            (
                treatment("control", |s| s.control_share_bps = 5000),
                FilterReason::ControlGroup,
            ),
            (
                treatment("noclv", |s| {
                    s.value = Value::ClvShare(10);
                    s.cost.currency = "USD".into();
                }),
                FilterReason::NoValue,
            ),
            (
                treatment("loss", |s| s.cost = eur(3 * 1_000_000_000)),
                FilterReason::NotProfitable,
            ),
        ];
        for (t, want) in cases {
            let name = t.name.clone();
            let share = t.spec.control_share_bps;
            if want == FilterReason::ControlGroup
                && !in_control(t.treatment_id, c.customer_id, share)
            {
                continue; // this id pair is not drawn; the draw is tested below
            }
            let d = run(&c, vec![(t, Posterior::new(1.0, 9.0, 0, 0))]);
            assert!(d.actions.is_empty(), "{name} offered");
            assert_eq!(
                d.filtered[0].reason, want,
                "{name}: {}",
                d.filtered[0].detail
            );
        }
        let d = run(
            &c,
            vec![(treatment("ch", |_| {}), Posterior::new(1.0, 9.0, 0, 0))],
        );
        assert_eq!(d.actions.len(), 1);
        let d = decide::<StdRng>(
            &c,
            &[(treatment("ch", |_| {}), Posterior::new(1.0, 9.0, 0, 0))],
            &Policy::default(),
            ContactChannel::Phone as i32,
            3,
            now,
            Ranking::Mean,
        );
        assert_eq!(d.filtered[0].reason, FilterReason::Channel);
    }

    #[test]
    fn complaints_leave_only_service_recovery() {
        let mut c = customer();
        c.last_complaint = Some(at(-1));
        let d = run(
            &c,
            vec![
                (treatment("offer", |_| {}), Posterior::new(1.0, 9.0, 0, 0)),
                (
                    treatment("sorry", |s| s.kind = TreatmentKind::ServiceRecovery as i32),
                    Posterior::new(1.0, 9.0, 0, 0),
                ),
            ],
        );
        assert_eq!(d.actions.len(), 1);
        assert_eq!(d.actions[0].index, 1);
        assert_eq!(d.filtered[0].reason, FilterReason::QuietPeriod);
    }

    #[test]
    fn contacts_outside_the_window_do_not_count() {
        let mut c = customer();
        c.contacts.insert(Channel::Phone as i32, vec![at(-8)]);
        let d = run(
            &c,
            vec![(
                treatment("p", |s| s.channel = ContactChannel::Phone as i32),
                Posterior::new(1.0, 9.0, 0, 0),
            )],
        );
        assert_eq!(d.actions.len(), 1);
        assert!(
            d.actions[0]
                .eligible_because
                .iter()
                .any(|w| w.contains("0 of 1 PHONE"))
        );
    }

    #[test]
    fn control_draws_hold_out_the_share() {
        // 20,000 fixed customer ids: the draw is a hash, so the count is fixed;
        // a binomial(20,000, 0.1) count lies within 4 standard deviations
        // (4 × 42.4) of 2,000 with probability 1 − 6e-5.
        let t = Uuid::from_u128(0xfeed);
        let n = (0..20_000u128)
            .filter(|i| in_control(t, Uuid::from_u128(*i), 1000))
            .count();
        assert!((n as f64 - 2000.0).abs() < 4.0 * 42.43, "{n}");
        assert!((0..1000u128).all(|i| !in_control(t, Uuid::from_u128(i), 0)));
        assert!((0..1000u128).all(|i| in_control(t, Uuid::from_u128(i), 10_000)));
        // The same pair is always drawn the same way.
        assert_eq!(
            in_control(t, Uuid::from_u128(5), 3000),
            in_control(t, Uuid::from_u128(5), 3000)
        );
    }

    #[test]
    fn exploration_ranks_by_posterior_draws() {
        // Two treatments with the same mean; B has few outcomes, so its
        // draws spread more and it wins about half of the time.
        let a = treatment("A", |_| {});
        let b = treatment("B", |_| {});
        let ts = vec![
            (a, Posterior::new(1.0, 9.0, 400, 3600)),
            (b, Posterior::new(1.0, 9.0, 0, 0)),
        ];
        let mut rng = StdRng::seed_from_u64(11);
        let wins = (0..2000)
            .filter(|_| {
                let d = decide(
                    &customer(),
                    &ts,
                    &Policy::default(),
                    0,
                    1,
                    at(0),
                    Ranking::Sample(&mut rng),
                );
                d.actions.first().is_some_and(|a| a.index == 1)
            })
            .count();
        assert!((600..1400).contains(&wins), "{wins}");
    }

    #[test]
    fn the_playbook_puts_its_kinds_first() {
        // A friend: "retain friends" puts LOYALTY_REWARD, then CROSS_SELL
        // first, whatever their scores; kinds it does not name follow, by score.
        let offer = treatment("big offer", |s| {
            s.value = Value::Fixed(eur(100 * 1_000_000_000))
        });
        let cross = treatment("cross", |s| s.kind = TreatmentKind::CrossSell as i32);
        let reward = treatment("reward", |s| {
            s.kind = TreatmentKind::LoyaltyReward as i32;
            s.value = Value::Fixed(eur(6 * 1_000_000_000));
        });
        let d = run(
            &customer(),
            vec![
                (offer, Posterior::new(1.0, 9.0, 0, 0)),
                (cross, Posterior::new(1.0, 9.0, 0, 0)),
                (reward, Posterior::new(1.0, 9.0, 0, 0)),
            ],
        );
        let order: Vec<usize> = d.actions.iter().map(|a| a.index).collect();
        assert_eq!(order, vec![2, 1, 0]);
        assert_eq!(d.play.as_deref(), Some("retain friends"));
        assert!(
            d.actions[0]
                .rank_reason
                .contains("first of 3 eligible under play"),
            "{}",
            d.actions[0].rank_reason
        );
        assert!(
            d.actions[2]
                .rank_reason
                .contains("puts OFFER after the kinds it names"),
            "{}",
            d.actions[2].rank_reason
        );
        // Without a playbook: by score alone.
        let policy = Policy {
            playbook: vec![],
            ..Policy::default()
        };
        let ts = vec![
            (
                treatment("big offer", |s| {
                    s.value = Value::Fixed(eur(100 * 1_000_000_000))
                }),
                Posterior::new(1.0, 9.0, 0, 0),
            ),
            (
                treatment("cross", |s| s.kind = TreatmentKind::CrossSell as i32),
                Posterior::new(1.0, 9.0, 0, 0),
            ),
        ];
        let d = decide::<StdRng>(&customer(), &ts, &policy, 0, 10, at(0), Ranking::Mean);
        assert_eq!(d.actions[0].index, 0);
        assert!(d.play.is_none());
    }

    #[test]
    fn a_margin_share_is_worth_its_share() {
        // 25 % of EUR 80 of margin = 20; 0.1 × 20 − 0.5 = 1.5.
        let mut c = customer();
        let t = treatment("m", |s| s.value = Value::MarginShare(2500));
        let d = run(&c, vec![(t.clone(), Posterior::new(1.0, 9.0, 0, 0))]);
        assert_eq!(d.filtered[0].reason, FilterReason::NoValue);
        c.margins.insert("EUR".into(), 80 * 1_000_000_000);
        let d = run(&c, vec![(t, Posterior::new(1.0, 9.0, 0, 0))]);
        assert_eq!(d.actions[0].value.nanos, 20 * 1_000_000_000);
        assert_eq!(d.actions[0].expected_net, 1_500_000_000);
    }

    #[test]
    fn a_net_clv_share_needs_a_positive_net_clv() {
        // 10 % of a net CLV of EUR 80 = 8; 0.1 × 8 − 0.5 = 0.3.
        let mut c = customer();
        let t = treatment("n", |s| s.value = Value::NetClvShare(1000));
        let d = run(&c, vec![(t.clone(), Posterior::new(1.0, 9.0, 0, 0))]);
        assert_eq!(d.filtered[0].reason, FilterReason::NoValue);
        assert!(
            d.filtered[0].detail.contains("not priced"),
            "{}",
            d.filtered[0].detail
        );
        c.net_clv = Some(eur(-5 * 1_000_000_000));
        let d = run(&c, vec![(t.clone(), Posterior::new(1.0, 9.0, 0, 0))]);
        assert_eq!(d.filtered[0].reason, FilterReason::NoValue);
        assert!(
            d.filtered[0].detail.contains("cost more"),
            "{}",
            d.filtered[0].detail
        );
        c.net_clv = Some(eur(80 * 1_000_000_000));
        let d = run(&c, vec![(t, Posterior::new(1.0, 9.0, 0, 0))]);
        assert_eq!(d.actions[0].value.nanos, 8 * 1_000_000_000);
        assert_eq!(d.actions[0].expected_net, 300_000_000);
    }

    #[test]
    fn amounts_read_well() {
        assert_eq!(show("EUR", 20_500_000_000), "EUR 20.50");
        assert_eq!(show("EUR", -1_250_000_000), "EUR -1.25");
        assert_eq!(show("JPY", 1_000_000_001), "JPY 1.000000001");
    }
}
