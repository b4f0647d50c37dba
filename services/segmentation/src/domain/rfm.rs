//! RFM scores (classification.proto, RfmScores and RfmSegment): quintile
//! scores within the tenant and the eleven named segments.
//!
//! A customer with `k` scored customers strictly worse on a measure among `N`
//! scores `1 + floor(5 k / N)`. The score only grows with the measure, so it
//! is fixed by four cut-offs: the values at the worst-first positions
//! `ceil((s - 1) N / 5) - 1` for s = 2..=5; a value scores 1 plus the number
//! of cut-offs it beats strictly. Between full computations a customer is
//! scored against the stored cut-offs.

use rapport_proto::rapport::segmentation::v1::RfmSegment;

/// The score of a customer with `worse` scored customers strictly worse,
/// among `total`.
pub fn score(worse: u64, total: u64) -> i32 {
    if total == 0 {
        return 1;
    }
    (1 + (5 * worse.min(total)) / total).min(5) as i32
}

/// The four cut-offs of a measure, from `sorted` (worst first).
pub fn cutoffs<T: Clone>(sorted_worst_first: &[T]) -> Vec<T> {
    let n = sorted_worst_first.len();
    if n == 0 {
        return Vec::new();
    }
    (2..=5)
        .map(|s| {
            let m = ((s - 1) * n).div_ceil(5);
            sorted_worst_first[m.max(1) - 1].clone()
        })
        .collect()
}

/// The score of `value` against cut-offs, `better(a, b)` true when a is
/// strictly better than b.
pub fn score_against<T>(value: &T, cutoffs: &[T], better: impl Fn(&T, &T) -> bool) -> i32 {
    1 + cutoffs.iter().filter(|c| better(value, c)).count() as i32
}

/// FM: the rounded-up mean of F and M.
pub fn fm(f: i32, m: i32) -> i32 {
    (f + m + 1) / 2
}

/// The named segment of R and FM (the table of RfmSegment).
pub fn segment(r: i32, fm: i32) -> RfmSegment {
    use RfmSegment::*;
    match (r.clamp(1, 5), fm.clamp(1, 5)) {
        (5, 1) => NewCustomers,
        (5, 2 | 3) => PotentialLoyalist,
        (5, _) => Champions,
        (4, 1) => Promising,
        (4, 2 | 3) => PotentialLoyalist,
        (4, _) => Loyal,
        (3, 1 | 2) => AboutToSleep,
        (3, 3) => NeedAttention,
        (3, _) => Loyal,
        (2, 1 | 2) => Hibernating,
        (2, 3 | 4) => AtRisk,
        (2, _) => CannotLoseThem,
        (_, 1) => Lost,
        (_, 2) => Hibernating,
        (_, 3 | 4) => AtRisk,
        _ => CannotLoseThem,
    }
}

/// The eleven segments in the order of RfmSegment.
pub const SEGMENTS: [RfmSegment; 11] = [
    RfmSegment::Champions,
    RfmSegment::Loyal,
    RfmSegment::PotentialLoyalist,
    RfmSegment::NewCustomers,
    RfmSegment::Promising,
    RfmSegment::NeedAttention,
    RfmSegment::AboutToSleep,
    RfmSegment::AtRisk,
    RfmSegment::CannotLoseThem,
    RfmSegment::Hibernating,
    RfmSegment::Lost,
];

/// The display name of a segment (the value of the rule field `rfm.segment`).
pub fn name(s: RfmSegment) -> &'static str {
    match s {
        RfmSegment::Unspecified => "",
        RfmSegment::Champions => "Champions",
        RfmSegment::Loyal => "Loyal",
        RfmSegment::PotentialLoyalist => "Potential Loyalist",
        RfmSegment::NewCustomers => "New Customers",
        RfmSegment::Promising => "Promising",
        RfmSegment::NeedAttention => "Need Attention",
        RfmSegment::AboutToSleep => "About to Sleep",
        RfmSegment::AtRisk => "At Risk",
        RfmSegment::CannotLoseThem => "Cannot Lose Them",
        RfmSegment::Hibernating => "Hibernating",
        RfmSegment::Lost => "Lost",
    }
}

/// The segment of a display name.
pub fn from_name(n: &str) -> RfmSegment {
    SEGMENTS
        .iter()
        .copied()
        .find(|s| name(*s) == n)
        .unwrap_or(RfmSegment::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scores_follow_the_formula() {
        // Ten customers with distinct values: two per quintile.
        let scores: Vec<i32> = (0..10).map(|k| score(k, 10)).collect();
        assert_eq!(scores, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        assert_eq!(score(0, 1), 1);
        assert_eq!(score(3, 4), 4);
        assert_eq!(score(0, 0), 1);
    }

    #[test]
    fn cutoffs_reproduce_the_formula() {
        let values: Vec<i64> = vec![1, 2, 2, 3, 5, 5, 5, 8, 9, 12, 12, 20];
        let cuts = cutoffs(&values);
        assert_eq!(cuts.len(), 4);
        for v in &values {
            let worse = values.iter().filter(|x| *x < v).count() as u64;
            let expect = score(worse, values.len() as u64);
            assert_eq!(score_against(v, &cuts, |a, b| a > b), expect, "value {v}");
        }
    }

    proptest! {
        #[test]
        fn cutoffs_agree_with_counting(mut values in proptest::collection::vec(0i64..50, 1..80)) {
            values.sort();
            let cuts = cutoffs(&values);
            for v in &values {
                let worse = values.iter().filter(|x| *x < v).count() as u64;
                prop_assert_eq!(score_against(v, &cuts, |a, b| a > b), score(worse, values.len() as u64));
            }
        }

        #[test]
        fn scores_stay_in_range(worse in 0u64..1000, extra in 1u64..1000) {
            let s = score(worse, worse + extra);
            prop_assert!((1..=5).contains(&s));
        }
    }

    #[test]
    fn fm_rounds_up() {
        assert_eq!(fm(1, 1), 1);
        assert_eq!(fm(1, 2), 2);
        assert_eq!(fm(4, 5), 5);
        assert_eq!(fm(3, 4), 4);
    }

    #[test]
    fn the_mapping_table() {
        use RfmSegment::*;
        let table = [
            [
                NewCustomers,
                PotentialLoyalist,
                PotentialLoyalist,
                Champions,
                Champions,
            ],
            [
                Promising,
                PotentialLoyalist,
                PotentialLoyalist,
                Loyal,
                Loyal,
            ],
            [AboutToSleep, AboutToSleep, NeedAttention, Loyal, Loyal],
            [Hibernating, Hibernating, AtRisk, AtRisk, CannotLoseThem],
            [Lost, Hibernating, AtRisk, AtRisk, CannotLoseThem],
        ];
        for (row, r) in table.iter().zip([5, 4, 3, 2, 1]) {
            for (expect, fm) in row.iter().zip(1..=5) {
                assert_eq!(segment(r, fm), *expect, "R {r} FM {fm}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in SEGMENTS {
            assert_eq!(from_name(name(s)), s);
        }
        assert_eq!(name(RfmSegment::CannotLoseThem), "Cannot Lose Them");
        assert_eq!(from_name("nope"), RfmSegment::Unspecified);
    }
}
