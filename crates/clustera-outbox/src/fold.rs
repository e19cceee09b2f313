//! Folding a batch's writes before they reach the database. Hot counters (the seed's global
//! statistics document is touched by every event) would otherwise be updated hundreds of times
//! per transaction and, worse, stay locked from their first update to the commit, serializing
//! every partition's transactions behind one row.
//!
//! Documents that a batch only increments are reduced to one increment per field, applied at
//! the end of the transaction in a fixed order (short lock hold, and no deadlock between two
//! batches). Every other document keeps its operations in their original order. Increments
//! commute with each other, so the final state is the same as applying the writes one by one.

use std::collections::{BTreeMap, HashSet};

use crate::handler::DocOp;

/// A batch's writes, reduced.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded<'a> {
    /// Operations on documents that are not only incremented, in their original order.
    pub in_order: Vec<&'a DocOp>,
    /// Summed increments of documents that are only incremented, ordered by collection, id
    /// and field.
    pub increments: Vec<DocOp>,
}

/// Reduces `ops` (in application order) as described in the module documentation.
pub fn fold<'a>(ops: impl IntoIterator<Item = &'a DocOp> + Clone) -> Folded<'a> {
    let mixed: HashSet<(&str, &str)> = ops
        .clone()
        .into_iter()
        .filter(|op| !matches!(op, DocOp::Increment { .. }))
        .map(document)
        .collect();
    let mut sums: BTreeMap<(&'static str, &str, &'static str), i64> = BTreeMap::new();
    let mut in_order = Vec::new();
    for op in ops {
        match op {
            DocOp::Increment {
                collection,
                id,
                field,
                by,
            } if !mixed.contains(&(*collection, id.as_str())) => {
                let sum = sums.entry((collection, id, field)).or_insert(0);
                *sum = sum.saturating_add(*by);
            }
            _ => in_order.push(op),
        }
    }
    let increments = sums
        .into_iter()
        .map(|((collection, id, field), by)| DocOp::Increment {
            collection,
            id: id.to_owned(),
            field,
            by,
        })
        .collect();
    Folded {
        in_order,
        increments,
    }
}

/// The document an operation writes.
fn document(op: &DocOp) -> (&'static str, &str) {
    match op {
        DocOp::Upsert { collection, id, .. }
        | DocOp::Merge { collection, id, .. }
        | DocOp::Increment { collection, id, .. }
        | DocOp::AddToSet { collection, id, .. } => (collection, id),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;

    /// The store's semantics in memory, as the SQL statements define them.
    fn apply(docs: &mut HashMap<(String, String), Map<String, Value>>, op: &DocOp) {
        let (collection, id) = document(op);
        let doc = docs
            .entry((collection.to_owned(), id.to_owned()))
            .or_default();
        match op {
            DocOp::Upsert { doc: d, .. } => *doc = d.as_object().cloned().unwrap_or_default(),
            DocOp::Merge { patch, .. } => {
                for (k, v) in patch.as_object().cloned().unwrap_or_default() {
                    doc.insert(k, v);
                }
            }
            DocOp::Increment { field, by, .. } => {
                let n = doc.get(*field).and_then(Value::as_i64).unwrap_or(0);
                doc.insert((*field).to_owned(), json!(n + by));
            }
            DocOp::AddToSet { field, value, .. } => {
                let set = doc.entry((*field).to_owned()).or_insert_with(|| json!([]));
                if let Some(items) = set.as_array_mut() {
                    if !items.contains(value) {
                        items.push(value.clone());
                    }
                }
            }
        }
    }

    fn op() -> impl Strategy<Value = DocOp> {
        let collection = prop::sample::select(vec!["stats", "users"]);
        let id = prop::sample::select(vec!["global", "a", "b"]).prop_map(str::to_owned);
        let field = prop::sample::select(vec!["x", "y"]);
        (collection, id, field, 0..4u8, -3i64..4).prop_map(|(collection, id, field, kind, n)| {
            match kind {
                0 => DocOp::Upsert {
                    collection,
                    id,
                    doc: json!({ field: n, "name": "u" }),
                },
                1 => DocOp::Merge {
                    collection,
                    id,
                    patch: json!({ field: n }),
                },
                2 => DocOp::AddToSet {
                    collection,
                    id,
                    field: "members",
                    value: json!(n),
                },
                _ => DocOp::Increment {
                    collection,
                    id,
                    field,
                    by: n,
                },
            }
        })
    }

    proptest! {
        #[test]
        fn folding_keeps_the_final_state(ops in prop::collection::vec(op(), 0..40)) {
            let mut one_by_one = HashMap::new();
            for op in &ops {
                apply(&mut one_by_one, op);
            }
            let folded = fold(&ops);
            let mut batched = HashMap::new();
            for op in folded.in_order.iter().copied().chain(&folded.increments) {
                apply(&mut batched, op);
            }
            prop_assert_eq!(one_by_one, batched);
        }
    }

    #[test]
    fn hot_counters_become_one_increment_per_field_in_a_fixed_order() {
        let inc = |id: &str, field: &'static str| DocOp::Increment {
            collection: "user_stats",
            id: id.to_owned(),
            field,
            by: 1,
        };
        let upsert = DocOp::Upsert {
            collection: "users",
            id: "u1".into(),
            doc: json!({"name": "a"}),
        };
        let ops = vec![
            inc("global", "total_users"),
            upsert.clone(),
            inc("u1", "events"),
            inc("global", "total_users"),
            inc("global", "total_activities"),
        ];
        let folded = fold(&ops);
        assert_eq!(folded.in_order, vec![&upsert]);
        let summed: Vec<_> = folded
            .increments
            .iter()
            .map(|op| match op {
                DocOp::Increment { id, field, by, .. } => (id.as_str(), *field, *by),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            summed,
            vec![
                ("global", "total_activities", 1),
                ("global", "total_users", 2),
                ("u1", "events", 1)
            ]
        );
    }
}
