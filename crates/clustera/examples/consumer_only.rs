//! Consumer-only kernel: reads JSON events, keeps running counts per `type`, produces nothing.
//! Invalid JSON is a poison pill and goes to the dead-letter topic.
//!
//! Environment: `KAFKA_TOPIC` (default `template-input`) and the runtime's variables.
//!
//! `cargo run --release -p clustera --example consumer_only`

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;

use clustera::{Context, Kernel, KernelError, Message, Outcome};
use serde::Deserialize;

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Default)]
struct CountByType {
    counts: Mutex<HashMap<String, u64>>,
}

impl Kernel for CountByType {
    fn name(&self) -> &str {
        "consumer-only"
    }

    fn default_topics(&self) -> Vec<String> {
        vec!["template-input".into()]
    }

    async fn process(&self, msg: &Message, _ctx: &mut Context) -> Result<Outcome, KernelError> {
        let event: Event = msg.json()?;
        let kind = event.kind.unwrap_or_else(|| "untyped".into());
        let total = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let c = counts.entry(kind.clone()).or_default();
            *c += 1;
            *c
        };
        if total % 1000 == 0 {
            tracing::info!(%kind, total, "events counted");
        }
        Ok(Outcome::Ack)
    }
}

fn main() -> ExitCode {
    clustera::run(CountByType::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clustera::testing::TestDriver;

    #[tokio::test]
    async fn counts_and_rejects_bad_json() {
        let mut d = TestDriver::new(CountByType::default());
        assert_eq!(
            d.process_value(None, br#"{"type":"a"}"#).await.outcome,
            Outcome::Ack
        );
        assert_eq!(
            d.process_value(None, br#"{"type":"a"}"#).await.outcome,
            Outcome::Ack
        );
        assert_eq!(d.kernel().counts.lock().unwrap()["a"], 2);
        let bad = d.process_value(None, b"{oops").await;
        assert!(matches!(bad.outcome, Outcome::DeadLetter(_)));
        assert!(bad.outputs.is_empty());
    }
}
