//! What a Python kernel states during a call: output records and partial dead letters,
//! collected here and handed to the runtime's `Context` when the call returns, so they are
//! sent only on `Ack` and the input commits only once the broker acknowledged them.
//!
//! Two faces over one [`Sink`]: [`Producer`] (kafka-python's `send`, confluent-kafka's
//! `produce`) for seed-style `process_message(message, producer)`, and [`KernelContext`]
//! (`ctx.send`, `ctx.dead_letter`) for `clustera.Kernel`. A sink closes when its call returns:
//! a record sent later (from a thread the kernel started, say) is refused loudly rather than lost.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clustera::{Header, Record};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};

/// The effects of one call.
#[derive(Debug, Default)]
pub struct Effects {
    /// Output records, in the order sent.
    pub outputs: Vec<Record>,
    /// Reasons of partial dead letters (`ctx.dead_letter`).
    pub dead_letters: Vec<String>,
}

/// Shared by the producer or context of one call; `None` once the call returned.
#[derive(Debug, Clone)]
pub struct Sink(Arc<Mutex<Option<Effects>>>);

impl Default for Sink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink {
    /// An open sink.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Some(Effects::default()))))
    }

    /// Closes the sink and returns what was collected.
    pub fn close(&self) -> Effects {
        self.0
            .lock()
            .map(|mut e| e.take().unwrap_or_default())
            .unwrap_or_default()
    }

    fn with(&self, f: impl FnOnce(&mut Effects)) -> PyResult<()> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| PyRuntimeError::new_err("effects lock poisoned"))?;
        match guard.as_mut() {
            Some(effects) => {
                f(effects);
                Ok(())
            }
            None => Err(PyRuntimeError::new_err(
                "this producer belongs to a call that has returned: records must be sent \
                 before process_message returns (they are sent with its outcome)",
            )),
        }
    }
}

/// Bytes from what Python code passes for a value or key: bytes, bytearray, memoryview-free
/// str (UTF-8) or None.
fn payload(what: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Bytes>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_none() {
        Ok(None)
    } else if let Ok(b) = v.cast::<PyBytes>() {
        Ok(Some(Bytes::copy_from_slice(b.as_bytes())))
    } else if let Ok(b) = v.cast::<PyByteArray>() {
        Ok(Some(Bytes::from(b.to_vec())))
    } else if let Ok(s) = v.cast::<PyString>() {
        Ok(Some(Bytes::copy_from_slice(s.to_cow()?.as_bytes())))
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be bytes, bytearray, str or None, not {}",
            v.get_type().name()?
        )))
    }
}

/// Headers as kafka-python (`[(name, bytes)]`) or confluent-kafka (that, or a dict) take them.
fn headers(v: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Header>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    if v.is_none() {
        return Ok(Vec::new());
    }
    let pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = if let Ok(d) = v.cast::<PyDict>() {
        d.iter().collect()
    } else {
        let mut pairs = Vec::new();
        for item in v.try_iter()? {
            let item = item?;
            let pair: (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| {
                PyTypeError::new_err("headers must be a dict or a list of (name, value) pairs")
            })?;
            pairs.push(pair);
        }
        pairs
    };
    pairs
        .into_iter()
        .map(|(name, value)| {
            let name: String = name
                .extract()
                .map_err(|_| PyTypeError::new_err("a header name must be a str"))?;
            Ok(Header {
                value: payload(&format!("header {name:?}"), Some(&value))?,
                name,
            })
        })
        .collect()
}

fn record(
    topic: &Bound<'_, PyAny>,
    value: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    hdrs: Option<&Bound<'_, PyAny>>,
    partition: Option<i32>,
) -> PyResult<Record> {
    let topic: String = topic.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "topic must be a str, not {}",
            topic
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    if topic.is_empty() {
        return Err(PyValueError::new_err("topic must not be empty"));
    }
    let partition = match partition {
        None | Some(-1) => None,
        Some(p) if p >= 0 => Some(p),
        Some(p) => return Err(PyValueError::new_err(format!("partition {p} is negative"))),
    };
    Ok(Record {
        topic,
        key: payload("key", key)?,
        value: payload("value", value)?,
        headers: headers(hdrs)?,
        partition,
    })
}

/// The `producer` of a seed-style `process_message(message, producer)`.
#[pyclass(frozen, module = "clustera", name = "Producer")]
pub struct Producer {
    sink: Sink,
}

impl Producer {
    /// A producer collecting into `sink`.
    pub fn new(sink: Sink) -> Self {
        Self { sink }
    }
}

#[pymethods]
impl Producer {
    /// kafka-python's `send`: the record is produced if the call returns True, and the input
    /// commits only after the broker acknowledged it.
    #[pyo3(signature = (topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None))]
    fn send(
        &self,
        topic: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<i32>,
        timestamp_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<SendFuture> {
        if timestamp_ms.is_some_and(|t| !t.is_none()) {
            return Err(PyTypeError::new_err(
                "send(timestamp_ms=...) is not supported: outputs take the time they are produced",
            ));
        }
        let r = record(topic, value, key, headers, partition)?;
        self.sink.with(|e| e.outputs.push(r))?;
        Ok(SendFuture)
    }

    /// confluent-kafka's `produce` (delivery callbacks are not taken: the runtime waits for
    /// the acknowledgement before it commits the input).
    #[pyo3(signature = (topic, value=None, key=None, partition=-1, on_delivery=None, timestamp=0, headers=None, callback=None))]
    #[allow(clippy::too_many_arguments)]
    fn produce(
        &self,
        topic: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        partition: i32,
        on_delivery: Option<&Bound<'_, PyAny>>,
        timestamp: i64,
        headers: Option<&Bound<'_, PyAny>>,
        callback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if on_delivery.or(callback).is_some_and(|c| !c.is_none()) {
            return Err(PyTypeError::new_err(
                "produce(on_delivery=...) is not supported: records are sent when the call \
                 returns True, and the input commits only once the broker acknowledged them",
            ));
        }
        if timestamp != 0 {
            return Err(PyTypeError::new_err(
                "produce(timestamp=...) is not supported: outputs take the time they are produced",
            ));
        }
        let r = record(topic, value, key, headers, Some(partition))?;
        self.sink.with(|e| e.outputs.push(r))
    }

    /// Nothing to do: records are flushed by the runtime before the input commits. Returns 0
    /// (confluent-kafka's count of records still queued).
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, timeout: Option<&Bound<'_, PyAny>>) -> usize {
        let _ = timeout;
        0
    }

    /// confluent-kafka's `poll`: nothing to serve, returns 0.
    #[pyo3(signature = (timeout=None))]
    fn poll(&self, timeout: Option<&Bound<'_, PyAny>>) -> usize {
        let _ = timeout;
        0
    }
}

/// What `Producer.send` returns in place of kafka-python's future. The record is sent with the
/// call's outcome, after `process_message` returned, so there is no metadata to wait for:
/// `get()` returns None at once. Delivery is the runtime's job (acknowledged before commit).
#[pyclass(frozen, module = "clustera", name = "SendFuture")]
pub struct SendFuture;

#[pymethods]
impl SendFuture {
    /// Returns None at once (see the class docs).
    #[pyo3(signature = (timeout=None))]
    fn get(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> Py<PyAny> {
        let _ = timeout;
        py.None()
    }

    /// True: the record is accepted (it is sent with the outcome).
    #[getter]
    fn is_done(&self) -> bool {
        true
    }
}

/// The `ctx` of `clustera.Kernel.process(self, msg, ctx)`.
#[pyclass(frozen, module = "clustera", name = "Context")]
pub struct KernelContext {
    sink: Sink,
    attempt: u32,
    last_attempt: bool,
}

impl KernelContext {
    /// A context for one attempt.
    pub fn new(sink: Sink, attempt: u32, last_attempt: bool) -> Self {
        Self {
            sink,
            attempt,
            last_attempt,
        }
    }
}

#[pymethods]
impl KernelContext {
    /// Queues an output record: produced only on Ack, acknowledged before the input commits.
    #[pyo3(signature = (topic, value=None, key=None, headers=None, partition=None))]
    fn send(
        &self,
        topic: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<i32>,
    ) -> PyResult<()> {
        let r = record(topic, value, key, headers, partition)?;
        self.sink.with(|e| e.outputs.push(r))
    }

    /// Serializes `obj` as JSON and queues it with `content-type: application/json`.
    #[pyo3(signature = (topic, obj, key=None, headers=None, partition=None))]
    fn send_json(
        &self,
        py: Python<'_>,
        topic: &Bound<'_, PyAny>,
        obj: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<i32>,
    ) -> PyResult<()> {
        let text = py.import("json")?.getattr("dumps")?.call1((obj,))?;
        let mut r = record(topic, Some(&text), key, headers, partition)?;
        r.headers.push(Header {
            name: "content-type".into(),
            value: Some(Bytes::from_static(b"application/json")),
        });
        self.sink.with(|e| e.outputs.push(r))
    }

    /// Dead-letters this message for part of its effects while the rest goes ahead (sent on
    /// Ack, to the runtime's dead-letter topic with the usual provenance headers).
    fn dead_letter(&self, reason: String) -> PyResult<()> {
        self.sink.with(|e| e.dead_letters.push(reason))
    }

    /// Which attempt this is, from 1.
    #[getter]
    fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether a failure now would be final (`CLUSTERA_MAX_ATTEMPTS`).
    #[getter]
    fn is_last_attempt(&self) -> bool {
        self.last_attempt
    }
}
