//! Testing kernels: in memory with [`TestDriver`], and against real Kafka protocol peers with
//! the broker fixtures ([`MockBroker`], [`Tansu`]) and the blocking helpers in [`kafka`].

mod driver;
pub mod kafka;
mod memory;
mod mock;
mod tansu;

pub use driver::{DeferredRun, TestDriver, TestRun};
pub use memory::{process_memory, ProcessMemory};
pub use mock::MockBroker;
pub use tansu::Tansu;
