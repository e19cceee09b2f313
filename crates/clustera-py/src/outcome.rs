//! What a Python call's result or exception means to the runtime.
//!
//! | Python | Runtime |
//! |---|---|
//! | `True` | `Ack` |
//! | `False` | `Retry` (backoff; dead letter after `CLUSTERA_MAX_ATTEMPTS`, 0 = forever) |
//! | `None` | `Ack` for `clustera.Kernel.process`; for a seed `process_message`, a transient error (the seed's contract is a bool) |
//! | `clustera.Skip(reason)` raised or returned | `Skip` |
//! | `clustera.DeadLetter(reason)` | `DeadLetter` at once |
//! | `clustera.Retry(reason, after=seconds)` | `Retry` (after that delay if given) |
//! | `clustera.Unavailable(reason)` | retried for as long as it lasts, never dead-lettered |
//! | `clustera.DecodeError` (from `msg.json()`, `msg.text()`) | dead-lettered at once |
//! | any other exception | transient error: retried, then dead-lettered with the traceback |

use std::time::Duration;

use clustera::{KernelError, Outcome};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyType};

/// Which contract the callable follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `process_message(message, producer) -> bool`, the seed template's.
    Seed,
    /// `clustera.Kernel.process(self, msg, ctx)`.
    Kernel,
}

struct Classes {
    skip: Py<PyType>,
    dead_letter: Py<PyType>,
    retry: Py<PyType>,
    unavailable: Py<PyType>,
    decode: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let m = py.import("clustera._outcomes")?;
        let get = |name: &str| -> PyResult<Py<PyType>> {
            Ok(m.getattr(name)?.cast_into::<PyType>()?.unbind())
        };
        Ok(Classes {
            skip: get("Skip")?,
            dead_letter: get("DeadLetter")?,
            retry: get("Retry")?,
            unavailable: get("Unavailable")?,
            decode: get("DecodeError")?,
        })
    })
}

/// An error message for the runtime (logs, `clustera.error` on a dead letter).
#[derive(Debug)]
struct PythonError(String);

impl std::fmt::Display for PythonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PythonError {}

fn transient(text: String) -> KernelError {
    KernelError::transient(PythonError(text))
}

/// The text of an outcome's reason: `str(obj)`.
fn reason(obj: &Bound<'_, PyAny>) -> String {
    obj.str().map(|s| s.to_string()).unwrap_or_default()
}

/// `Some` when `obj` is an outcome (an instance of one of the outcome classes, or the class
/// itself, which stands for an instance without a reason).
fn outcome_of(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
) -> PyResult<Option<Result<Outcome, KernelError>>> {
    let c = classes(py)?;
    let (class, instance) = match obj.cast::<PyType>() {
        Ok(t) => (t.clone(), None),
        Err(_) => (obj.get_type(), Some(obj)),
    };
    let text = instance.map(reason).unwrap_or_default();
    if class.is_subclass(c.skip.bind(py))? {
        return Ok(Some(Ok(Outcome::Skip(text))));
    }
    if class.is_subclass(c.dead_letter.bind(py))? {
        return Ok(Some(Ok(Outcome::DeadLetter(text))));
    }
    if class.is_subclass(c.retry.bind(py))? {
        let after = match instance {
            Some(i) => retry_delay(&i.getattr("after")?)?,
            None => None,
        };
        return Ok(Some(Ok(Outcome::Retry(after))));
    }
    if class.is_subclass(c.unavailable.bind(py))? {
        let text = if text.is_empty() {
            "clustera.Unavailable".to_owned()
        } else {
            text
        };
        return Ok(Some(Err(KernelError::unavailable(PythonError(text)))));
    }
    if class.is_subclass(c.decode.bind(py))? {
        return Ok(Some(Err(KernelError::permanent(PythonError(text)))));
    }
    Ok(None)
}

fn retry_delay(after: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    if after.is_none() {
        return Ok(None);
    }
    let secs: f64 = after.extract()?;
    Duration::try_from_secs_f64(secs).map(Some).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "Retry(after={secs}) is not a valid delay in seconds"
        ))
    })
}

/// Maps a value the kernel returned.
pub fn from_value(
    py: Python<'_>,
    style: Style,
    value: &Bound<'_, PyAny>,
) -> Result<Outcome, KernelError> {
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(if b.is_true() {
            Outcome::Ack
        } else {
            Outcome::retry()
        });
    }
    if value.is_none() {
        return match style {
            Style::Kernel => Ok(Outcome::Ack),
            Style::Seed => Err(transient(
                "process_message returned None: it must return True (commit) or False (retry)"
                    .into(),
            )),
        };
    }
    match outcome_of(py, value) {
        Ok(Some(outcome)) => outcome,
        Ok(None) => Err(transient(format!(
            "the kernel returned {} ({}): expected True, False or a clustera outcome \
             (Skip, DeadLetter, Retry, Unavailable)",
            value.repr().map(|r| r.to_string()).unwrap_or_default(),
            value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ))),
        Err(e) => Err(transient(format!("cannot read the kernel's outcome: {e}"))),
    }
}

/// Maps an exception the kernel raised.
pub fn from_exception(py: Python<'_>, err: PyErr) -> Result<Outcome, KernelError> {
    let value = err.value(py);
    match outcome_of(py, value.as_any()) {
        Ok(Some(outcome)) => return outcome,
        Ok(None) => {}
        Err(e) => return Err(transient(format!("cannot read the kernel's outcome: {e}"))),
    }
    Err(transient(describe(py, &err)))
}

/// `Type: message` first (dead letters keep the start of a long error), then the traceback as
/// Python prints it.
pub fn describe(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.getattr("format_exception")?.call1((
            err.get_type(py),
            err.value(py),
            err.traceback(py),
        ))?;
        let text: Vec<String> = lines.extract()?;
        Ok(text.concat())
    })();
    match formatted {
        Ok(t) => format!("{err}\n\n{}", t.trim_end()),
        Err(_) => err.to_string(),
    }
}
