//! The `streamd` Python package's native module (`streamd._streamd`): the crate's own
//! rings, with no second implementation of their protocol.
//! - `Consumer` and `Frame`: frames as read-only NumPy arrays over the ring slots;
//! - `Producer` and `Slot`: writable arrays over claimed slots;
//! - `rings()` and `status()`: plain data;
//! - `run_worker`: the pipeline worker loop, hosting Python stages and sources.
//!
//! The unsafe code here is the FFI edge: NumPy arrays made over ring memory, whose
//! validity the types in `frames.rs` and `producer.rs` keep.

mod array;
mod attrs;
mod consumer;
mod host;
mod producer;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

pyo3::create_exception!(
    _streamd,
    FramesHeld,
    PyRuntimeError,
    "A consumer cannot go on while frames it read are still in use (views of them live)."
);

/// Raised by SIGINT while a wait runs without the GIL: the wait returns, and the
/// interpreter's own handler (run by `check_signals`) raises KeyboardInterrupt.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        // Registration chains to the interpreter's handler; it fails only for forbidden
        // signals, which SIGINT is not.
        let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&flag));
        flag
    })
    .clone()
}

/// Raised by SIGTERM or SIGINT in a pipeline worker: the worker loop stops on its own
/// flag; Python code that waits long (a sink waiting for clients) asks [`stopping`].
fn worker_stop_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(streamd::sys::stop_flag).clone()
}

/// Whether this pipeline worker was asked to stop (SIGTERM, or SIGINT): a Python stage or
/// source that waits for something outside streamd returns when it turns true.
#[pyfunction]
fn stopping() -> bool {
    worker_stop_flag().load(std::sync::atomic::Ordering::Relaxed)
}

/// Every ring in /dev/shm, as the dicts `streamd rings --json` prints.
#[pyfunction]
fn rings(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let snapshots: Vec<_> = streamd::ring::list_names()
        .map_err(runtime)?
        .iter()
        .filter_map(|name| streamd::ring::RingInspector::open(name).ok())
        .map(|ring| ring.snapshot())
        .collect();
    json_to_python(py, &serde_json::to_string(&snapshots).map_err(runtime)?)
}

/// A running pipeline's status, as `streamd status --json` prints it; `pipeline` may be
/// left out when exactly one runs.
#[pyfunction]
#[pyo3(signature = (pipeline=None))]
fn status(py: Python<'_>, pipeline: Option<&str>) -> PyResult<Py<PyAny>> {
    let reply = py
        .detach(|| {
            let name = streamd::control::choose_pipeline(pipeline)?;
            streamd::control::send(&name, &streamd::control::Request::Status)
        })
        .map_err(|e| PyRuntimeError::new_err(streamd::units::sentence(&e)))?;
    let Some(report) = reply.status.filter(|_| reply.ok) else {
        return Err(PyRuntimeError::new_err(reply.message));
    };
    json_to_python(py, &serde_json::to_string(&report).map_err(runtime)?)
}

/// Runs one pipeline worker (`python -m streamd._worker SPEC`, started by `streamd run`
/// for Python stages and sources); returns its exit status.
#[pyfunction]
fn run_worker(py: Python<'_>, spec: &str) -> PyResult<i32> {
    let spec: streamd::pipeline::worker::WorkerSpec = serde_json::from_str(spec).map_err(|e| {
        PyRuntimeError::new_err(format!("the worker description is not valid: {e}"))
    })?;
    let host = host::PythonHost;
    // Registered before the loop starts, so no signal passes unseen by `stopping()`.
    worker_stop_flag();
    // The loop takes the GIL only to call into Python.
    py.detach(|| streamd::pipeline::worker::run_hosted(&spec, Some(&host)))
        .map_err(|e| PyRuntimeError::new_err(streamd::units::sentence(&e)))
}

pub(crate) fn runtime(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

pub(crate) fn json_to_python(py: Python<'_>, json: &str) -> PyResult<Py<PyAny>> {
    Ok(py.import("json")?.call_method1("loads", (json,))?.unbind())
}

#[pymodule]
fn _streamd(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<consumer::Frame>()?;
    m.add_class::<producer::Producer>()?;
    m.add_class::<producer::Slot>()?;
    m.add("FramesHeld", m.py().get_type::<FramesHeld>())?;
    // Bytes of attributes a frame can carry (spec §3.6: each is 4 + key + value bytes).
    m.add("ATTRIBUTE_CAPACITY", streamd::ring::ATTR_CAPACITY)?;
    m.add_function(wrap_pyfunction!(rings, m)?)?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(run_worker, m)?)?;
    m.add_function(wrap_pyfunction!(stopping, m)?)?;
    Ok(())
}
