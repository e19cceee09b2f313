//! `clustera produce`: one message per input line.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::testing::kafka;
use indicatif::{ProgressBar, ProgressStyle};

use crate::connect::{connect, require_topic, BrokerArgs};

/// Arguments of `clustera produce`.
#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    brokers: BrokerArgs,
    /// Topic to produce to.
    #[arg(long)]
    topic: String,
    /// Split each line at the first SEP into key and value (lines without it have no key).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every message, as NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Input file; `-` or nothing reads standard input.
    file: Option<PathBuf>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// Produces every line and waits for every acknowledgement.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let config = connect(&args.brokers)?;
    require_topic(&config, &args.topic)?;
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
    let mut error = None;
    let lines = BufReader::new(input).lines();
    let records = lines.map_while(|line| match line {
        Ok(line) => {
            bar.inc(line.len() as u64 + 1);
            let (key, value) = match args.key_separator.as_deref() {
                Some(sep) => match line.split_once(sep) {
                    Some((k, v)) => (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec()),
                    None => (None, line.into_bytes()),
                },
                None => (None, line.into_bytes()),
            };
            Some((key, value, args.headers.clone()))
        }
        Err(e) => {
            error = Some(e);
            None
        }
    });
    let sent = kafka::produce(&config, &args.topic, records)
        .with_context(|| format!("producing to {}", args.topic))?;
    bar.finish_and_clear();
    if let Some(e) = error {
        bail!("reading input stopped after {sent} lines: {e}");
    }
    eprintln!("produced {sent} messages to {}", args.topic);
    Ok(())
}
