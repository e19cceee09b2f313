//! `clustera produce`: one message per input line, as text or as a JSON object.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde_json::Value;

use crate::connect::{connect, require_topic, BrokerArgs};

/// Input format.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InputFormat {
    /// A line is the value (or KEY SEP VALUE with --key-separator).
    Lines,
    /// A line is a JSON object: key, value (null for a tombstone), headers, partition.
    Jsonl,
}

/// Arguments of `clustera produce`.
#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    brokers: BrokerArgs,
    /// Topic to produce to.
    #[arg(short = 't', long)]
    topic: String,
    /// Input format. jsonl: one object per line, {"key": "k", "value": "v" or null (a
    /// tombstone), "headers": {"name": "v" or ["v1", "v2"] or null}, "partition": 0}; every
    /// field but value may be left out; key_encoding/value_encoding "base64" mark base64 text,
    /// and the topic and offset of `clustera consume --format json` are ignored.
    #[arg(long, value_enum, default_value = "lines")]
    format: InputFormat,
    /// Split each line at the first SEP into key and value (lines without it have no key).
    #[arg(short = 'K', long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every message, as NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Produce to this partition (default: librdkafka's partitioner, by key); a jsonl
    /// record's own "partition" wins.
    #[arg(short = 'p', long, value_name = "N")]
    partition: Option<i32>,
    /// Input file; `-` or nothing reads standard input.
    file: Option<PathBuf>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Outgoing {
    key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    partition: Option<i32>,
    timestamp: Option<i64>,
}

/// Keeps the first delivery failure; librdkafka reports deliveries on the polling thread.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<KafkaError>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if let Ok(mut first) = self.failed.lock() {
                first.get_or_insert_with(|| e.clone());
            }
        }
    }
}

/// Produces every line and waits for every acknowledgement.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    if args.format == InputFormat::Jsonl && args.key_separator.is_some() {
        bail!("--key-separator applies to --format lines; a jsonl record has its own \"key\"");
    }
    let mut config = connect(&args.brokers)?;
    let partitions = require_topic(&config, &args.topic)?;
    let check_partition = |p: i32| {
        if (0..partitions).contains(&p) {
            Ok(())
        } else {
            Err(format!(
                "topic {} has {partitions} partition(s), numbered 0 to {}: there is no partition {p}",
                args.topic,
                partitions - 1
            ))
        }
    };
    if let Some(p) = args.partition {
        check_partition(p).map_err(anyhow::Error::msg)?;
    }
    let (input, size): (Box<dyn Read>, Option<u64>) = match &args.file {
        None => (Box::new(std::io::stdin()), None),
        Some(p) if p.as_os_str() == "-" => (Box::new(std::io::stdin()), None),
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(f), size)
        }
    };
    let bar = match size {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::hidden(),
    };
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;

    let mut sent = 0usize;
    let mut failure = None;
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let number = n + 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                failure = Some(format!("reading input line {number}: {e}"));
                break;
            }
        };
        bar.inc(line.len() as u64 + 1);
        let record = match args.format {
            InputFormat::Lines => Ok(from_line(line, args.key_separator.as_deref())),
            // Blank lines between objects are not records.
            InputFormat::Jsonl if line.trim().is_empty() => continue,
            InputFormat::Jsonl => from_json(&line),
        };
        let mut record = match record {
            Ok(r) => r,
            Err(e) => {
                failure = Some(format!("line {number}: {e}"));
                break;
            }
        };
        record.headers.extend(
            args.headers
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone().into_bytes()))),
        );
        record.partition = record.partition.or(args.partition);
        if let Some(p) = record.partition {
            if let Err(e) = check_partition(p) {
                failure = Some(format!("line {number}: {e}"));
                break;
            }
        }
        send(&producer, &args.topic, &record)
            .with_context(|| format!("producing line {number} to {}", args.topic))?;
        sent += 1;
    }
    // Whatever happened to the input, what was sent is delivered (or its failure reported).
    producer
        .flush(Duration::from_secs(120))
        .with_context(|| format!("waiting for the brokers to acknowledge {sent} records"))?;
    bar.finish_and_clear();
    let failed = producer
        .context()
        .failed
        .lock()
        .map_or(None, |mut f| f.take());
    if let Some(e) = failed {
        return Err(e).with_context(|| format!("producing to {}", args.topic));
    }
    if let Some(problem) = failure {
        bail!(
            "{problem} (the {sent} record(s) before it were produced to {})",
            args.topic
        );
    }
    eprintln!("produced {sent} messages to {}", args.topic);
    Ok(())
}

/// Sends one record, waiting while librdkafka's queue is full.
fn send(producer: &BaseProducer<Deliveries>, topic: &str, r: &Outgoing) -> Result<(), KafkaError> {
    let mut headers = OwnedHeaders::new();
    for (name, value) in &r.headers {
        headers = headers.insert(Header {
            key: name,
            value: value.as_deref(),
        });
    }
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
    if let Some(k) = &r.key {
        record = record.key(k.as_slice());
    }
    if let Some(v) = &r.value {
        record = record.payload(v.as_slice());
    }
    if let Some(p) = r.partition {
        record = record.partition(p);
    }
    if let Some(t) = r.timestamp {
        record = record.timestamp(t);
    }
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
    producer.poll(Duration::ZERO);
    Ok(())
}

/// A text line: the value, or key and value split at the first `separator`.
fn from_line(line: String, separator: Option<&str>) -> Outgoing {
    let (key, value) = match separator.and_then(|sep| line.split_once(sep)) {
        Some((k, v)) => (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec()),
        None => (None, line.into_bytes()),
    };
    Outgoing {
        key,
        value: Some(value),
        ..Outgoing::default()
    }
}

/// A JSON-lines record; every problem names the field.
fn from_json(line: &str) -> Result<Outgoing, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let Value::Object(o) = v else {
        return Err("not a JSON object".to_owned());
    };
    for field in o.keys() {
        if !matches!(
            field.as_str(),
            "key"
                | "value"
                | "headers"
                | "partition"
                | "timestamp"
                | "key_encoding"
                | "value_encoding"
                | "topic"
                | "offset"
        ) {
            return Err(format!(
                "unknown field {field:?} (fields: key, value, headers, partition, timestamp, \
                 key_encoding, value_encoding)"
            ));
        }
    }
    let encoding = |field: &str| -> Result<bool, String> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::String(s)) if s == "base64" => Ok(true),
            Some(Value::String(s)) if s == "utf8" => Ok(false),
            Some(other) => Err(format!("{field} is {other}: only \"base64\" or \"utf8\"")),
        }
    };
    let bytes = |field: &str, base64: bool| -> Result<Option<Vec<u8>>, String> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if base64 => decode(s)
                .map(Some)
                .map_err(|e| format!("{field} is not base64: {e}")),
            Some(Value::String(s)) => Ok(Some(s.clone().into_bytes())),
            Some(other) => Err(format!(
                "{field} is {other}: give a string, or null (JSON values go in as text: \"{{\\\"a\\\":1}}\")"
            )),
        }
    };
    if !o.contains_key("value") {
        return Err("no \"value\" (give null for a tombstone)".to_owned());
    }
    let key = bytes("key", encoding("key_encoding")?)?;
    let value = bytes("value", encoding("value_encoding")?)?;
    let integer = |field: &str| -> Result<Option<i64>, String> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| format!("{field} is {v}: give a whole number, 0 or more")),
        }
    };
    let partition = integer("partition")?
        .map(|p| i32::try_from(p).map_err(|_| format!("partition {p} is too large")))
        .transpose()?;
    let timestamp = integer("timestamp")?;
    let headers = match o.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => {
            let mut out = Vec::new();
            for (name, v) in h {
                match v {
                    Value::Array(values) => {
                        for v in values {
                            out.push((name.clone(), header_value(name, v)?));
                        }
                    }
                    v => out.push((name.clone(), header_value(name, v)?)),
                }
            }
            out
        }
        Some(other) => {
            return Err(format!(
                "headers is {other}: give an object of name → value"
            ))
        }
    };
    Ok(Outgoing {
        key,
        value,
        headers,
        partition,
        timestamp,
    })
}

/// A header's value: text, null, or `{"base64": "…"}` (as `clustera consume` prints bytes that
/// are not UTF-8).
fn header_value(name: &str, v: &Value) -> Result<Option<Vec<u8>>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone().into_bytes())),
        Value::Object(o) if o.len() == 1 => match o.get("base64") {
            Some(Value::String(s)) => decode(s)
                .map(Some)
                .map_err(|e| format!("header {name:?} is not base64: {e}")),
            _ => Err(format!(
                "header {name:?} is {v}: give a string, null, a list of them, or {{\"base64\": \"…\"}}"
            )),
        },
        _ => Err(format!(
            "header {name:?} is {v}: give a string, null, a list of them, or {{\"base64\": \"…\"}}"
        )),
    }
}

fn decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_records_keys_tombstones_headers_and_partitions() {
        let r = from_json(
            r#"{"key":"k","value":null,"headers":{"a":["1",null],"b":{"base64":"/w=="}},"partition":2}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Outgoing {
                key: Some(b"k".to_vec()),
                value: None,
                headers: vec![
                    ("a".into(), Some(b"1".to_vec())),
                    ("a".into(), None),
                    ("b".into(), Some(vec![0xff])),
                ],
                partition: Some(2),
                timestamp: None,
            }
        );
        let r = from_json(
            r#"{"topic":"t","offset":3,"timestamp":5,"key":null,"value":"/wA=","value_encoding":"base64","headers":{}}"#,
        )
        .unwrap();
        assert_eq!(r.value, Some(vec![0xff, 0]));
        assert_eq!(r.timestamp, Some(5));
        assert_eq!(r.key, None);
    }

    #[test]
    fn jsonl_problems_name_the_field() {
        let err = |line: &str| from_json(line).unwrap_err();
        assert_eq!(
            err(r#"{"key":"k"}"#),
            "no \"value\" (give null for a tombstone)"
        );
        assert_eq!(err("[1]"), "not a JSON object");
        assert!(err("{").starts_with("not a JSON object: EOF while parsing"));
        assert!(err(r#"{"value":"v","kye":1}"#).starts_with("unknown field \"kye\""));
        assert!(err(r#"{"value":{"a":1}}"#).starts_with("value is {\"a\":1}: give a string"));
        assert_eq!(
            err(r#"{"value":"v","partition":-1}"#),
            "partition is -1: give a whole number, 0 or more"
        );
        assert!(err(r#"{"value":"v","headers":{"h":1}}"#).starts_with("header \"h\" is 1"));
        assert!(
            err(r#"{"value":"%%","value_encoding":"base64"}"#).starts_with("value is not base64")
        );
    }
}
