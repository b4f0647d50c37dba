//! Where a reader stands on a feed, per tenant.

use super::*;

/// Where a reader stands on a feed: per tenant, the sequence of the last
/// event it has; `default` for every tenant not listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// The sequence for tenants not in `tenants`.
    pub default: i64,
    /// Per tenant, the sequence of the last event it has.
    pub tenants: HashMap<Uuid, i64>,
}

impl Position {
    /// The position at `after` in every tenant.
    pub fn at(after: i64) -> Self {
        Self {
            default: after,
            tenants: HashMap::new(),
        }
    }

    /// The sequence of the last event of `tenant` the reader has.
    pub fn after(&self, tenant: Uuid) -> i64 {
        self.tenants.get(&tenant).copied().unwrap_or(self.default)
    }

    /// Notes that the reader has `tenant`'s events up to `sequence`.
    pub fn advance(&mut self, tenant: Uuid, sequence: i64) {
        let at = self.tenants.entry(tenant).or_insert(self.default);
        *at = (*at).max(sequence);
    }

    /// The `positions` of a `WatchChangesRequest`.
    pub fn positions(&self) -> Vec<FeedPosition> {
        let mut out: Vec<FeedPosition> = self
            .tenants
            .iter()
            .filter(|(_, s)| **s != self.default)
            .map(|(t, s)| FeedPosition {
                tenant_id: t.to_string(),
                after_sequence: *s,
            })
            .collect();
        out.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        out
    }
}

/// Most entries of `WatchChangesRequest.positions`.
pub const MAX_POSITIONS: usize = 100_000;

/// The reader's position from a `WatchChangesRequest`, validated: field
/// violations name `after_sequence` and `positions[i]`. On a call made for
/// `tenant`, a position may name only that tenant.
pub fn position_of(
    after_sequence: i64,
    positions: &[FeedPosition],
    tenant: Option<Uuid>,
) -> Result<Position, ApiError> {
    let mut v = Violations::new();
    v.check(after_sequence < 0, "after_sequence", "must not be negative");
    if positions.len() > MAX_POSITIONS {
        v.add(
            "positions",
            format!("at most {MAX_POSITIONS} positions, one per tenant"),
        );
        return v.finish().map(|()| Position::default());
    }
    let mut out = Position::at(after_sequence.max(0));
    for (i, p) in positions.iter().enumerate() {
        let field = format!("positions[{i}]");
        v.check(
            p.after_sequence < 0,
            format!("{field}.after_sequence"),
            "must not be negative",
        );
        match Uuid::parse_str(&p.tenant_id) {
            Err(_) => v.add(format!("{field}.tenant_id"), "must be a tenant id (a UUID)"),
            Ok(t) if tenant.is_some_and(|own| own != t) => v.add(
                format!("{field}.tenant_id"),
                "a call made for a tenant reads that tenant's events only",
            ),
            Ok(t) => {
                if out.tenants.insert(t, p.after_sequence.max(0)).is_some() {
                    v.add(format!("{field}.tenant_id"), "tenant listed twice");
                }
            }
        }
    }
    v.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_default_and_advance() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let mut p = Position::at(7);
        assert_eq!(p.after(a), 7);
        p.advance(a, 3);
        assert_eq!(p.after(a), 7, "never moves back");
        p.advance(a, 12);
        p.advance(b, 7);
        assert_eq!((p.after(a), p.after(b)), (12, 7));
        // Only the tenants away from the default are sent.
        let sent = p.positions();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].tenant_id, a.to_string());
        let back = position_of(p.default, &sent, None).unwrap();
        assert_eq!(back.after(a), 12);
        assert_eq!(back.after(b), 7);
    }

    #[test]
    fn positions_are_validated() {
        let a = Uuid::new_v4();
        let pos = |t: &str, s: i64| FeedPosition {
            tenant_id: t.into(),
            after_sequence: s,
        };
        let fields = |r: Result<Position, ApiError>| match r {
            Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect::<Vec<_>>(),
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(fields(position_of(-1, &[], None)), ["after_sequence"]);
        assert_eq!(
            fields(position_of(
                0,
                &[
                    pos("nope", 1),
                    pos(&a.to_string(), -2),
                    pos(&a.to_string(), 3)
                ],
                None
            )),
            [
                "positions[0].tenant_id",
                "positions[1].after_sequence",
                "positions[2].tenant_id"
            ]
        );
        // A call made for a tenant names only that tenant.
        let own = Uuid::new_v4();
        assert_eq!(
            fields(position_of(0, &[pos(&a.to_string(), 1)], Some(own))),
            ["positions[0].tenant_id"]
        );
        assert_eq!(
            position_of(0, &[pos(&own.to_string(), 4)], Some(own))
                .unwrap()
                .after(own),
            4
        );
        let many = vec![pos(&a.to_string(), 0); MAX_POSITIONS + 1];
        assert_eq!(fields(position_of(0, &many, None)), ["positions"]);
    }
}
