//! Transform kernel: every input becomes one output on `OUTPUT_TOPIC` with the same key and a
//! JSON value holding the original.
//!
//! Environment: `KAFKA_TOPIC` (default `template-input`), `OUTPUT_TOPIC` (default
//! `template-output`), `TRANSFORM_DELAY_MS` (simulated work per message, default 0), and the
//! runtime's `KAFKA_*`/`CLUSTERA_*` variables.
//!
//! `cargo run --release -p clustera --example transform`

use std::process::ExitCode;
use std::time::Duration;

use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};
use serde_json::{json, Value};

struct Transform {
    output_topic: String,
    delay: Duration,
}

impl Kernel for Transform {
    fn name(&self) -> &str {
        "transform"
    }

    fn default_topics(&self) -> Vec<String> {
        vec!["template-input".into()]
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        // JSON stays JSON; other text is carried as a string; binary cannot be held in JSON.
        let original = match msg.value() {
            None => Value::Null,
            Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => v,
                Err(_) => Value::String(msg.text()?.to_owned()),
            },
        };
        let output = json!({
            "original": original,
            "kernel": ctx.kernel(),
            "source": { "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset() },
            "processed_at_ms": now_ms(),
        });
        let record = Record::to(&self.output_topic)
            .maybe_key(msg.key_bytes())
            .json(&output)
            .map_err(KernelError::permanent)?;
        ctx.send(record);
        Ok(Outcome::Ack)
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    if let Err(e) = clustera::config::load_dotenv() {
        eprintln!("transform: configuration error: {e}");
        return ExitCode::from(clustera::EXIT_CONFIG);
    }
    let output_topic = std::env::var("OUTPUT_TOPIC").unwrap_or_else(|_| "template-output".into());
    let delay = match std::env::var("TRANSFORM_DELAY_MS").map(|v| v.parse::<u64>()) {
        Err(_) => Duration::ZERO,
        Ok(Ok(ms)) => Duration::from_millis(ms),
        Ok(Err(e)) => {
            eprintln!(
                "transform: configuration error: TRANSFORM_DELAY_MS: not a whole number ({e})"
            );
            return ExitCode::from(clustera::EXIT_CONFIG);
        }
    };
    clustera::run(Transform {
        output_topic,
        delay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clustera::testing::TestDriver;

    fn driver() -> TestDriver<Transform> {
        TestDriver::new(Transform {
            output_topic: "out".into(),
            delay: Duration::ZERO,
        })
    }

    #[tokio::test]
    async fn keeps_key_and_wraps_json() {
        let run = driver().process_value(Some(b"k1"), br#"{"a":1}"#).await;
        assert_eq!(run.outcome, Outcome::Ack);
        assert_eq!(run.outputs.len(), 1);
        let out = &run.outputs[0];
        assert_eq!(out.topic, "out");
        assert_eq!(out.key.as_deref(), Some(&b"k1"[..]));
        let v: Value = serde_json::from_slice(out.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["original"], json!({"a": 1}));
    }

    #[tokio::test]
    async fn text_is_carried_and_binary_is_a_poison_pill() {
        let run = driver().process_value(None, b"plain words").await;
        let v: Value = serde_json::from_slice(run.outputs[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(v["original"], json!("plain words"));
        let run = driver().process_value(None, &[0xff, 0xfe]).await;
        assert!(
            matches!(run.outcome, Outcome::DeadLetter(ref r) if r.contains("UTF-8")),
            "{:?}",
            run.outcome
        );
        assert!(run.outputs.is_empty());
    }
}
