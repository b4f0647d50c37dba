//! Identity resolution of many identifier sets at once (ResolveIdentities):
//! the decisions ResolveIdentity makes for one set, taken for every set of a
//! call in request order, as if each were resolved in turn. Pure: the store
//! reads who holds which identifier and what each customer already has, this
//! module decides, and the store writes the whole plan with set-based SQL.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::customer::{
    EMAIL, EXTERNAL, Ident, MAX_EMAILS, MAX_EXTERNAL, MAX_PHONES, PHONE, Stored,
};

/// An identifier's unique key: (kind, system, value).
pub type Key = (i16, String, String);

/// What the store knows of an existing customer that holds identifiers of
/// the call (the end of its merge chain).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holder {
    /// Soft-deleted: returned as it is, never attached to.
    pub deleted: bool,
    /// How many identifiers of each kind it has.
    pub counts: HashMap<i16, usize>,
    /// The kinds it already has a primary identifier of.
    pub primaries: HashSet<i16>,
}

impl Holder {
    /// A customer with these identifiers, soft-deleted or not.
    pub fn of(idents: &[Ident], deleted: bool) -> Self {
        let mut h = Holder {
            deleted,
            ..Holder::default()
        };
        for i in idents {
            *h.counts.entry(i.kind).or_default() += 1;
            if i.primary {
                h.primaries.insert(i.kind);
            }
        }
        h
    }
}

/// What ResolveIdentity found.
#[derive(Debug)]
pub enum Resolution {
    /// One customer, found or created.
    Resolved {
        /// The customer.
        customer: Box<Stored>,
        /// Created by this call.
        created: bool,
        /// Identifiers attached by this call.
        attached: Vec<Ident>,
    },
    /// Several customers hold the identifiers: (customer, its identifiers).
    Conflict(Vec<(Uuid, Vec<Ident>)>),
}

/// The contract's field names that attaching `attached` changes, in the
/// contract's order.
pub fn changed_identifier_fields(attached: &[Ident]) -> Vec<String> {
    [
        (EMAIL, "emails"),
        (PHONE, "phones"),
        (EXTERNAL, "external_identifiers"),
    ]
    .into_iter()
    .filter(|(kind, _)| attached.iter().any(|i| i.kind == *kind))
    .map(|(_, name)| name.to_string())
    .collect()
}

/// The decision for one set.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Create a customer with these identifiers (primaries set).
    Create {
        /// The new customer's id.
        customer_id: Uuid,
        /// Its identifiers.
        idents: Vec<Ident>,
    },
    /// An existing customer, or one created by an earlier set of the call;
    /// `attach` are the identifiers added to it by this set.
    Found {
        /// The customer.
        customer_id: Uuid,
        /// Identifiers this set attaches (empty when none, or lookup only).
        attach: Vec<Ident>,
    },
    /// The identifiers belong to several customers, in the order of the
    /// set's identifiers, each with the set's identifiers it holds.
    Conflict(Vec<(Uuid, Vec<Ident>)>),
    /// `lookup_only` and no identifier is known.
    NotFound,
}

/// One set to resolve: its normalised, de-duplicated identifiers.
#[derive(Debug, Clone)]
pub struct Set<'a> {
    /// The identifiers.
    pub idents: &'a [Ident],
    /// Never create nor attach.
    pub lookup_only: bool,
}

fn limit(kind: i16) -> usize {
    match kind {
        EMAIL => MAX_EMAILS,
        PHONE => MAX_PHONES,
        _ => MAX_EXTERNAL,
    }
}

/// Decides every set in order. `held` maps each identifier some customer
/// already holds to that customer (merge chains already followed);
/// `holders` describes those customers. `new_id` names created customers.
pub fn plan(
    sets: &[Set<'_>],
    held: &HashMap<Key, Uuid>,
    holders: &HashMap<Uuid, Holder>,
    mut new_id: impl FnMut() -> Uuid,
) -> Vec<Decision> {
    // What earlier sets of the call created or attached, on top of `held`.
    let mut owner: HashMap<Key, Uuid> = HashMap::new();
    let mut state: HashMap<Uuid, Holder> = HashMap::new();
    let mut out = Vec::with_capacity(sets.len());
    for set in sets {
        let mut order: Vec<Uuid> = Vec::new();
        let mut by_customer: HashMap<Uuid, Vec<Ident>> = HashMap::new();
        let mut unheld: Vec<&Ident> = Vec::new();
        for i in set.idents {
            let key = i.key();
            match owner.get(&key).or_else(|| held.get(&key)) {
                Some(c) => {
                    if !by_customer.contains_key(c) {
                        order.push(*c);
                    }
                    by_customer.entry(*c).or_default().push(i.clone());
                }
                None => unheld.push(i),
            }
        }
        let decision = match order.as_slice() {
            [] if set.lookup_only => Decision::NotFound,
            [] => {
                let id = new_id();
                let mut primaries = HashSet::new();
                let mut counts: HashMap<i16, usize> = HashMap::new();
                let idents: Vec<Ident> = set
                    .idents
                    .iter()
                    .map(|i| {
                        let mut i = i.clone();
                        i.primary = i.kind != EXTERNAL && primaries.insert(i.kind);
                        *counts.entry(i.kind).or_default() += 1;
                        i
                    })
                    .collect();
                for i in &idents {
                    owner.insert(i.key(), id);
                }
                state.insert(
                    id,
                    Holder {
                        deleted: false,
                        counts,
                        primaries,
                    },
                );
                Decision::Create {
                    customer_id: id,
                    idents,
                }
            }
            [one] => {
                let id = *one;
                let h = state
                    .entry(id)
                    .or_insert_with(|| holders.get(&id).cloned().unwrap_or_default());
                let mut attach = Vec::new();
                if !set.lookup_only && !h.deleted {
                    for i in unheld {
                        let c = h.counts.entry(i.kind).or_default();
                        if *c >= limit(i.kind) {
                            continue;
                        }
                        *c += 1;
                        let mut i = i.clone();
                        i.primary = i.kind != EXTERNAL && h.primaries.insert(i.kind);
                        owner.insert(i.key(), id);
                        attach.push(i);
                    }
                }
                Decision::Found {
                    customer_id: id,
                    attach,
                }
            }
            _ => Decision::Conflict(
                order
                    .iter()
                    .map(|c| (*c, by_customer.remove(c).unwrap_or_default()))
                    .collect(),
            ),
        };
        out.push(decision);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(v: &str) -> Ident {
        Ident {
            kind: EMAIL,
            system: String::new(),
            value: v.into(),
            primary: false,
            label: String::new(),
        }
    }

    fn phone(v: &str) -> Ident {
        Ident {
            kind: PHONE,
            ..email(v)
        }
    }

    fn ids() -> impl FnMut() -> Uuid {
        let mut n = 0u128;
        move || {
            n += 1;
            Uuid::from_u128(n)
        }
    }

    #[test]
    fn unknown_sets_create_and_later_sets_find_them() {
        let a = [email("a@x.org")];
        let b = [email("a@x.org"), phone("+34600000001")];
        let c = [phone("+34600000001")];
        let sets = [
            Set {
                idents: &a,
                lookup_only: false,
            },
            Set {
                idents: &b,
                lookup_only: false,
            },
            Set {
                idents: &c,
                lookup_only: true,
            },
        ];
        let d = plan(&sets, &HashMap::new(), &HashMap::new(), ids());
        let one = Uuid::from_u128(1);
        match &d[0] {
            Decision::Create {
                customer_id,
                idents,
            } => {
                assert_eq!(*customer_id, one);
                assert!(idents[0].primary);
            }
            other => panic!("{other:?}"),
        }
        // The second set finds the first's customer and attaches its phone,
        // as the first phone of the customer: primary.
        match &d[1] {
            Decision::Found {
                customer_id,
                attach,
            } => {
                assert_eq!(*customer_id, one);
                assert_eq!(attach.len(), 1);
                assert!(attach[0].primary && attach[0].kind == PHONE);
            }
            other => panic!("{other:?}"),
        }
        // The third, lookup only, finds it by the attached phone.
        assert_eq!(
            d[2],
            Decision::Found {
                customer_id: one,
                attach: vec![]
            }
        );
    }

    #[test]
    fn known_identifiers_of_two_customers_conflict_in_request_order() {
        let (x, y) = (Uuid::from_u128(10), Uuid::from_u128(20));
        let held: HashMap<Key, Uuid> = [(email("y@x.org").key(), y), (email("x@x.org").key(), x)]
            .into_iter()
            .collect();
        let set = [email("y@x.org"), email("new@x.org"), email("x@x.org")];
        let d = plan(
            &[Set {
                idents: &set,
                lookup_only: false,
            }],
            &held,
            &HashMap::new(),
            ids(),
        );
        let Decision::Conflict(m) = &d[0] else {
            panic!("{d:?}");
        };
        assert_eq!(m.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![y, x]);
        assert_eq!(m[0].1, vec![email("y@x.org")]);
    }

    #[test]
    fn attachments_respect_limits_deleted_customers_and_lookup_only() {
        let x = Uuid::from_u128(10);
        let held: HashMap<Key, Uuid> = [(email("x@x.org").key(), x)].into_iter().collect();
        let full = Holder {
            deleted: false,
            counts: [(EMAIL, MAX_EMAILS)].into_iter().collect(),
            primaries: [EMAIL].into_iter().collect(),
        };
        let set = [email("x@x.org"), email("more@x.org"), phone("+34600000002")];
        let run = |h: Holder, lookup_only: bool| {
            plan(
                &[Set {
                    idents: &set,
                    lookup_only,
                }],
                &held,
                &[(x, h)].into_iter().collect(),
                ids(),
            )
        };
        // Ten e-mails already: only the phone is attached, as primary phone.
        let Decision::Found { attach, .. } = &run(full.clone(), false)[0] else {
            panic!();
        };
        assert_eq!(attach.len(), 1);
        assert!(attach[0].kind == PHONE && attach[0].primary);
        // Deleted, or lookup only: found, nothing attached.
        let deleted = Holder {
            deleted: true,
            ..Holder::default()
        };
        for d in [run(deleted, false), run(full, true)] {
            assert_eq!(
                d[0],
                Decision::Found {
                    customer_id: x,
                    attach: vec![]
                }
            );
        }
    }

    #[test]
    fn lookup_only_without_known_identifiers_is_not_found() {
        let set = [email("nobody@x.org")];
        let d = plan(
            &[Set {
                idents: &set,
                lookup_only: true,
            }],
            &HashMap::new(),
            &HashMap::new(),
            ids(),
        );
        assert_eq!(d, vec![Decision::NotFound]);
    }
}
