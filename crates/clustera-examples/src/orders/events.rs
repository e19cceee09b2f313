//! The flow's events, as JSON: what the storefront submits, and what the kernels emit.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::stores::Catalog;

/// What the storefront submits on `orders.requests`. Untrusted: [`OrderRequest::validate`]
/// turns it into an [`Order`] or says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// Chosen by the storefront; submitting the same id again is a retry of the same order.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// What was ordered.
    pub lines: Vec<RequestLine>,
}

/// One line of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLine {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u32,
}

/// The most units of one product on one line.
pub const MAX_QUANTITY: u32 = 100;

/// Why a request is not a valid order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrder {
    /// An id is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// No lines.
    #[error("an order needs at least one line")]
    NoLines,
    /// A quantity out of range.
    #[error("line {line}: quantity {quantity} is not between 1 and {MAX_QUANTITY}")]
    Quantity {
        /// The line, counting from 1.
        line: usize,
        /// The quantity asked for.
        quantity: u32,
    },
    /// A product not in the catalog.
    #[error("line {line}: sku {sku:?} is not in the catalog")]
    UnknownSku {
        /// The line, counting from 1.
        line: usize,
        /// The product asked for.
        sku: String,
    },
}

impl OrderRequest {
    /// Checks the request against the catalog and prices it.
    pub fn validate(&self, catalog: &Catalog) -> Result<Order, InvalidOrder> {
        if self.order_id.trim().is_empty() {
            return Err(InvalidOrder::Empty("order_id"));
        }
        if self.customer_id.trim().is_empty() {
            return Err(InvalidOrder::Empty("customer_id"));
        }
        if self.lines.is_empty() {
            return Err(InvalidOrder::NoLines);
        }
        let mut lines = Vec::with_capacity(self.lines.len());
        for (i, l) in self.lines.iter().enumerate() {
            if l.quantity == 0 || l.quantity > MAX_QUANTITY {
                return Err(InvalidOrder::Quantity {
                    line: i + 1,
                    quantity: l.quantity,
                });
            }
            let unit_price_cents =
                catalog
                    .price_cents(&l.sku)
                    .ok_or_else(|| InvalidOrder::UnknownSku {
                        line: i + 1,
                        sku: l.sku.clone(),
                    })?;
            lines.push(Line {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price_cents,
            });
        }
        let total_cents = lines
            .iter()
            .map(|l| u64::from(l.quantity) * l.unit_price_cents)
            .sum();
        Ok(Order {
            order_id: self.order_id.clone(),
            customer_id: self.customer_id.clone(),
            lines,
            total_cents,
        })
    }
}

/// A valid, priced order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its id (the key of every record about it).
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// What was ordered, at catalog prices.
    pub lines: Vec<Line>,
    /// The sum of the lines.
    pub total_cents: u64,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The catalog price of one.
    pub unit_price_cents: u64,
}

/// What the kernels emit, tagged by `type`: `{"type": "OrderPlaced", "order": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// The order is valid (`orders.placed`).
    OrderPlaced {
        /// The order.
        order: Order,
    },
    /// Its stock is held (`orders.inventory`).
    StockReserved {
        /// The order.
        order: Order,
    },
    /// A product is not available: a final state (`orders.inventory`).
    OutOfStock {
        /// The order.
        order: Order,
        /// The first product that is short.
        sku: String,
    },
    /// The customer was charged (`orders.payments`).
    PaymentCaptured {
        /// The order.
        order: Order,
        /// The gateway's id of the charge.
        payment_id: String,
    },
    /// The charge was refused: a final state (`orders.payments`).
    PaymentDeclined {
        /// The order.
        order: Order,
        /// Why.
        reason: String,
    },
    /// On its way: a final state (`orders.shipments`).
    OrderShipped {
        /// The order.
        order: Order,
        /// The carrier's tracking number.
        tracking: String,
    },
}

impl OrderEvent {
    /// The order the event is about.
    pub fn order(&self) -> &Order {
        match self {
            OrderEvent::OrderPlaced { order }
            | OrderEvent::StockReserved { order }
            | OrderEvent::OutOfStock { order, .. }
            | OrderEvent::PaymentCaptured { order, .. }
            | OrderEvent::PaymentDeclined { order, .. }
            | OrderEvent::OrderShipped { order, .. } => order,
        }
    }

    /// The event's type name, as in its `type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced { .. } => "OrderPlaced",
            OrderEvent::StockReserved { .. } => "StockReserved",
            OrderEvent::OutOfStock { .. } => "OutOfStock",
            OrderEvent::PaymentCaptured { .. } => "PaymentCaptured",
            OrderEvent::PaymentDeclined { .. } => "PaymentDeclined",
            OrderEvent::OrderShipped { .. } => "OrderShipped",
        }
    }
}

/// Where an order ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FinalState {
    /// Shipped.
    Shipped,
    /// Rejected: a product was out of stock.
    OutOfStock,
    /// Rejected: the payment was declined.
    PaymentDeclined,
}

impl fmt::Display for FinalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FinalState::Shipped => "shipped",
            FinalState::OutOfStock => "out of stock",
            FinalState::PaymentDeclined => "payment declined",
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(lines: &[(&str, u32)]) -> OrderRequest {
        OrderRequest {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| RequestLine {
                    sku: (*sku).into(),
                    quantity: *quantity,
                })
                .collect(),
        }
    }

    #[test]
    fn validation_prices_and_names_what_is_wrong() {
        let catalog = Catalog::demo();
        let order = request(&[("keyboard", 2), ("cable", 1)])
            .validate(&catalog)
            .unwrap();
        assert_eq!(order.total_cents, 2 * 4_900 + 900);
        assert_eq!(request(&[]).validate(&catalog), Err(InvalidOrder::NoLines));
        assert_eq!(
            request(&[("cable", 1), ("keyboard", 0)])
                .validate(&catalog)
                .unwrap_err()
                .to_string(),
            "line 2: quantity 0 is not between 1 and 100"
        );
        assert_eq!(
            request(&[("flux-capacitor", 1)])
                .validate(&catalog)
                .unwrap_err()
                .to_string(),
            "line 1: sku \"flux-capacitor\" is not in the catalog"
        );
    }

    #[test]
    fn events_are_tagged_json() {
        let order = request(&[("mouse", 1)]).validate(&Catalog::demo()).unwrap();
        let event = OrderEvent::OutOfStock {
            order,
            sku: "mouse".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "OutOfStock");
        assert_eq!(json["order"]["order_id"], "o-1");
        let back: OrderEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
