//! The summary of `clustera demo orders`, and its checks against what the storefront sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use clustera::testing::kafka;
use clustera::StatsSnapshot;
use clustera_examples::orders::events::FinalState;
use clustera_examples::orders::generator::Storefront;
use clustera_examples::orders::kernels::Services;
use clustera_examples::orders::topics;
use serde::Serialize;

/// What happened, against what the storefront expects.
#[derive(Serialize)]
pub(super) struct Summary {
    submitted: usize,
    resubmitted: usize,
    poison: usize,
    replayed: bool,
    /// Each final state, expected and recorded on the read side.
    finals: Vec<FinalCount>,
    notifications: usize,
    /// Records on the dead-letter topic, and the distinct requests they hold.
    dead_letter_records: usize,
    dead_lettered_requests: usize,
    /// Poison kind → distinct requests dead-lettered.
    dead_letters_by_kind: BTreeMap<String, usize>,
    /// One `clustera.error` per poison kind.
    dead_letter_errors: BTreeMap<String, String>,
    gateway_503s_expected: usize,
    charges: usize,
    shipments: usize,
    /// Each kernel's runtime counters, in the flow's order.
    kernels: Vec<KernelSummary>,
    /// Kernel → redeliveries its handler absorbed.
    repeats: BTreeMap<String, u64>,
    pub(super) problems: Vec<String>,
}

#[derive(Serialize)]
struct FinalCount {
    state: String,
    expected: usize,
    recorded: usize,
}

#[derive(Serialize)]
struct KernelSummary {
    name: String,
    acked: u64,
    /// Acknowledged events meant for another kernel (the replay's are counted with the
    /// first group's).
    ignored: u64,
    skipped: u64,
    dead_lettered: u64,
    retries: u64,
    /// Records acknowledged: outputs and dead letters.
    records: u64,
}

impl Summary {
    pub(super) fn build(
        storefront: &Storefront,
        services: &Services,
        stats: &[(String, StatsSnapshot)],
        dead_letters: &[kafka::Consumed],
        replayed: bool,
    ) -> Self {
        let mut problems = Vec::new();
        let book = services.book.finals();
        let mut finals = Vec::new();
        for state in [
            FinalState::Shipped,
            FinalState::OutOfStock,
            FinalState::PaymentDeclined,
        ] {
            let recorded = book.values().filter(|s| **s == state).count();
            finals.push(FinalCount {
                state: state.to_string(),
                expected: storefront.expected_in(state),
                recorded,
            });
        }
        for (id, expected) in &storefront.expected {
            match book.get(id) {
                None => problems.push(format!("order {id} never reached a final state")),
                Some(s) if s != expected => {
                    problems.push(format!("order {id} ended {s}, expected {expected}"))
                }
                Some(_) => {}
            }
        }
        for id in book
            .keys()
            .filter(|id| !storefront.expected.contains_key(*id))
        {
            problems.push(format!(
                "order {id} is on the read side but was never valid"
            ));
        }
        problems.extend(services.book.conflicts());
        let notifications = services.book.notifications();
        let notified: BTreeSet<&str> = notifications.iter().map(|n| n.order_id.as_str()).collect();
        if notified.len() != notifications.len() {
            problems.push(format!(
                "{} notifications for {} orders",
                notifications.len(),
                notified.len()
            ));
        }

        // Dead letters: only poison requests, each once per delivery of it.
        let kinds: BTreeMap<&str, &str> = storefront
            .poison
            .iter()
            .map(|(k, kind)| (k.as_str(), *kind))
            .collect();
        let mut originals = BTreeSet::new();
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for d in dead_letters {
            let key = d
                .key
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let original = (
                d.header("clustera.original.topic").unwrap_or_default(),
                d.header("clustera.original.partition").unwrap_or_default(),
                d.header("clustera.original.offset").unwrap_or_default(),
            );
            if original.0 != topics::REQUESTS {
                problems.push(format!(
                    "dead letter from {:?}: {:?}",
                    original.0,
                    d.header("clustera.error")
                ));
            }
            let Some(kind) = kinds.get(key.as_ref()) else {
                problems.push(format!(
                    "request {key} was dead-lettered but is not poison: {:?}",
                    d.header("clustera.error")
                ));
                continue;
            };
            if originals.insert(original) {
                *by_kind.entry((*kind).to_owned()).or_default() += 1;
            }
            errors
                .entry((*kind).to_owned())
                .or_insert_with(|| d.header("clustera.error").unwrap_or_default());
        }
        if originals.len() != storefront.poison.len() {
            problems.push(format!(
                "{} poison requests dead-lettered, {} submitted",
                originals.len(),
                storefront.poison.len()
            ));
        }
        let deliveries = if replayed { 2 } else { 1 };
        if dead_letters.len() != storefront.poison.len() * deliveries {
            problems.push(format!(
                "{} dead letters for {} poison requests delivered {deliveries} time(s)",
                dead_letters.len(),
                storefront.poison.len()
            ));
        }

        // The 503s: one retry per order the gateway fails once, none dead-lettered.
        let payment = stats
            .iter()
            .find(|(name, _)| name == "payment")
            .map(|(_, s)| *s)
            .unwrap_or_default();
        if payment.retries != storefront.gateway_retries as u64 {
            problems.push(format!(
                "payment retried {} times, the gateway failed {} first charges",
                payment.retries, storefront.gateway_retries
            ));
        }
        for (name, s) in stats {
            if !name.starts_with("orders") && s.dead_lettered != 0 {
                problems.push(format!("{name} dead-lettered {} messages", s.dead_lettered));
            }
        }

        // Stock: what left the shelves is exactly what shipped.
        let mut shipped_units: BTreeMap<String, u64> = BTreeMap::new();
        for (id, request) in &storefront.requests {
            if book.get(id) == Some(&FinalState::Shipped) {
                for l in &request.lines {
                    *shipped_units.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
                }
            }
        }
        let now = services.warehouse.stock();
        for (sku, initial) in services.catalog.initial_stock() {
            let taken = initial - now.get(&sku).copied().unwrap_or(initial);
            let shipped = shipped_units.get(&sku).copied().unwrap_or(0);
            if taken != shipped {
                problems.push(format!("{sku}: {taken} units taken, {shipped} shipped"));
            }
        }
        let expected_charges =
            storefront.expected.len() - storefront.expected_in(FinalState::OutOfStock);
        if services.gateway.charges() != expected_charges {
            problems.push(format!(
                "{} charges, {expected_charges} orders reached payment",
                services.gateway.charges()
            ));
        }

        let c = &services.counters;
        let handlers = [
            ("orders", &c.orders),
            ("inventory", &c.inventory),
            ("payment", &c.payment),
            ("shipping", &c.shipping),
            ("notification", &c.notification),
        ];
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Summary {
            submitted: storefront.expected.len() + storefront.poison.len(),
            resubmitted: storefront.resubmitted,
            poison: storefront.poison.len(),
            replayed,
            finals,
            notifications: notifications.len(),
            dead_letter_records: dead_letters.len(),
            dead_lettered_requests: originals.len(),
            dead_letters_by_kind: by_kind,
            dead_letter_errors: errors,
            gateway_503s_expected: storefront.gateway_retries,
            charges: services.gateway.charges(),
            shipments: services.carrier.shipments(),
            kernels: stats
                .iter()
                .map(|(name, s)| KernelSummary {
                    name: name.clone(),
                    acked: s.acked,
                    ignored: handlers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or(0, |(_, h)| load(&h.ignored)),
                    skipped: s.skipped,
                    dead_lettered: s.dead_lettered,
                    retries: s.retries,
                    records: s.outputs_acked,
                })
                .collect(),
            repeats: handlers
                .iter()
                .map(|(name, h)| ((*name).to_owned(), load(&h.repeats)))
                .collect(),
            problems,
        }
    }

    pub(super) fn print(&self) {
        println!("\nfinal states (read side)   expected  recorded");
        for f in &self.finals {
            println!("  {:<24} {:>8}  {:>8}", f.state, f.expected, f.recorded);
        }
        println!(
            "notifications sent: {} (one per order); charges: {}; shipments: {}",
            self.notifications, self.charges, self.shipments
        );
        println!(
            "dead letters on {}: {} records for {} poison requests{}",
            topics::DEAD_LETTERS,
            self.dead_letter_records,
            self.dead_lettered_requests,
            if self.replayed {
                " (each dead-lettered once per delivery: the replay delivered them again)"
            } else {
                ""
            }
        );
        for (kind, n) in &self.dead_letters_by_kind {
            let error = self.dead_letter_errors.get(kind).map_or("", String::as_str);
            let error: String = error.chars().take(120).collect();
            println!("  {kind:<16} {n:>4}  e.g. {error}");
        }
        println!(
            "\nkernel                   acked  (not for it)  dead letters  retries  records  repeats absorbed"
        );
        for k in &self.kernels {
            let repeats = if k.name.ends_with("(replay)") {
                String::from("(counted above)")
            } else {
                self.repeats.get(&k.name).copied().unwrap_or(0).to_string()
            };
            println!(
                "  {:<20} {:>7}  {:>12}  {:>12}  {:>7}  {:>7}  {repeats:>16}",
                k.name, k.acked, k.ignored, k.dead_lettered, k.retries, k.records
            );
        }
        println!(
            "(retries: the gateway's 503 on the first charge of {} orders; records: outputs and \
             dead letters; repeats: requests submitted twice{}, absorbed by each handler's \
             idempotency)",
            self.gateway_503s_expected,
            if self.replayed { " and the replay" } else { "" }
        );
        if self.problems.is_empty() {
            println!(
                "\nchecks: OK (every order in its expected final state once, one notification \
                 each, every poison request dead-lettered, stock taken = stock shipped)"
            );
        }
    }
}
