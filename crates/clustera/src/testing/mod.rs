//! Testing kernels: in memory with [`TestDriver`], and against real Kafka protocol peers with
//! the broker fixtures ([`MockBroker`], [`Tansu`]) and the blocking helpers in [`kafka`].

mod deployed;
mod driver;
pub mod kafka;
mod memory;
mod mock;
mod tansu;

pub use deployed::{
    assert_deployed_metrics_exported, deployed_queries, exposed_families, queried_families,
    QuerySource,
};
pub use driver::{DeferredRun, TestDriver, TestRun};
pub use memory::{process_memory, ProcessMemory};
pub use mock::MockBroker;
pub use tansu::Tansu;

/// The configuration a kernel named `test`, consuming `test-input` by default, reads from
/// exactly these variables (no process environment, no `.env`).
pub fn config_from_pairs(pairs: &[(&str, &str)]) -> Result<crate::Config, crate::ConfigError> {
    let vars = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    crate::Config::from_vars("test", &["test-input".to_owned()], &vars)
}
