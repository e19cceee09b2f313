//! The five kernels. Each decides; the runtime acts: it sends their records, retries their
//! transient errors, dead-letters what they refuse, and commits only what is done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};

use super::events::{FinalState, OrderEvent, OrderRequest};
use super::stores::{
    Carrier, Catalog, Charge, Done, Gateway, OrderBook, PlacedOrders, Placement, Reservation,
    Warehouse,
};
use super::topics;

/// Every service's state, shared by the kernels of one process.
#[derive(Debug)]
pub struct Services {
    /// Products and prices.
    pub catalog: Catalog,
    /// The orders service's placed orders.
    pub placed: PlacedOrders,
    /// Stock and reservations.
    pub warehouse: Warehouse,
    /// Charges.
    pub gateway: Gateway,
    /// Shipments.
    pub carrier: Carrier,
    /// The read side.
    pub book: OrderBook,
    /// What each handler counted.
    pub counters: Counters,
}

impl Services {
    /// Fresh services over `catalog`, with the gateway's card limits.
    pub fn new(catalog: Catalog, limits: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            warehouse: Warehouse::new(&catalog),
            catalog,
            placed: PlacedOrders::default(),
            gateway: Gateway::new(limits),
            carrier: Carrier::default(),
            book: OrderBook::default(),
            counters: Counters::default(),
        }
    }
}

/// What each kernel's handler counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// `orders`: a request placed before (a storefront retry, or a redelivery).
    pub orders: HandlerCounters,
    /// `inventory`: a reservation or release made before.
    pub inventory: HandlerCounters,
    /// `payment`: a charge made before.
    pub payment: HandlerCounters,
    /// `shipping`: a shipment booked before.
    pub shipping: HandlerCounters,
    /// `notification`: a final state recorded before.
    pub notification: HandlerCounters,
}

/// One handler's counts of the messages it acknowledged without doing anything.
#[derive(Debug, Default)]
pub struct HandlerCounters {
    /// Work done before: a redelivery or a resubmission, absorbed.
    pub repeats: AtomicU64,
    /// Events on its topics that are not for it (another kernel's business).
    pub ignored: AtomicU64,
}

impl HandlerCounters {
    fn done(&self, done: Done) {
        if done == Done::Before {
            self.repeats.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Acknowledges an event that is not for this kernel. Not a skip: a skip is logged as
    /// a warning, and a topic shared by several kernels is not worth one line per event.
    fn ignore(&self) -> Result<Outcome, KernelError> {
        self.ignored.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::Ack)
    }
}

/// Sends `event` keyed by its order id.
fn emit(ctx: &mut Context, topic: &str, event: &OrderEvent) -> Result<(), KernelError> {
    let record = Record::to(topic)
        .key(event.order().order_id.clone())
        .json(event)
        .map_err(KernelError::permanent)?;
    ctx.send(record);
    Ok(())
}

/// `orders`: validates requests and places orders.
pub struct Intake(pub Arc<Services>);

impl Kernel for Intake {
    fn name(&self) -> &str {
        "orders"
    }

    fn default_topics(&self) -> Vec<String> {
        vec![topics::REQUESTS.into()]
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        // Not JSON, or not shaped like a request: a poison pill (permanent, dead-lettered
        // with serde's line and column).
        let request: OrderRequest = msg.json()?;
        let order = match request.validate(&self.0.catalog) {
            Ok(order) => order,
            Err(invalid) => return Ok(Outcome::dead_letter(format!("invalid order: {invalid}"))),
        };
        match self.0.placed.place(order) {
            Placement::Placed(order, done) => {
                self.0.counters.orders.done(done);
                emit(ctx, topics::PLACED, &OrderEvent::OrderPlaced { order })?;
                Ok(Outcome::Ack)
            }
            Placement::Conflict => Ok(Outcome::dead_letter(format!(
                "order id {} was already used for another order",
                request.order_id
            ))),
        }
    }
}

/// `inventory`: reserves stock for placed orders; releases it when payment is declined.
pub struct Inventory(pub Arc<Services>);

impl Kernel for Inventory {
    fn name(&self) -> &str {
        "inventory"
    }

    fn default_topics(&self) -> Vec<String> {
        vec![topics::PLACED.into(), topics::PAYMENTS.into()]
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        match msg.json::<OrderEvent>()? {
            OrderEvent::OrderPlaced { order } => {
                let (reservation, done) = self.0.warehouse.reserve(&order);
                self.0.counters.inventory.done(done);
                let event = match reservation {
                    Reservation::Held | Reservation::Released => {
                        OrderEvent::StockReserved { order }
                    }
                    Reservation::Short(sku) => OrderEvent::OutOfStock { order, sku },
                };
                emit(ctx, topics::INVENTORY, &event)?;
                Ok(Outcome::Ack)
            }
            OrderEvent::PaymentDeclined { order, .. } => {
                let done = self.0.warehouse.release(&order);
                self.0.counters.inventory.done(done);
                Ok(Outcome::Ack)
            }
            _ => self.0.counters.inventory.ignore(),
        }
    }
}

/// `payment`: charges orders whose stock is held.
pub struct Payment(pub Arc<Services>);

impl Kernel for Payment {
    fn name(&self) -> &str {
        "payment"
    }

    fn default_topics(&self) -> Vec<String> {
        vec![topics::INVENTORY.into()]
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let OrderEvent::StockReserved { order } = msg.json::<OrderEvent>()? else {
            return self.0.counters.payment.ignore();
        };
        // A 503 may pass: transient, so the runtime retries this message with backoff
        // (nothing later in the partition overtakes it) and dead-letters it only after
        // CLUSTERA_MAX_ATTEMPTS.
        let (charge, done) = self
            .0
            .gateway
            .charge(&order)
            .map_err(KernelError::transient)?;
        self.0.counters.payment.done(done);
        let event = match charge {
            Charge::Captured(payment_id) => OrderEvent::PaymentCaptured { order, payment_id },
            Charge::Declined(reason) => OrderEvent::PaymentDeclined { order, reason },
        };
        emit(ctx, topics::PAYMENTS, &event)?;
        Ok(Outcome::Ack)
    }
}

/// `shipping`: books a shipment for every captured payment.
pub struct Shipping(pub Arc<Services>);

impl Kernel for Shipping {
    fn name(&self) -> &str {
        "shipping"
    }

    fn default_topics(&self) -> Vec<String> {
        vec![topics::PAYMENTS.into()]
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let OrderEvent::PaymentCaptured { order, .. } = msg.json::<OrderEvent>()? else {
            return self.0.counters.shipping.ignore();
        };
        let (tracking, done) = self.0.carrier.ship(&order);
        self.0.counters.shipping.done(done);
        emit(
            ctx,
            topics::SHIPMENTS,
            &OrderEvent::OrderShipped { order, tracking },
        )?;
        Ok(Outcome::Ack)
    }
}

/// `notification`: records each order's final state and tells the customer, once.
pub struct Notification(pub Arc<Services>);

impl Kernel for Notification {
    fn name(&self) -> &str {
        "notification"
    }

    fn default_topics(&self) -> Vec<String> {
        vec![
            topics::INVENTORY.into(),
            topics::PAYMENTS.into(),
            topics::SHIPMENTS.into(),
        ]
    }

    async fn process(&self, msg: &Message, _ctx: &mut Context) -> Result<Outcome, KernelError> {
        let (order, state, text) = match msg.json::<OrderEvent>()? {
            OrderEvent::OutOfStock { order, sku } => {
                let text = format!("Sorry, {sku} is out of stock; you were not charged.");
                (order, FinalState::OutOfStock, text)
            }
            OrderEvent::PaymentDeclined { order, reason } => {
                let text = format!("Your payment was declined ({reason}).");
                (order, FinalState::PaymentDeclined, text)
            }
            OrderEvent::OrderShipped { order, tracking } => {
                let text = format!("Your order is on its way: {tracking}.");
                (order, FinalState::Shipped, text)
            }
            _ => return self.0.counters.notification.ignore(),
        };
        let done = self.0.book.finish(&order, state, text);
        self.0.counters.notification.done(done);
        Ok(Outcome::Ack)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::orders::events::RequestLine;
    use clustera::testing::TestDriver;

    fn services() -> Arc<Services> {
        Arc::new(Services::new(
            Catalog::demo(),
            [("poor".to_owned(), 1_000u64)],
        ))
    }

    fn request(id: &str, customer: &str, sku: &str) -> Vec<u8> {
        serde_json::to_vec(&OrderRequest {
            order_id: id.into(),
            customer_id: customer.into(),
            lines: vec![RequestLine {
                sku: sku.into(),
                quantity: 2,
            }],
        })
        .unwrap()
    }

    fn event(run: &clustera::testing::TestRun) -> OrderEvent {
        assert_eq!(run.outputs.len(), 1, "{:?}", run.outcome);
        serde_json::from_slice(run.outputs[0].value.as_deref().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn intake_dead_letters_poison_and_places_a_retried_request_once() {
        let s = services();
        let mut intake = TestDriver::new(Intake(s.clone()));
        let run = intake.process_value(None, b"{\"order_id\": ").await;
        assert!(matches!(run.outcome, Outcome::DeadLetter(ref r) if r.contains("JSON")));
        let run = intake
            .process_value(None, &request("o-1", "c", "flux-capacitor"))
            .await;
        assert!(
            matches!(run.outcome, Outcome::DeadLetter(ref r) if r.contains("not in the catalog")),
            "{:?}",
            run.outcome
        );
        let first = event(
            &intake
                .process_value(None, &request("o-2", "c", "mouse"))
                .await,
        );
        let again = event(
            &intake
                .process_value(None, &request("o-2", "c", "mouse"))
                .await,
        );
        assert_eq!(first, again, "a repeat sends the same event on");
        assert_eq!(s.counters.orders.repeats.load(Ordering::Relaxed), 1);
        let run = intake
            .process_value(None, &request("o-2", "c", "cable"))
            .await;
        assert!(matches!(run.outcome, Outcome::DeadLetter(ref r) if r.contains("already used")));
    }

    #[tokio::test]
    async fn a_redelivered_reservation_after_release_holds_nothing_more() {
        let s = services();
        let order = OrderRequest {
            order_id: "o-9".into(),
            customer_id: "poor".into(),
            lines: vec![RequestLine {
                sku: "monitor".into(),
                quantity: 1,
            }],
        }
        .validate(&s.catalog)
        .unwrap();
        let placed = serde_json::to_vec(&OrderEvent::OrderPlaced {
            order: order.clone(),
        })
        .unwrap();
        let mut inventory = TestDriver::new(Inventory(s.clone()));
        let before = s.warehouse.stock()["monitor"];
        let reserved = event(&inventory.process_value(None, &placed).await);
        assert!(matches!(reserved, OrderEvent::StockReserved { .. }));
        assert_eq!(s.warehouse.stock()["monitor"], before - 1);

        let mut payment = TestDriver::new(Payment(s.clone()));
        let reserved = serde_json::to_vec(&reserved).unwrap();
        let mut run = payment.process_value(None, &reserved).await;
        if Gateway::is_flaky("o-9") {
            assert_eq!(run.outcome, Outcome::retry());
            run = payment.process_value(None, &reserved).await;
        }
        let declined = event(&run);
        assert!(matches!(declined, OrderEvent::PaymentDeclined { .. }));
        let declined = serde_json::to_vec(&declined).unwrap();
        for _ in 0..2 {
            let run = inventory.process_value(None, &declined).await;
            assert_eq!(run.outcome, Outcome::Ack);
        }
        assert_eq!(s.warehouse.stock()["monitor"], before, "released once");
        // The order's placement delivered again: same answer, no stock taken.
        let again = event(&inventory.process_value(None, &placed).await);
        assert!(matches!(again, OrderEvent::StockReserved { .. }));
        assert_eq!(s.warehouse.stock()["monitor"], before);
        assert_eq!(s.gateway.charges(), 1);
    }

    #[tokio::test]
    async fn the_gateway_503_is_retried_not_dead_lettered() {
        let s = services();
        // Find an id the gateway fails once.
        let id = (0..100)
            .map(|i| format!("o-{i}"))
            .find(|id| Gateway::is_flaky(id))
            .unwrap();
        let order = OrderRequest {
            order_id: id,
            customer_id: "c".into(),
            lines: vec![RequestLine {
                sku: "cable".into(),
                quantity: 1,
            }],
        }
        .validate(&s.catalog)
        .unwrap();
        let reserved = serde_json::to_vec(&OrderEvent::StockReserved { order }).unwrap();
        let mut payment = TestDriver::new(Payment(s.clone()));
        let run = payment.process_value(None, &reserved).await;
        assert_eq!(run.outcome, Outcome::retry());
        assert!(run.outputs.is_empty());
        let captured = event(&payment.process_value(None, &reserved).await);
        assert!(matches!(captured, OrderEvent::PaymentCaptured { .. }));
    }

    #[tokio::test]
    async fn notification_records_one_final_state_and_one_message() {
        let s = services();
        let order = OrderRequest {
            order_id: "o-5".into(),
            customer_id: "c".into(),
            lines: vec![RequestLine {
                sku: "mouse".into(),
                quantity: 1,
            }],
        }
        .validate(&s.catalog)
        .unwrap();
        let shipped = serde_json::to_vec(&OrderEvent::OrderShipped {
            order,
            tracking: "TRK-1".into(),
        })
        .unwrap();
        let mut notification = TestDriver::new(Notification(s.clone()));
        for _ in 0..3 {
            assert_eq!(
                notification.process_value(None, &shipped).await.outcome,
                Outcome::Ack
            );
        }
        assert_eq!(s.book.notifications().len(), 1);
        assert_eq!(s.book.finals()["o-5"], FinalState::Shipped);
        assert_eq!(s.counters.notification.repeats.load(Ordering::Relaxed), 2);
    }
}
