//! Example 4: an order-processing system of five Clustera kernels, run end to end by
//! `clustera demo orders`.
//!
//! ```text
//! orders.requests ─▶ orders ─▶ orders.placed ─▶ inventory ─▶ orders.inventory ─▶ payment ─▶ orders.payments
//!                      │                          ▲   (StockReserved / OutOfStock)          (Captured / Declined)
//!                      ▼                          └──── releases stock on PaymentDeclined ◀──────────┤
//!                 orders.dlq                                                                         ▼
//!          (poison requests)   notification ◀── OutOfStock, PaymentDeclined, OrderShipped ◀── shipping ─▶ orders.shipments
//! ```
//!
//! - [`kernels::Intake`] (`orders`) validates what the storefront submits; a request that is
//!   not JSON or not a valid order is a poison pill, dead-lettered to `orders.dlq` with the
//!   reason. A request submitted twice (a client that retried) places the order once.
//! - [`kernels::Inventory`] reserves stock, or answers `OutOfStock`; it releases the
//!   reservation when the payment is declined (a compensation).
//! - [`kernels::Payment`] charges through a gateway that sometimes answers 503: a transient
//!   error, retried by the runtime with backoff; a charge over the customer's limit is
//!   declined.
//! - [`kernels::Shipping`] books a shipment for every captured payment.
//! - [`kernels::Notification`] writes the read side ([`stores::OrderBook`]): one final state
//!   per order, and one notification to the customer.
//!
//! Every record is keyed by order id, so one order's events stay in order within each topic.
//! Delivery is at least once: a kernel that crashed before its commit, or a replay, delivers
//! messages again. Every handler is therefore idempotent: its store remembers what it did per
//! order id and answers a redelivery with the same result, sending it on again (a
//! redelivered input may mean the first output was lost), and the stores downstream absorb
//! the repeat. The stores are in memory here and stand in for each service's database.

pub mod events;
pub mod generator;
pub mod kernels;
pub mod stores;

/// The topics of the flow.
pub mod topics {
    /// What the storefront submits: [`super::events::OrderRequest`], possibly malformed.
    pub const REQUESTS: &str = "orders.requests";
    /// `OrderPlaced`.
    pub const PLACED: &str = "orders.placed";
    /// `StockReserved` and `OutOfStock`.
    pub const INVENTORY: &str = "orders.inventory";
    /// `PaymentCaptured` and `PaymentDeclined`.
    pub const PAYMENTS: &str = "orders.payments";
    /// `OrderShipped`.
    pub const SHIPMENTS: &str = "orders.shipments";
    /// The one dead-letter topic of every kernel of the flow (`CLUSTERA_DLQ_TOPIC`).
    pub const DEAD_LETTERS: &str = "orders.dlq";
    /// Every topic the kernels produce to or consume, dead letters included.
    pub const ALL: [&str; 6] = [
        REQUESTS,
        PLACED,
        INVENTORY,
        PAYMENTS,
        SHIPMENTS,
        DEAD_LETTERS,
    ];
}
