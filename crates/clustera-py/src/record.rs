//! The message handed to Python: kafka-python's `ConsumerRecord` attributes over the
//! runtime's [`Message`], plus typed helpers (`json()`, `text()`, `header()`).
//!
//! The record holds the message only until its outcome is final ([`ConsumerRecord::release`]):
//! a kernel that keeps the object (in a list, a closure, a traceback) keeps an empty shell, not
//! the payload, so Python never pins messages past the runtime's memory budget.

use std::sync::Mutex;

use clustera::Message;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyTuple, PyType};

static DECODE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static HEADERS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// One consumed record, as kafka-python's `ConsumerRecord`.
#[pyclass(frozen, module = "clustera", name = "ConsumerRecord")]
pub struct ConsumerRecord {
    message: Mutex<Option<Message>>,
}

impl ConsumerRecord {
    /// Wraps a message for one call of the kernel.
    pub fn new(message: Message) -> Self {
        Self {
            message: Mutex::new(Some(message)),
        }
    }

    /// Drops the message: called once the call that received it has returned.
    pub fn release(&self) {
        if let Ok(mut m) = self.message.lock() {
            *m = None;
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Message) -> T) -> PyResult<T> {
        let guard = self
            .message
            .lock()
            .map_err(|_| PyRuntimeError::new_err("message lock poisoned"))?;
        match guard.as_ref() {
            Some(m) => Ok(f(m)),
            None => Err(PyRuntimeError::new_err(
                "this message's outcome is final and the runtime no longer holds it: \
                 copy what you need (message.value, message.key) during the call",
            )),
        }
    }
}

fn decode_error(py: Python<'_>, text: String) -> PyErr {
    match DECODE_ERROR.import(py, "clustera._outcomes", "DecodeError") {
        Ok(class) => PyErr::from_type(class.clone(), text),
        Err(e) => e,
    }
}

fn bytes_or_none(py: Python<'_>, b: Option<&[u8]>) -> Py<PyAny> {
    match b {
        Some(b) => PyBytes::new(py, b).into_any().unbind(),
        None => py.None(),
    }
}

#[pymethods]
impl ConsumerRecord {
    /// The topic it was read from.
    #[getter]
    fn topic(&self) -> PyResult<String> {
        self.with(|m| m.topic().to_owned())
    }

    /// The partition it was read from.
    #[getter]
    fn partition(&self) -> PyResult<i32> {
        self.with(|m| m.partition())
    }

    /// Its offset.
    #[getter]
    fn offset(&self) -> PyResult<i64> {
        self.with(|m| m.offset())
    }

    /// Milliseconds since the epoch, or -1 when the broker sent none (kafka-python's value).
    #[getter]
    fn timestamp(&self) -> PyResult<i64> {
        self.with(|m| m.timestamp_ms().unwrap_or(-1))
    }

    /// kafka-python's timestamp type: 0 (create time) when there is a timestamp, else -1. The
    /// runtime does not tell create time from log-append time.
    #[getter]
    fn timestamp_type(&self) -> PyResult<i32> {
        self.with(|m| if m.timestamp_ms().is_some() { 0 } else { -1 })
    }

    /// The key bytes, or None.
    #[getter]
    fn key(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.with(|m| bytes_or_none(py, m.key()))
    }

    /// The value bytes, or None for a tombstone.
    #[getter]
    fn value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.with(|m| bytes_or_none(py, m.value()))
    }

    /// The headers as kafka-python gives them, a list of `(name, bytes)` tuples in wire order;
    /// the list also answers `.get(name)` (the last value), as the seed's examples use it.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pairs = self.with(|m| {
            m.headers()
                .iter()
                .map(|h| {
                    PyTuple::new(
                        py,
                        [
                            h.name.clone().into_pyobject(py)?.into_any().unbind(),
                            bytes_or_none(py, h.value.as_deref()),
                        ],
                    )
                })
                .collect::<PyResult<Vec<_>>>()
        })??;
        let list = PyList::new(py, pairs)?;
        HEADERS
            .import(py, "clustera._headers", "Headers")?
            .call1((list,))
    }

    /// Key size in bytes, -1 for none (kafka-python).
    #[getter]
    fn serialized_key_size(&self) -> PyResult<i64> {
        self.with(|m| m.key().map_or(-1, |k| k.len() as i64))
    }

    /// Value size in bytes, -1 for none (kafka-python).
    #[getter]
    fn serialized_value_size(&self) -> PyResult<i64> {
        self.with(|m| m.value().map_or(-1, |v| v.len() as i64))
    }

    /// Always None, as kafka-python gives for current message formats.
    #[getter]
    fn checksum(&self, py: Python<'_>) -> Py<PyAny> {
        py.None()
    }

    /// The last value of header `name` (case-insensitive), or None.
    fn header(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        self.with(|m| bytes_or_none(py, m.header(name)))
    }

    /// The value as UTF-8 text; `clustera.DecodeError` (dead-lettered at once) otherwise.
    fn text(&self, py: Python<'_>) -> PyResult<String> {
        self.with(|m| m.text().map(str::to_owned).map_err(|e| e.to_string()))?
            .map_err(|e| decode_error(py, e))
    }

    /// The value parsed as JSON; `clustera.DecodeError` (dead-lettered at once) when it is
    /// missing or not JSON.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = self.with(|m| m.value_bytes())?;
        let Some(value) = value else {
            return Err(decode_error(py, "message has no value (tombstone)".into()));
        };
        let loads = JSON_LOADS.import(py, "json", "loads")?;
        loads
            .call1((PyBytes::new(py, &value),))
            .map_err(|e| decode_error(py, format!("value is not valid JSON: {}", e.value(py))))
    }

    fn __repr__(&self) -> String {
        self.with(|m| {
            format!(
                "ConsumerRecord(topic={:?}, partition={}, offset={})",
                m.topic(),
                m.partition(),
                m.offset()
            )
        })
        .unwrap_or_else(|_| "ConsumerRecord(released)".to_owned())
    }
}
