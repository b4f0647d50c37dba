//! Segment definitions: validation of names, descriptions, kinds, refresh
//! intervals, update masks and idempotency keys; reference cycles; the
//! intervals of a segment's history. Pure.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, DurationRound, TimeZone, Utc};
use rapport_proto::rapport::segmentation::v1::{
    HistoryGranularity, MarketingApproach, SegmentKind,
};
use uuid::Uuid;

/// A segment's kind as the `segments.kind` column holds it. The one mapping
/// between the column's text and the enum is the `sqlx::Type` derive; code
/// compares variants, never strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Kind {
    /// Members kept current from the feed and by refreshes.
    Dynamic,
    /// Members computed at each refresh only.
    Snapshot,
    /// Members added and removed by hand.
    Static,
}

impl Kind {
    /// The stored kind of a contract kind (None for UNSPECIFIED).
    pub fn from_proto(k: SegmentKind) -> Option<Self> {
        match k {
            SegmentKind::Dynamic => Some(Self::Dynamic),
            SegmentKind::Snapshot => Some(Self::Snapshot),
            SegmentKind::Static => Some(Self::Static),
            SegmentKind::Unspecified => None,
        }
    }

    /// The contract's kind.
    pub fn to_proto(self) -> SegmentKind {
        match self {
            Self::Dynamic => SegmentKind::Dynamic,
            Self::Snapshot => SegmentKind::Snapshot,
            Self::Static => SegmentKind::Static,
        }
    }

    /// The name a message shows: DYNAMIC, SNAPSHOT or STATIC.
    pub fn label(self) -> &'static str {
        match self {
            Self::Dynamic => "DYNAMIC",
            Self::Snapshot => "SNAPSHOT",
            Self::Static => "STATIC",
        }
    }
}

/// Whether `s` is shaped like a UUID.
fn looks_like_uuid(s: &str) -> bool {
    Uuid::parse_str(s).is_ok()
}

/// The problems of a segment name (None when valid).
pub fn check_name(name: &str) -> Option<String> {
    let n = name.chars().count();
    if n == 0 {
        return Some("required: 1 to 100 characters".into());
    }
    if n > 100 {
        return Some(format!("at most 100 characters, got {n}"));
    }
    if name.chars().any(char::is_control) {
        return Some("must not contain control characters".into());
    }
    if name.trim() != name {
        return Some("must not start or end with white space".into());
    }
    if looks_like_uuid(name) {
        return Some(
            "must not be shaped like a UUID (in_segment(\"...\") takes names and ids)".into(),
        );
    }
    None
}

/// The problems of a description: too long, or a NUL character (which no
/// text column can hold; other control characters such as new lines are
/// text).
pub fn check_description(d: &str) -> Option<String> {
    let n = d.chars().count();
    if n > 2000 {
        return Some(format!("at most 2,000 characters, got {n}"));
    }
    d.contains('\0')
        .then(|| "must not contain NUL characters (U+0000)".into())
}

/// The problems of a marketing approach number.
pub fn check_approach(a: i32) -> Option<String> {
    MarketingApproach::try_from(a)
        .is_err()
        .then(|| format!("unknown marketing approach {a}"))
}

/// The refresh interval of a kind: Ok(None) for unset, or the problem.
pub fn check_refresh_interval(
    kind: SegmentKind,
    interval: Option<&prost_types::Duration>,
) -> Result<Option<i64>, String> {
    let Some(d) = interval else { return Ok(None) };
    if kind == SegmentKind::Static {
        return Err("must be unset for a STATIC segment".into());
    }
    if d.nanos != 0 {
        return Err("must be whole seconds".into());
    }
    let (lo, hi, what) = match kind {
        SegmentKind::Dynamic => (300, 86_400, "5 minutes to 24 hours for a DYNAMIC segment"),
        _ => (
            300,
            366 * 86_400,
            "5 minutes to 366 days for a SNAPSHOT segment",
        ),
    };
    if d.seconds < lo || d.seconds > hi {
        return Err(format!("must be {what}, got {} seconds", d.seconds));
    }
    Ok(Some(d.seconds))
}

/// The interval in effect: a DYNAMIC segment without one refreshes hourly.
pub fn effective_interval(kind: SegmentKind, interval: Option<i64>) -> Option<i64> {
    match kind {
        SegmentKind::Dynamic => Some(interval.unwrap_or(3600)),
        SegmentKind::Snapshot => interval,
        _ => None,
    }
}

/// The mask paths UpdateSegment accepts.
pub const UPDATABLE: [&str; 6] = [
    "name",
    "description",
    "marketing_approach",
    "rule_text",
    "rule",
    "refresh_interval",
];

/// Checks UpdateSegment's mask: the problems as (field, description).
pub fn check_mask(paths: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if paths.is_empty() {
        out.push((
            "update_mask".into(),
            "name at least one field to change: name, description, marketing_approach, rule_text, rule, refresh_interval".into(),
        ));
    }
    for (i, p) in paths.iter().enumerate() {
        if UPDATABLE.contains(&p.as_str()) {
            continue;
        }
        let why = match p.as_str() {
            "kind" => "the kind of a segment cannot change; create another segment".to_string(),
            "segment_id" | "member_count" | "last_refresh_time" | "next_refresh_time"
            | "create_time" | "update_time" | "etag" => {
                format!("\"{p}\" is output only")
            }
            _ => format!("unknown field \"{p}\""),
        };
        out.push((format!("update_mask.paths[{i}]"), why));
    }
    if paths.iter().any(|p| p == "rule_text") && paths.iter().any(|p| p == "rule") {
        out.push((
            "update_mask".into(),
            "name either \"rule_text\" or \"rule\", not both".into(),
        ));
    }
    out
}

/// The problems of an idempotency key.
pub fn check_request_id(id: &str) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    let ok = id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    (!ok).then(|| "1 to 128 printable ASCII characters".into())
}

/// The etag of a definition version.
pub fn etag(version: i64) -> String {
    format!("v{version}")
}

/// Whether adding `segment -> refs` to the reference graph `edges` (segment
/// -> the segments its rule refers to) makes a cycle; returns the chain.
pub fn find_cycle(
    edges: &HashMap<Uuid, Vec<Uuid>>,
    segment: Uuid,
    refs: &[Uuid],
) -> Option<Vec<Uuid>> {
    // Depth-first from each reference, looking for `segment`.
    fn walk(
        edges: &HashMap<Uuid, Vec<Uuid>>,
        at: Uuid,
        target: Uuid,
        seen: &mut HashSet<Uuid>,
        path: &mut Vec<Uuid>,
    ) -> bool {
        path.push(at);
        if at == target {
            return true;
        }
        if seen.insert(at) {
            for next in edges.get(&at).into_iter().flatten() {
                if walk(edges, *next, target, seen, path) {
                    return true;
                }
            }
        }
        path.pop();
        false
    }
    let mut seen = HashSet::new();
    for r in refs {
        let mut path = vec![segment];
        if walk(edges, *r, segment, &mut seen, &mut path) {
            return Some(path);
        }
    }
    None
}

/// Orders segments so that every segment comes after those it refers to.
/// Segments in a cycle (never stored) are appended last.
pub fn topological(ids: &[Uuid], edges: &HashMap<Uuid, Vec<Uuid>>) -> Vec<Uuid> {
    fn visit(
        id: Uuid,
        edges: &HashMap<Uuid, Vec<Uuid>>,
        state: &mut HashMap<Uuid, u8>,
        out: &mut Vec<Uuid>,
    ) {
        match state.get(&id) {
            Some(_) => return,
            None => {
                state.insert(id, 1);
            }
        }
        for r in edges.get(&id).into_iter().flatten() {
            visit(*r, edges, state, out);
        }
        state.insert(id, 2);
        out.push(id);
    }
    let wanted: HashSet<Uuid> = ids.iter().copied().collect();
    let mut state = HashMap::new();
    let mut out = Vec::new();
    for id in ids {
        visit(*id, edges, &mut state, &mut out);
    }
    out.retain(|i| wanted.contains(i));
    out
}

/// Every segment that depends on `roots` (directly or through others), not
/// including the roots themselves.
pub fn dependents(roots: &[Uuid], edges: &HashMap<Uuid, Vec<Uuid>>) -> HashSet<Uuid> {
    let mut reverse: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (s, refs) in edges {
        for r in refs {
            reverse.entry(*r).or_default().push(*s);
        }
    }
    let mut out = HashSet::new();
    let mut stack: Vec<Uuid> = roots.to_vec();
    while let Some(at) = stack.pop() {
        for d in reverse.get(&at).into_iter().flatten() {
            if out.insert(*d) {
                stack.push(*d);
            }
        }
    }
    for r in roots {
        out.remove(r);
    }
    out
}

/// The length of a history interval, and its alignment.
pub fn floor_to(t: DateTime<Utc>, g: HistoryGranularity) -> DateTime<Utc> {
    match g {
        HistoryGranularity::Hour => t.duration_trunc(Duration::hours(1)).unwrap_or(t),
        HistoryGranularity::Week => {
            let day = t.duration_trunc(Duration::days(1)).unwrap_or(t);
            day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
        }
        _ => t.duration_trunc(Duration::days(1)).unwrap_or(t),
    }
}

/// One interval's length.
pub fn step(g: HistoryGranularity) -> Duration {
    match g {
        HistoryGranularity::Hour => Duration::hours(1),
        HistoryGranularity::Week => Duration::weeks(1),
        _ => Duration::days(1),
    }
}

/// Rounds `t` up to the granularity.
pub fn ceil_to(t: DateTime<Utc>, g: HistoryGranularity) -> DateTime<Utc> {
    let f = floor_to(t, g);
    if f == t { t } else { f + step(g) }
}

/// The interval boundaries of a history range: [start, end) split in steps.
pub fn intervals(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    g: HistoryGranularity,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end && out.len() <= 1000 {
        out.push((at, at + step(g)));
        at += step(g);
    }
    out
}

/// The epoch, for defaults.
pub fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(0, 0).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("Champions").is_none());
        assert!(check_name("").is_some());
        assert!(check_name(" x").is_some());
        assert!(check_name("a\tb").is_some());
        assert!(check_name(&"x".repeat(101)).is_some());
        assert!(check_name(&Uuid::new_v4().to_string()).is_some());
    }

    #[test]
    fn descriptions() {
        assert!(check_description("").is_none());
        assert!(check_description("two\nlines\tand a tab").is_none());
        assert!(check_description(&"d".repeat(2000)).is_none());
        assert!(check_description(&"d".repeat(2001)).is_some());
        assert!(check_description("nul\0byte").is_some());
    }

    #[test]
    fn refresh_intervals_by_kind() {
        let d = |s| prost_types::Duration {
            seconds: s,
            nanos: 0,
        };
        assert_eq!(
            check_refresh_interval(SegmentKind::Dynamic, Some(&d(600))),
            Ok(Some(600))
        );
        assert!(check_refresh_interval(SegmentKind::Dynamic, Some(&d(100))).is_err());
        assert!(check_refresh_interval(SegmentKind::Dynamic, Some(&d(90_000))).is_err());
        assert!(check_refresh_interval(SegmentKind::Snapshot, Some(&d(7 * 86_400))).is_ok());
        assert!(check_refresh_interval(SegmentKind::Static, Some(&d(600))).is_err());
        assert_eq!(check_refresh_interval(SegmentKind::Static, None), Ok(None));
        assert_eq!(effective_interval(SegmentKind::Dynamic, None), Some(3600));
        assert_eq!(effective_interval(SegmentKind::Snapshot, None), None);
    }

    #[test]
    fn masks() {
        assert!(check_mask(&["name".into()]).is_empty());
        assert_eq!(check_mask(&[]).len(), 1);
        let bad = check_mask(&["kind".into(), "etag".into(), "nope".into()]);
        assert_eq!(bad.len(), 3);
        assert_eq!(bad[0].0, "update_mask.paths[0]");
        assert_eq!(check_mask(&["rule".into(), "rule_text".into()]).len(), 1);
    }

    #[test]
    fn cycles_and_order() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut edges = HashMap::new();
        edges.insert(b, vec![a]);
        edges.insert(c, vec![b]);
        // a -> c would close a -> c -> b -> a.
        let cycle = find_cycle(&edges, a, &[c]).unwrap();
        assert_eq!(cycle.first(), Some(&a));
        assert_eq!(cycle.last(), Some(&a));
        assert!(find_cycle(&edges, a, &[]).is_none());
        // Self reference.
        assert!(find_cycle(&edges, a, &[a]).is_some());
        let order = topological(&[c, a, b], &edges);
        assert_eq!(order, vec![a, b, c]);
        let deps = dependents(&[a], &edges);
        assert!(deps.contains(&b) && deps.contains(&c) && deps.len() == 2);
    }

    #[test]
    fn history_alignment() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 13, 40, 0).unwrap(); // a Wednesday
        assert_eq!(
            floor_to(t, HistoryGranularity::Hour),
            Utc.with_ymd_and_hms(2026, 11, 25, 13, 0, 0).unwrap()
        );
        assert_eq!(
            floor_to(t, HistoryGranularity::Week),
            Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
        );
        assert_eq!(
            ceil_to(t, HistoryGranularity::Day),
            Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap()
        );
        let iv = intervals(
            floor_to(t, HistoryGranularity::Day),
            ceil_to(t, HistoryGranularity::Day),
            HistoryGranularity::Day,
        );
        assert_eq!(iv.len(), 1);
    }

    #[test]
    fn request_ids() {
        assert!(check_request_id("").is_none());
        assert!(check_request_id("abc-123").is_none());
        assert!(check_request_id(&"x".repeat(129)).is_some());
        assert!(check_request_id("é").is_some());
    }
}
