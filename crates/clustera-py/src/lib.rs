//! # clustera-py: Python kernels on the Clustera runtime
//!
//! The native half of the `clustera` Python package (`clustera._clustera`), built by maturin as
//! an abi3 extension. The Python half (`python/clustera`) loads a kernel (a seed-style
//! `main.py` with `process_message(message, producer)`, or a `clustera.Kernel`) and calls
//! [`run`]; from there the Rust runtime owns every effect, exactly as for a Rust kernel (see
//! [`kernel`] for the thread pool and the GIL, [`outcome`] for what results mean).
//!
//! `unsafe_code` stays forbidden: PyO3's macros and API need no `unsafe` in this crate.

pub mod effects;
pub mod kernel;
pub mod outcome;
pub mod record;

use clustera::infra::env;
use clustera::{Message, Outcome};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use kernel::{PyKernel, Target};
use outcome::Style;

/// Python calls in progress at once, unless `CLUSTERA_PYTHON_THREADS` says otherwise.
pub const DEFAULT_PYTHON_THREADS: usize = 8;

/// Messages of a partition handed to a Python thread at once, under partition ordering,
/// unless `CLUSTERA_BATCH_SIZE` says otherwise (see [`kernel`]).
pub const DEFAULT_PYTHON_BATCH: usize = 64;

/// Key and no ordering process messages one at a time, which the runtime refuses to combine
/// with batches: batch only under partition ordering (the default).
fn default_batch() -> usize {
    match env::env_var("CLUSTERA_ORDERING") {
        Some(o) if !o.eq_ignore_ascii_case("partition") => 1,
        _ => DEFAULT_PYTHON_BATCH,
    }
}

fn style(name: &str) -> PyResult<Style> {
    match name {
        "seed" => Ok(Style::Seed),
        "kernel" => Ok(Style::Kernel),
        other => Err(PyValueError::new_err(format!(
            "unknown kernel style {other:?} (expected \"seed\" or \"kernel\")"
        ))),
    }
}

/// Runs the kernel until SIGINT or SIGTERM and returns the process's exit status (0; 78 for a
/// configuration error, naming the variable; 1 for a fatal error). The interpreter is released
/// meanwhile: kernel calls attach to it from the runtime's threads.
#[pyfunction]
#[pyo3(signature = (process, name, topics, style_name, producer))]
fn run(
    py: Python<'_>,
    process: Py<PyAny>,
    name: String,
    topics: Vec<String>,
    style_name: &str,
    producer: bool,
) -> PyResult<u8> {
    let target = Target {
        name,
        topics,
        callable: process,
        style: style(style_name)?,
        producer,
    };
    let threads = env::load_dotenv()
        .and_then(|()| env::number::<usize>(&|n| std::env::var(n).ok(), "CLUSTERA_PYTHON_THREADS"));
    let threads = match threads {
        Ok(Some(0)) => {
            eprintln!(
                "{}: configuration error: CLUSTERA_PYTHON_THREADS: must be at least 1",
                target.name
            );
            return Ok(clustera::EXIT_CONFIG);
        }
        Ok(n) => n.unwrap_or(DEFAULT_PYTHON_THREADS),
        Err(e) => {
            eprintln!("{}: configuration error: {e}", target.name);
            return Ok(clustera::EXIT_CONFIG);
        }
    };
    let kernel = PyKernel::new(target, threads, default_batch());
    let calls = kernel.running_calls();
    let status = py.detach(move || clustera::run_to_status(kernel));
    let stuck = calls.load(std::sync::atomic::Ordering::SeqCst);
    if stuck > 0 {
        // A call outlived the drain timeout (its message is delivered again to the next
        // owner). Returning to Python would finalize the interpreter under that thread, so
        // the process ends here, with the runtime's status.
        eprintln!(
            "clustera: {stuck} Python call(s) still running after the drain timeout; exiting \
             without waiting for them"
        );
        std::process::exit(i32::from(status));
    }
    Ok(status)
}

/// One call of the kernel, through the runtime's own path, for `clustera.testing.TestDriver`.
/// Returns `(outcome, reason, retry_after, error_kind, error, outputs, dead_letters)`, where
/// each output is `(topic, key, value, headers, partition)`.
#[pyfunction]
#[pyo3(signature = (process, style_name, producer, name, topic, partition, offset, key, value, headers, timestamp, attempt, last_attempt))]
#[allow(clippy::too_many_arguments)]
fn invoke<'py>(
    py: Python<'py>,
    process: Py<PyAny>,
    style_name: &str,
    producer: bool,
    name: String,
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: Option<i64>,
    attempt: u32,
    last_attempt: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    if attempt == 0 {
        return Err(PyValueError::new_err("attempt counts from 1"));
    }
    let target = Target {
        name,
        topics: vec![topic.clone()],
        callable: process,
        style: style(style_name)?,
        producer,
    };
    let mut message = Message::new(&topic, partition, offset);
    if let Some(k) = key {
        message = message.with_key(k);
    }
    if let Some(v) = value {
        message = message.with_value(v);
    }
    if let Some(t) = timestamp {
        message = message.with_timestamp_ms(t);
    }
    for (n, v) in headers {
        message = message.with_header(n, v);
    }
    let invocation = kernel::invoke(py, &target, message, attempt, last_attempt);
    let (outcome, error_kind, error) = match invocation.outcome {
        Ok(o) => (o, None, None),
        Err(e) => (
            e.outcome(),
            Some(format!("{:?}", e.kind()).to_lowercase()),
            Some(e.to_string()),
        ),
    };
    let (kind, reason, after) = match outcome {
        Outcome::Ack => ("ack", None, None),
        Outcome::Retry(after) => ("retry", None, after.map(|d| d.as_secs_f64())),
        Outcome::Skip(r) => ("skip", Some(r), None),
        Outcome::DeadLetter(r) => ("dead_letter", Some(r), None),
    };
    let outputs = PyList::empty(py);
    for r in invocation.effects.outputs {
        let hdrs = PyList::empty(py);
        for h in r.headers {
            let v = h.value.map(|v| PyBytes::new(py, &v));
            hdrs.append((h.name, v))?;
        }
        outputs.append((
            r.topic,
            r.key.map(|k| PyBytes::new(py, &k)),
            r.value.map(|v| PyBytes::new(py, &v)),
            hdrs,
            r.partition,
        ))?;
    }
    let dead_letters = PyList::new(py, invocation.effects.dead_letters)?;
    PyTuple::new(
        py,
        [
            kind.into_pyobject(py)?.into_any(),
            reason.into_pyobject(py)?.into_any(),
            after.into_pyobject(py)?.into_any(),
            error_kind.into_pyobject(py)?.into_any(),
            error.into_pyobject(py)?.into_any(),
            outputs.into_any(),
            dead_letters.into_any(),
        ],
    )
}

/// The native module.
#[pymodule]
fn _clustera(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(invoke, m)?)?;
    m.add_class::<record::ConsumerRecord>()?;
    m.add_class::<effects::Producer>()?;
    m.add_class::<effects::SendFuture>()?;
    m.add_class::<effects::KernelContext>()?;
    m.add("DEFAULT_PYTHON_THREADS", DEFAULT_PYTHON_THREADS)?;
    Ok(())
}
