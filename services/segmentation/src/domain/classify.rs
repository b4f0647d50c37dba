//! Relationship classification (classification.proto, Classification): the
//! ladder rung and the Dwyer stage under a tenant's policy, each with one
//! explanation line per criterion checked.

use chrono::{DateTime, Utc};
use rapport_proto::rapport::common::v1::{LadderRung, RelationshipStage};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::policy::Policy;

/// A customer's standing on a ranked value: `greater` customers have a
/// strictly greater value among `total` with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank {
    pub greater: i64,
    pub total: i64,
}

impl Rank {
    /// Whether the rank is within the top `percent` (ties share the best
    /// rank; the cut is ceil(N * P / 100)), as rule.proto's `in top P%`.
    pub fn in_top(&self, percent: f64) -> bool {
        if self.total <= 0 {
            return false;
        }
        let cut = (self.total as f64 * percent / 100.0 - 1e-9).ceil() as i64;
        self.greater < cut.max(0)
    }
}

/// What classification looks at, for one customer at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    pub first_purchase: Option<DateTime<Utc>>,
    pub last_purchase: Option<DateTime<Utc>>,
    pub purchases: i64,
    pub csat: Option<i32>,
    pub nps: Option<i32>,
    pub open_complaints: i64,
    pub tags: Vec<String>,
    /// The RFM frequency score, for customers with a purchase.
    pub frequency_score: Option<i32>,
    /// The customer's CLV rank among the tenant's valued customers.
    pub clv_rank: Option<Rank>,
    /// The customer's monetary rank, used when there is no CLV yet.
    pub monetary_rank: Option<Rank>,
    pub p_alive: Option<f64>,
    /// The client-set stage on the profile, lower case.
    pub profile_stage: Option<String>,
    pub contacts: i64,
    /// Campaign responses (opened, clicked, converted), all time.
    pub campaign_responses: i64,
    /// Of the last four 91-day periods, how many had a purchase.
    pub active_periods: i32,
    /// Purchases and spend in the latest expansion period and the one before.
    pub recent_purchases: i64,
    pub recent_spend: Decimal,
    pub prior_purchases: i64,
    pub prior_spend: Decimal,
}

/// A classification with its explanations.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ladder: LadderRung,
    pub ladder_explanation: Vec<String>,
    pub stage: RelationshipStage,
    pub stage_explanation: Vec<String>,
}

/// Lower-case names, as in rules and the features table.
pub fn ladder_name(r: LadderRung) -> &'static str {
    match r {
        LadderRung::Unspecified => "",
        LadderRung::Stranger => "stranger",
        LadderRung::Acquaintance => "acquaintance",
        LadderRung::Friend => "friend",
        LadderRung::Partner => "partner",
    }
}

/// Lower-case names, as in rules and the features table.
pub fn stage_name(s: RelationshipStage) -> &'static str {
    match s {
        RelationshipStage::Unspecified => "",
        RelationshipStage::Awareness => "awareness",
        RelationshipStage::Exploration => "exploration",
        RelationshipStage::Expansion => "expansion",
        RelationshipStage::Commitment => "commitment",
        RelationshipStage::Dissolution => "dissolution",
    }
}

/// The stage of a lower-case name.
pub fn stage_from_name(n: &str) -> RelationshipStage {
    match n {
        "awareness" => RelationshipStage::Awareness,
        "exploration" => RelationshipStage::Exploration,
        "expansion" => RelationshipStage::Expansion,
        "commitment" => RelationshipStage::Commitment,
        "dissolution" => RelationshipStage::Dissolution,
        _ => RelationshipStage::Unspecified,
    }
}

/// The rung of a lower-case name.
pub fn ladder_from_name(n: &str) -> LadderRung {
    match n {
        "stranger" => LadderRung::Stranger,
        "acquaintance" => LadderRung::Acquaintance,
        "friend" => LadderRung::Friend,
        "partner" => LadderRung::Partner,
        _ => LadderRung::Unspecified,
    }
}

fn held(b: bool) -> &'static str {
    if b { "held" } else { "not held" }
}

/// A number for people: no trailing zeros.
fn num(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn whole_days(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_seconds().div_euclid(86_400)
}

/// Classifies one customer at `now` under `p`.
pub fn classify(i: &Inputs, p: &Policy, now: DateTime<Utc>) -> Outcome {
    let (ladder, ladder_explanation) = ladder(i, p, now);
    let (stage, stage_explanation) = stage(i, p, now);
    Outcome {
        ladder,
        ladder_explanation,
        stage,
        stage_explanation,
    }
}

/// One rung's checks: each adds a line; the rung holds when all held.
struct Checks<'a> {
    rung: &'a str,
    lines: &'a mut Vec<String>,
    all: bool,
}

impl Checks<'_> {
    fn check(&mut self, what: String, ok: bool) {
        self.lines
            .push(format!("{}: {what}: {}", self.rung, held(ok)));
        self.all &= ok;
    }
    fn unknown(&mut self, what: &str) {
        self.lines
            .push(format!("{}: {what} unknown: not used", self.rung));
    }
}

fn ladder(i: &Inputs, p: &Policy, now: DateTime<Utc>) -> (LadderRung, Vec<String>) {
    let mut lines = Vec::new();
    let tenure = i.first_purchase.map(|f| whole_days(f, now));

    // partner
    let mut c = Checks {
        rung: "partner",
        lines: &mut lines,
        all: true,
    };
    match tenure {
        Some(t) => c.check(
            format!(
                "tenure {t} days >= {} [partner_min_tenure_days]",
                p.partner_min_tenure_days
            ),
            t >= i64::from(p.partner_min_tenure_days),
        ),
        None => c.check("tenure: no purchase yet".into(), false),
    }
    match i.frequency_score {
        Some(f) => c.check(
            format!(
                "RFM frequency score {f} >= {} [partner_min_frequency_score]",
                p.partner_min_frequency_score
            ),
            f >= p.partner_min_frequency_score,
        ),
        None => c.check("RFM frequency score: not scored".into(), false),
    }
    match (i.clv_rank, i.monetary_rank) {
        (Some(r), _) => c.check(
            format!(
                "CLV rank {} of {} in the top {}% [partner_clv_top_percent]",
                r.greater + 1,
                r.total,
                num(p.partner_clv_top_percent)
            ),
            r.in_top(p.partner_clv_top_percent),
        ),
        (None, Some(r)) => c.check(
            format!(
                "no CLV yet; monetary rank {} of {} in the top {}% [partner_clv_top_percent]",
                r.greater + 1,
                r.total,
                num(p.partner_clv_top_percent)
            ),
            r.in_top(p.partner_clv_top_percent),
        ),
        (None, None) => c.check("value: no CLV and no purchase amount".into(), false),
    }
    let csat_high = i.csat.is_some_and(|v| v >= p.partner_min_csat);
    let nps_high = i.nps.is_some_and(|v| v >= p.partner_min_nps);
    let tagged = !p.partner_contract_tag.is_empty() && i.tags.contains(&p.partner_contract_tag);
    let csat = i.csat.map_or("unknown".into(), |v| v.to_string());
    let nps = i.nps.map_or("unknown".into(), |v| v.to_string());
    let tie = if p.partner_contract_tag.is_empty() {
        "no contract tag configured".to_string()
    } else if tagged {
        format!("tag \"{}\" present", p.partner_contract_tag)
    } else {
        format!("tag \"{}\" absent", p.partner_contract_tag)
    };
    c.check(
        format!(
            "latest CSAT {csat} >= {} [partner_min_csat] or latest NPS {nps} >= {} [partner_min_nps] or contractual tie ({tie}) [partner_contract_tag]",
            p.partner_min_csat, p.partner_min_nps
        ),
        csat_high || nps_high || tagged,
    );
    if c.all {
        lines.push("result: partner".into());
        return (LadderRung::Partner, lines);
    }

    // friend
    let mut c = Checks {
        rung: "friend",
        lines: &mut lines,
        all: true,
    };
    c.check(
        format!(
            "purchases {} >= {} [friend_min_purchases]",
            i.purchases, p.friend_min_purchases
        ),
        i.purchases >= i64::from(p.friend_min_purchases),
    );
    match tenure {
        Some(t) => c.check(
            format!(
                "tenure {t} days >= {} [friend_min_tenure_days]",
                p.friend_min_tenure_days
            ),
            t >= i64::from(p.friend_min_tenure_days),
        ),
        None => c.check("tenure: no purchase yet".into(), false),
    }
    match i.csat {
        Some(v) => c.check(
            format!("latest CSAT {v} >= {} [friend_min_csat]", p.friend_min_csat),
            v >= p.friend_min_csat,
        ),
        None => c.unknown("latest CSAT"),
    }
    match i.nps {
        Some(v) => c.check(
            format!("latest NPS {v} >= {} [friend_min_nps]", p.friend_min_nps),
            v >= p.friend_min_nps,
        ),
        None => c.unknown("latest NPS"),
    }
    c.check(
        format!(
            "open complaints {} <= {} [friend_max_open_complaints]",
            i.open_complaints, p.friend_max_open_complaints
        ),
        i.open_complaints <= i64::from(p.friend_max_open_complaints),
    );
    if c.all {
        lines.push("result: friend".into());
        return (LadderRung::Friend, lines);
    }

    // acquaintance
    let bought = i.purchases >= 1;
    lines.push(format!(
        "acquaintance: purchases {} >= 1: {}",
        i.purchases,
        held(bought)
    ));
    if bought {
        lines.push("result: acquaintance".into());
        return (LadderRung::Acquaintance, lines);
    }
    lines.push("result: stranger".into());
    (LadderRung::Stranger, lines)
}

fn dec(d: Decimal) -> String {
    d.normalize().to_string()
}

fn stage(i: &Inputs, p: &Policy, now: DateTime<Utc>) -> (RelationshipStage, Vec<String>) {
    let mut lines = Vec::new();
    let done = |lines: &mut Vec<String>, s: RelationshipStage| {
        lines.push(format!(
            "result: {}",
            if s == RelationshipStage::Unspecified {
                "none"
            } else {
                stage_name(s)
            }
        ));
    };

    // 1. dissolution
    let terminated = i.profile_stage.as_deref() == Some("dissolution");
    lines.push(format!(
        "dissolution: client-set stage {}: {}",
        i.profile_stage.as_deref().unwrap_or("none"),
        if terminated {
            "explicit termination, held"
        } else {
            "not held"
        }
    ));
    let mut dissolving = terminated;
    match i.p_alive {
        Some(pa) => {
            let ok = pa < p.dissolution_max_p_alive;
            lines.push(format!(
                "dissolution: P(alive) {} < {} [dissolution_max_p_alive]: {}",
                num(pa),
                num(p.dissolution_max_p_alive),
                held(ok)
            ));
            dissolving |= ok;
        }
        None => lines.push("dissolution: P(alive) unknown: not used".into()),
    }
    match (i.first_purchase, i.last_purchase) {
        (Some(f), Some(l)) if i.purchases >= 2 => {
            let silence = (now - l).num_seconds() as f64 / 86_400.0;
            let mean = (l - f).num_seconds() as f64 / 86_400.0 / (i.purchases - 1) as f64;
            let ok = silence > p.dissolution_silence_factor * mean
                && silence > f64::from(p.dissolution_min_silence_days);
            lines.push(format!(
                "dissolution: silence {} days > {} [dissolution_silence_factor] x mean inter-purchase time {} days and > {} days [dissolution_min_silence_days]: {}",
                num(silence.floor()),
                num(p.dissolution_silence_factor),
                num((mean * 10.0).round() / 10.0),
                p.dissolution_min_silence_days,
                held(ok)
            ));
            dissolving |= ok;
        }
        _ => lines.push(format!(
            "dissolution: silence: {} purchases, needs at least 2: not used",
            i.purchases
        )),
    }
    if dissolving {
        done(&mut lines, RelationshipStage::Dissolution);
        return (RelationshipStage::Dissolution, lines);
    }

    // 2. awareness
    if i.purchases == 0 {
        let ok = i.contacts + i.campaign_responses >= 1;
        lines.push(format!(
            "awareness: no purchase, contacts {} and campaign responses {} >= 1: {}",
            i.contacts,
            i.campaign_responses,
            held(ok)
        ));
        let s = if ok {
            RelationshipStage::Awareness
        } else {
            RelationshipStage::Unspecified
        };
        done(&mut lines, s);
        return (s, lines);
    }
    lines.push(format!(
        "awareness: no purchase: not held ({} purchases)",
        i.purchases
    ));

    // 3. exploration
    let tenure = i.first_purchase.map_or(0, |f| whole_days(f, now));
    let ok = tenure <= i64::from(p.exploration_window_days);
    lines.push(format!(
        "exploration: first purchase {tenure} days ago <= {} [exploration_window_days]: {}",
        p.exploration_window_days,
        held(ok)
    ));
    if ok {
        done(&mut lines, RelationshipStage::Exploration);
        return (RelationshipStage::Exploration, lines);
    }

    // 4. commitment
    let mut c = Checks {
        rung: "commitment",
        lines: &mut lines,
        all: true,
    };
    c.check(
        format!(
            "tenure {tenure} days >= {} [commitment_min_tenure_days]",
            p.commitment_min_tenure_days
        ),
        tenure >= i64::from(p.commitment_min_tenure_days),
    );
    c.check(
        format!(
            "active in {} of the last 4 periods >= {} [commitment_min_active_periods]",
            i.active_periods, p.commitment_min_active_periods
        ),
        i.active_periods >= p.commitment_min_active_periods,
    );
    match i.p_alive {
        Some(pa) => c.check(
            format!(
                "P(alive) {} >= {} [commitment_min_p_alive]",
                num(pa),
                num(p.commitment_min_p_alive)
            ),
            pa >= p.commitment_min_p_alive,
        ),
        None => c.unknown("P(alive)"),
    }
    if c.all {
        done(&mut lines, RelationshipStage::Commitment);
        return (RelationshipStage::Commitment, lines);
    }

    // 5. expansion
    let factor = Decimal::from_f64_retain(1.0 + p.expansion_min_growth_percent / 100.0)
        .unwrap_or(Decimal::ONE);
    let count_grew = i.recent_purchases.to_f64().unwrap_or(0.0)
        >= i.prior_purchases as f64 * (1.0 + p.expansion_min_growth_percent / 100.0);
    let spend_grew = i.recent_spend >= i.prior_spend * factor;
    let ok = i.prior_purchases >= 1 && (count_grew || spend_grew);
    lines.push(format!(
        "expansion: purchases {} (spend {}) in the last {} days [expansion_period_days] vs {} (spend {}) before, growth >= {}% [expansion_min_growth_percent]: {}",
        i.recent_purchases,
        dec(i.recent_spend),
        p.expansion_period_days,
        i.prior_purchases,
        dec(i.prior_spend),
        num(p.expansion_min_growth_percent),
        if i.prior_purchases == 0 {
            "not held (no purchase in the earlier period)"
        } else {
            held(ok)
        }
    ));
    if ok {
        done(&mut lines, RelationshipStage::Expansion);
        return (RelationshipStage::Expansion, lines);
    }

    // 6. exploration again
    lines.push("exploration: has bought but fits no other stage: held".into());
    done(&mut lines, RelationshipStage::Exploration);
    (RelationshipStage::Exploration, lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn days_ago(d: i64) -> Option<DateTime<Utc>> {
        Some(now() - Duration::days(d))
    }

    fn buyer(purchases: i64, first: i64, last: i64) -> Inputs {
        Inputs {
            first_purchase: days_ago(first),
            last_purchase: days_ago(last),
            purchases,
            frequency_score: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn rank_top_share() {
        let r = |greater, total| Rank { greater, total };
        assert!(r(0, 10).in_top(20.0));
        assert!(r(1, 10).in_top(20.0));
        assert!(!r(2, 10).in_top(20.0));
        assert!(r(0, 1).in_top(20.0));
        assert!(r(0, 3).in_top(20.0) && !r(1, 3).in_top(20.0));
        assert!(r(9, 10).in_top(100.0));
    }

    #[test]
    fn stranger_without_purchase() {
        let o = classify(&Inputs::default(), &Policy::default(), now());
        assert_eq!(o.ladder, LadderRung::Stranger);
        assert_eq!(o.ladder_explanation.last().unwrap(), "result: stranger");
        assert_eq!(o.stage, RelationshipStage::Unspecified);
        assert_eq!(o.stage_explanation.last().unwrap(), "result: none");
    }

    #[test]
    fn acquaintance_after_one_purchase() {
        let o = classify(&buyer(1, 10, 10), &Policy::default(), now());
        assert_eq!(o.ladder, LadderRung::Acquaintance);
        assert!(
            o.ladder_explanation
                .contains(&"friend: purchases 1 >= 2 [friend_min_purchases]: not held".into())
        );
    }

    #[test]
    fn friend_needs_repeat_tenure_and_no_dissatisfaction() {
        let mut i = buyer(4, 200, 5);
        let o = classify(&i, &Policy::default(), now());
        assert_eq!(o.ladder, LadderRung::Friend);
        assert!(
            o.ladder_explanation
                .contains(&"friend: latest NPS unknown: not used".into())
        );
        assert!(
            o.ladder_explanation
                .contains(&"friend: purchases 4 >= 2 [friend_min_purchases]: held".into())
        );
        i.open_complaints = 1;
        assert_eq!(
            classify(&i, &Policy::default(), now()).ladder,
            LadderRung::Acquaintance
        );
        i.open_complaints = 0;
        i.csat = Some(3);
        assert_eq!(
            classify(&i, &Policy::default(), now()).ladder,
            LadderRung::Acquaintance
        );
        // A tenant that accepts CSAT 3.
        let p = Policy {
            friend_min_csat: 3,
            ..Policy::default()
        };
        assert_eq!(classify(&i, &p, now()).ladder, LadderRung::Friend);
        // Too recent.
        let young = buyer(3, 30, 1);
        assert_eq!(
            classify(&young, &Policy::default(), now()).ladder,
            LadderRung::Acquaintance
        );
    }

    #[test]
    fn partner_needs_tenure_frequency_value_and_satisfaction_or_contract() {
        let mut i = buyer(20, 500, 3);
        i.frequency_score = Some(5);
        i.clv_rank = Some(Rank {
            greater: 0,
            total: 10,
        });
        i.nps = Some(9);
        let o = classify(&i, &Policy::default(), now());
        assert_eq!(o.ladder, LadderRung::Partner, "{:?}", o.ladder_explanation);
        i.nps = Some(8);
        assert_eq!(
            classify(&i, &Policy::default(), now()).ladder,
            LadderRung::Friend
        );
        i.tags = vec!["contract".into()];
        assert_eq!(
            classify(&i, &Policy::default(), now()).ladder,
            LadderRung::Partner
        );
        // Not in the top 20 % of CLV.
        i.clv_rank = Some(Rank {
            greater: 5,
            total: 10,
        });
        assert_eq!(
            classify(&i, &Policy::default(), now()).ladder,
            LadderRung::Friend
        );
        // Without a CLV, the monetary rank stands in.
        i.clv_rank = None;
        i.monetary_rank = Some(Rank {
            greater: 1,
            total: 10,
        });
        let o = classify(&i, &Policy::default(), now());
        assert_eq!(o.ladder, LadderRung::Partner);
        assert!(o.ladder_explanation[2].contains("no CLV yet"));
    }

    #[test]
    fn dissolution_by_termination_p_alive_or_silence() {
        let mut i = buyer(5, 400, 10);
        i.profile_stage = Some("dissolution".into());
        assert_eq!(
            classify(&i, &Policy::default(), now()).stage,
            RelationshipStage::Dissolution
        );
        i.profile_stage = None;
        i.p_alive = Some(0.1);
        let o = classify(&i, &Policy::default(), now());
        assert_eq!(o.stage, RelationshipStage::Dissolution);
        assert!(
            o.stage_explanation.contains(
                &"dissolution: P(alive) 0.1 < 0.2 [dissolution_max_p_alive]: held".into()
            )
        );
        // Silence: 5 purchases over 100 days (mean 25 days), silent for 120.
        let silent = buyer(5, 220, 120);
        assert_eq!(
            classify(&silent, &Policy::default(), now()).stage,
            RelationshipStage::Dissolution
        );
        // Silent 80 days: not beyond the 90-day minimum.
        let quiet = buyer(5, 180, 80);
        assert_ne!(
            classify(&quiet, &Policy::default(), now()).stage,
            RelationshipStage::Dissolution
        );
    }

    #[test]
    fn awareness_without_purchase_but_with_contact() {
        let i = Inputs {
            contacts: 1,
            ..Default::default()
        };
        assert_eq!(
            classify(&i, &Policy::default(), now()).stage,
            RelationshipStage::Awareness
        );
        let i = Inputs {
            campaign_responses: 2,
            ..Default::default()
        };
        assert_eq!(
            classify(&i, &Policy::default(), now()).stage,
            RelationshipStage::Awareness
        );
    }

    #[test]
    fn exploration_for_recent_first_purchase() {
        let o = classify(&buyer(1, 20, 20), &Policy::default(), now());
        assert_eq!(o.stage, RelationshipStage::Exploration);
        assert_eq!(o.stage_explanation.last().unwrap(), "result: exploration");
    }

    #[test]
    fn commitment_for_steady_buyers() {
        let mut i = buyer(12, 500, 20);
        i.active_periods = 4;
        i.p_alive = Some(0.9);
        let o = classify(&i, &Policy::default(), now());
        assert_eq!(o.stage, RelationshipStage::Commitment);
        assert!(o.stage_explanation.contains(
            &"commitment: active in 4 of the last 4 periods >= 3 [commitment_min_active_periods]: held".into()
        ));
        i.p_alive = Some(0.5);
        assert_ne!(
            classify(&i, &Policy::default(), now()).stage,
            RelationshipStage::Commitment
        );
    }

    #[test]
    fn expansion_when_buying_grows() {
        let mut i = buyer(6, 200, 5);
        i.active_periods = 2;
        i.prior_purchases = 2;
        i.prior_spend = Decimal::from(100);
        i.recent_purchases = 3;
        i.recent_spend = Decimal::from(90);
        assert_eq!(
            classify(&i, &Policy::default(), now()).stage,
            RelationshipStage::Expansion
        );
        // Neither count nor spend grew by 20 %: exploration again.
        i.recent_purchases = 2;
        let o = classify(&i, &Policy::default(), now());
        assert_eq!(o.stage, RelationshipStage::Exploration);
        assert_eq!(
            o.stage_explanation[o.stage_explanation.len() - 2],
            "exploration: has bought but fits no other stage: held"
        );
        // Spend grew by 20 %.
        i.recent_spend = Decimal::from(120);
        assert_eq!(
            classify(&i, &Policy::default(), now()).stage,
            RelationshipStage::Expansion
        );
        // An empty earlier period is never expansion.
        i.prior_purchases = 0;
        i.prior_spend = Decimal::ZERO;
        assert_ne!(
            classify(&i, &Policy::default(), now()).stage,
            RelationshipStage::Expansion
        );
    }

    #[test]
    fn names_round_trip() {
        for r in [
            LadderRung::Stranger,
            LadderRung::Acquaintance,
            LadderRung::Friend,
            LadderRung::Partner,
        ] {
            assert_eq!(ladder_from_name(ladder_name(r)), r);
        }
        for s in [
            RelationshipStage::Awareness,
            RelationshipStage::Exploration,
            RelationshipStage::Expansion,
            RelationshipStage::Commitment,
            RelationshipStage::Dissolution,
        ] {
            assert_eq!(stage_from_name(stage_name(s)), s);
        }
    }
}
