//! The services' state, in memory: each stands in for one service's database, and each
//! operation is one transaction (one lock). Every operation is idempotent per order id: done
//! again, it changes nothing and answers what it answered the first time, and says it was a
//! repeat so the demo can count them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::events::{FinalState, Order};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked is dead-lettered by the runtime; its store stays usable (each
    // operation below finishes its writes before anything can panic).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether an operation was done now or had been done before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Done now.
    Now,
    /// Done before: nothing changed.
    Before,
}

/// Products, prices and the stock each starts with.
#[derive(Debug, Clone)]
pub struct Catalog {
    products: BTreeMap<String, (u64, u64)>,
}

impl Catalog {
    /// The demo's catalog: four products in stock, and one sold out.
    pub fn demo() -> Self {
        let products = [
            ("keyboard", 4_900, 1_000_000),
            ("mouse", 1_900, 1_000_000),
            ("monitor", 18_900, 1_000_000),
            ("cable", 900, 1_000_000),
            (SOLD_OUT, 12_000, 0),
        ];
        Self {
            products: products
                .into_iter()
                .map(|(sku, price, stock)| (sku.to_owned(), (price, stock)))
                .collect(),
        }
    }

    /// The price of one unit, if the product exists.
    pub fn price_cents(&self, sku: &str) -> Option<u64> {
        self.products.get(sku).map(|(price, _)| *price)
    }

    /// Every product with its initial stock.
    pub fn initial_stock(&self) -> BTreeMap<String, u64> {
        self.products
            .iter()
            .map(|(sku, (_, stock))| (sku.clone(), *stock))
            .collect()
    }

    /// The products that can be ordered and are in stock.
    pub fn in_stock(&self) -> Vec<&str> {
        self.products
            .iter()
            .filter(|(_, (_, stock))| *stock > 0)
            .map(|(sku, _)| sku.as_str())
            .collect()
    }
}

/// The product the demo's catalog has none of.
pub const SOLD_OUT: &str = "signed-vinyl";

/// The orders service's record of the orders it placed.
#[derive(Debug, Default)]
pub struct PlacedOrders {
    orders: Mutex<HashMap<String, Order>>,
}

/// What [`PlacedOrders::place`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Placed now, or placed before with the same content.
    Placed(Order, Done),
    /// The id was placed before with other content: the storefront reused an id.
    Conflict,
}

impl PlacedOrders {
    /// Places `order` unless its id is known.
    pub fn place(&self, order: Order) -> Placement {
        let mut orders = lock(&self.orders);
        match orders.get(&order.order_id) {
            Some(known) if *known == order => Placement::Placed(order, Done::Before),
            Some(_) => Placement::Conflict,
            None => {
                orders.insert(order.order_id.clone(), order.clone());
                Placement::Placed(order, Done::Now)
            }
        }
    }
}

/// The inventory service: stock levels and one reservation per order.
#[derive(Debug)]
pub struct Warehouse {
    state: Mutex<WarehouseState>,
}

#[derive(Debug)]
struct WarehouseState {
    stock: BTreeMap<String, u64>,
    reservations: HashMap<String, Reservation>,
}

/// What happened to an order's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Held for the order.
    Held,
    /// Held, then given back (the payment was declined).
    Released,
    /// Not available: the first product short.
    Short(String),
}

impl Warehouse {
    /// A warehouse stocked as `catalog` says.
    pub fn new(catalog: &Catalog) -> Self {
        Self {
            state: Mutex::new(WarehouseState {
                stock: catalog.initial_stock(),
                reservations: HashMap::new(),
            }),
        }
    }

    /// Holds every line of `order`, or nothing if one is short. A repeat answers the first
    /// result (a released reservation stays released: it answered `Held` first).
    pub fn reserve(&self, order: &Order) -> (Reservation, Done) {
        let mut s = lock(&self.state);
        if let Some(r) = s.reservations.get(&order.order_id) {
            let first = match r {
                Reservation::Released => Reservation::Held,
                other => other.clone(),
            };
            return (first, Done::Before);
        }
        let short = order
            .lines
            .iter()
            .find(|l| s.stock.get(&l.sku).copied().unwrap_or(0) < u64::from(l.quantity));
        let result = match short {
            Some(l) => Reservation::Short(l.sku.clone()),
            None => {
                for l in &order.lines {
                    if let Some(level) = s.stock.get_mut(&l.sku) {
                        *level -= u64::from(l.quantity);
                    }
                }
                Reservation::Held
            }
        };
        s.reservations
            .insert(order.order_id.clone(), result.clone());
        (result, Done::Now)
    }

    /// Gives an order's held stock back. Unknown, short or already released: nothing to do.
    pub fn release(&self, order: &Order) -> Done {
        let mut s = lock(&self.state);
        if s.reservations.get(&order.order_id) != Some(&Reservation::Held) {
            return Done::Before;
        }
        for l in &order.lines {
            *s.stock.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
        }
        s.reservations
            .insert(order.order_id.clone(), Reservation::Released);
        Done::Now
    }

    /// Current stock levels.
    pub fn stock(&self) -> BTreeMap<String, u64> {
        lock(&self.state).stock.clone()
    }
}

/// The payment gateway, charging each order at most once (the order id is the idempotency
/// key, as with a real gateway's `Idempotency-Key`).
#[derive(Debug)]
pub struct Gateway {
    state: Mutex<GatewayState>,
    /// Customers whose card is refused above this total.
    limits: HashMap<String, u64>,
}

#[derive(Debug, Default)]
struct GatewayState {
    charges: HashMap<String, Charge>,
    failed_once: HashSet<String>,
}

/// A charge's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// Captured, with the gateway's payment id.
    Captured(String),
    /// Declined, with the reason.
    Declined(String),
}

/// The gateway could not answer this time (its 503).
#[derive(Debug, Clone, thiserror::Error)]
#[error("payment gateway answered 503 Service Unavailable for order {0}")]
pub struct GatewayUnavailable(pub String);

impl Gateway {
    /// A gateway where `customer` is declined above `limit_cents`, for each pair.
    pub fn new(limits: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            state: Mutex::default(),
            limits: limits.into_iter().collect(),
        }
    }

    /// Charges `order`. The first attempt for an order that [`Gateway::is_flaky`] fails with
    /// a 503; a repeat answers the first result without charging again.
    pub fn charge(&self, order: &Order) -> Result<(Charge, Done), GatewayUnavailable> {
        let mut s = lock(&self.state);
        if let Some(c) = s.charges.get(&order.order_id) {
            return Ok((c.clone(), Done::Before));
        }
        if Self::is_flaky(&order.order_id) && s.failed_once.insert(order.order_id.clone()) {
            return Err(GatewayUnavailable(order.order_id.clone()));
        }
        let charge = match self.limits.get(&order.customer_id) {
            Some(limit) if order.total_cents > *limit => Charge::Declined(format!(
                "card limit {:.2} below total {:.2}",
                *limit as f64 / 100.0,
                order.total_cents as f64 / 100.0
            )),
            _ => Charge::Captured(format!("pay-{}", order.order_id)),
        };
        s.charges.insert(order.order_id.clone(), charge.clone());
        Ok((charge, Done::Now))
    }

    /// Whether the gateway fails the first charge of this order: one order in seven, by id.
    pub fn is_flaky(order_id: &str) -> bool {
        order_id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 7
            == 3
    }

    /// Charges made (each order once).
    pub fn charges(&self) -> usize {
        lock(&self.state).charges.len()
    }
}

/// The carrier: one shipment per order.
#[derive(Debug, Default)]
pub struct Carrier {
    shipments: Mutex<HashMap<String, String>>,
}

impl Carrier {
    /// Books a shipment for `order`, or answers the one booked before.
    pub fn ship(&self, order: &Order) -> (String, Done) {
        let mut shipments = lock(&self.shipments);
        if let Some(t) = shipments.get(&order.order_id) {
            return (t.clone(), Done::Before);
        }
        let tracking = format!("TRK-{}-{:04}", order.order_id, shipments.len() + 1);
        shipments.insert(order.order_id.clone(), tracking.clone());
        (tracking, Done::Now)
    }

    /// Shipments booked.
    pub fn shipments(&self) -> usize {
        lock(&self.shipments).len()
    }
}

/// The read side: each order's final state, and the notification its customer got. Both are
/// written in one transaction, so a customer is notified once per order.
#[derive(Debug, Default)]
pub struct OrderBook {
    state: Mutex<BookState>,
}

#[derive(Debug, Default)]
struct BookState {
    finals: HashMap<String, FinalState>,
    notifications: Vec<Notification>,
    conflicts: Vec<String>,
}

/// A message to a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Who.
    pub customer_id: String,
    /// Which order.
    pub order_id: String,
    /// What to say.
    pub text: String,
}

impl OrderBook {
    /// Records that `order` ended in `state` and notifies its customer, once. A second,
    /// different final state for the same order is a bug upstream: it is kept aside (see
    /// [`OrderBook::conflicts`]), never applied.
    pub fn finish(&self, order: &Order, state: FinalState, text: String) -> Done {
        let mut s = lock(&self.state);
        match s.finals.get(&order.order_id) {
            Some(known) if *known == state => Done::Before,
            Some(known) => {
                let conflict = format!("order {}: {state} after {known}", order.order_id);
                s.conflicts.push(conflict);
                Done::Before
            }
            None => {
                s.finals.insert(order.order_id.clone(), state);
                s.notifications.push(Notification {
                    customer_id: order.customer_id.clone(),
                    order_id: order.order_id.clone(),
                    text,
                });
                Done::Now
            }
        }
    }

    /// Every order's final state.
    pub fn finals(&self) -> HashMap<String, FinalState> {
        lock(&self.state).finals.clone()
    }

    /// Every notification sent, in order.
    pub fn notifications(&self) -> Vec<Notification> {
        lock(&self.state).notifications.clone()
    }

    /// Final states that contradicted an earlier one (none, unless a handler is wrong).
    pub fn conflicts(&self) -> Vec<String> {
        lock(&self.state).conflicts.clone()
    }
}
