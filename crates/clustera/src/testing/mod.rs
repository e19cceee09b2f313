//! Testing kernels: in memory with [`TestDriver`], and against real Kafka protocol peers with
//! the broker fixtures ([`MockBroker`], [`Tansu`]) and the blocking helpers in [`kafka`].

mod driver;
pub mod kafka;
mod mock;
mod tansu;

pub use driver::{TestDriver, TestRun};
pub use mock::MockBroker;
pub use tansu::Tansu;
