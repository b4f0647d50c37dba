//! The life cycle of service requests and complaints.
//!
//! ```text
//! OPEN -> IN_PROGRESS -> RESOLVED -> CLOSED
//! RESOLVED -> OPEN, CLOSED -> OPEN          (reopen)
//! ```

use rapport_proto::rapport::interaction::v1::ServiceRequestStatus as S;

/// What a requested status change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The request already has that status: nothing changes.
    Unchanged,
    /// A legal change. `resolves` when it becomes RESOLVED (sets the resolve
    /// time), `reopens` when it goes back to OPEN (clears it).
    Change {
        /// The status becomes RESOLVED.
        resolves: bool,
        /// The status goes back to OPEN.
        reopens: bool,
    },
    /// Not allowed.
    Illegal,
}

/// The transition from `from` to `to`.
pub fn transition(from: S, to: S) -> Transition {
    if from == to {
        return Transition::Unchanged;
    }
    let legal = matches!(
        (from, to),
        (S::Open, S::InProgress)
            | (S::InProgress, S::Resolved)
            | (S::Resolved, S::Closed)
            | (S::Resolved, S::Open)
            | (S::Closed, S::Open)
    );
    if legal {
        Transition::Change {
            resolves: to == S::Resolved,
            reopens: to == S::Open,
        }
    } else {
        Transition::Illegal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [S; 4] = [S::Open, S::InProgress, S::Resolved, S::Closed];

    #[test]
    fn exactly_the_documented_transitions_are_legal() {
        let mut legal = Vec::new();
        for from in ALL {
            for to in ALL {
                if let Transition::Change { .. } = transition(from, to) {
                    legal.push((from, to));
                }
            }
        }
        assert_eq!(
            legal,
            [
                (S::Open, S::InProgress),
                (S::InProgress, S::Resolved),
                (S::Resolved, S::Open),
                (S::Resolved, S::Closed),
                (S::Closed, S::Open),
            ]
        );
    }

    #[test]
    fn same_status_is_unchanged_and_flags_are_right() {
        for s in ALL {
            assert_eq!(transition(s, s), Transition::Unchanged);
        }
        assert_eq!(
            transition(S::InProgress, S::Resolved),
            Transition::Change {
                resolves: true,
                reopens: false
            }
        );
        assert_eq!(
            transition(S::Closed, S::Open),
            Transition::Change {
                resolves: false,
                reopens: true
            }
        );
        assert_eq!(transition(S::Open, S::Closed), Transition::Illegal);
        assert_eq!(transition(S::Closed, S::Resolved), Transition::Illegal);
    }
}
