//! The storefront: a deterministic stream of order requests, some of them poison, some
//! submitted twice, and what should become of each.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::events::{FinalState, OrderRequest, RequestLine};
use super::stores::{Catalog, Gateway, SOLD_OUT};

/// Customers; those whose number ends in 9 have a low card limit.
pub const CUSTOMERS: u32 = 20;

/// The low card limit, in cents.
pub const LOW_LIMIT_CENTS: u64 = 5_000;

/// The gateway's card limits for the demo's customers.
pub fn card_limits() -> Vec<(String, u64)> {
    (0..CUSTOMERS)
        .filter(|c| c % 10 == 9)
        .map(|c| (customer(c), LOW_LIMIT_CENTS))
        .collect()
}

fn customer(n: u32) -> String {
    format!("cust-{n:02}")
}

/// What the storefront sends, and what it expects.
#[derive(Debug, Clone, Default)]
pub struct Storefront {
    /// The records for `orders.requests`: key (the order id, when there is one) and value.
    pub records: Vec<(Option<String>, Vec<u8>)>,
    /// The expected final state of each valid order.
    pub expected: BTreeMap<String, FinalState>,
    /// Each valid order as requested.
    pub requests: BTreeMap<String, OrderRequest>,
    /// The poison requests: key and what is wrong with them.
    pub poison: Vec<(String, &'static str)>,
    /// Requests submitted a second time.
    pub resubmitted: usize,
    /// Orders whose first charge the gateway fails (a retry each).
    pub gateway_retries: usize,
}

/// The poison kinds, in turn.
const POISON: [&str; 4] = ["not JSON", "quantity 0", "unknown product", "no lines"];

impl Storefront {
    /// `orders` orders from `seed`: one in 25 poison, one in 20 of the others submitted twice,
    /// one in 20 with the sold-out product.
    pub fn generate(orders: usize, seed: u64) -> Self {
        let catalog = Catalog::demo();
        let in_stock = catalog.in_stock();
        let limits: BTreeMap<String, u64> = card_limits().into_iter().collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Storefront::default();
        let mut resubmit = Vec::new();
        for i in 0..orders {
            let order_id = format!("o-{i:06}");
            let customer_id = customer(rng.random_range(0..CUSTOMERS));
            if i % 25 == 24 {
                let kind = POISON[(i / 25) % POISON.len()];
                let value = match kind {
                    "not JSON" => {
                        format!("{{\"order_id\": \"{order_id}\", \"lines\": [").into_bytes()
                    }
                    _ => {
                        let lines = match kind {
                            "quantity 0" => vec![line("cable", 0)],
                            "unknown product" => vec![line("flux-capacitor", 1)],
                            _ => Vec::new(),
                        };
                        json(&OrderRequest {
                            order_id: order_id.clone(),
                            customer_id,
                            lines,
                        })
                    }
                };
                out.records.push((Some(order_id.clone()), value));
                out.poison.push((order_id, kind));
                continue;
            }
            let mut lines: Vec<RequestLine> = (0..rng.random_range(1..=3))
                .map(|_| {
                    let sku = in_stock[rng.random_range(0..in_stock.len())];
                    line(sku, rng.random_range(1..=3))
                })
                .collect();
            if i % 20 == 7 {
                lines.push(line(SOLD_OUT, 1));
            }
            let request = OrderRequest {
                order_id: order_id.clone(),
                customer_id,
                lines,
            };
            let expected = Self::expect(&request, &catalog, &limits);
            if expected != FinalState::OutOfStock && Gateway::is_flaky(&order_id) {
                out.gateway_retries += 1;
            }
            out.expected.insert(order_id.clone(), expected);
            let value = json(&request);
            out.requests.insert(order_id.clone(), request);
            if i % 20 == 3 {
                resubmit.push((Some(order_id.clone()), value.clone()));
            }
            out.records.push((Some(order_id), value));
            // A client that timed out submits again a little later.
            if resubmit.len() == 3 || i + 1 == orders {
                out.resubmitted += resubmit.len();
                out.records.append(&mut resubmit);
            }
        }
        out.resubmitted += resubmit.len();
        out.records.append(&mut resubmit);
        out
    }

    /// What should become of a valid request: the first rule that applies, as the kernels
    /// apply them (stock, then payment).
    fn expect(
        request: &OrderRequest,
        catalog: &Catalog,
        limits: &BTreeMap<String, u64>,
    ) -> FinalState {
        if request.lines.iter().any(|l| l.sku == SOLD_OUT) {
            return FinalState::OutOfStock;
        }
        let total: u64 = request
            .lines
            .iter()
            .map(|l| u64::from(l.quantity) * catalog.price_cents(&l.sku).unwrap_or(0))
            .sum();
        match limits.get(&request.customer_id) {
            Some(limit) if total > *limit => FinalState::PaymentDeclined,
            _ => FinalState::Shipped,
        }
    }

    /// How many valid orders should end in `state`.
    pub fn expected_in(&self, state: FinalState) -> usize {
        self.expected.values().filter(|s| **s == state).count()
    }
}

fn line(sku: &str, quantity: u32) -> RequestLine {
    RequestLine {
        sku: sku.into(),
        quantity,
    }
}

fn json(request: &OrderRequest) -> Vec<u8> {
    // Serializing a plain struct of strings and numbers cannot fail.
    serde_json::to_vec(request).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_deterministic_and_has_every_case() {
        let a = Storefront::generate(400, 7);
        let b = Storefront::generate(400, 7);
        assert_eq!(a.records, b.records);
        assert_eq!(a.poison.len(), 16);
        assert_eq!(a.expected.len(), 384);
        assert_eq!(a.records.len(), 400 + a.resubmitted);
        assert_eq!(a.resubmitted, 20);
        assert_eq!(a.expected_in(FinalState::OutOfStock), 20);
        assert!(a.expected_in(FinalState::PaymentDeclined) > 0);
        assert!(a.expected_in(FinalState::Shipped) > 300);
        assert!(a.gateway_retries > 0);
    }
}
