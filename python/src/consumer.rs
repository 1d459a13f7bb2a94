//! `streamd.Consumer` and `streamd.Frame`: frames read in place.
//!
//! The release rule: a frame's slot stays reserved while the `Frame` or any array made
//! from it is referenced. Taking the next frame releases the previous `Frame` (its
//! `array` then raises), `with frame:` and `frame.release()` release it sooner, and an
//! array that outlives its frame keeps the slot reserved until the array is gone. A
//! lossless consumer holds (spec §5.8) and commits the oldest frames nobody uses; it
//! can keep up to half its ring this way, and raises `FramesHeld` beyond that (or, in a
//! group, when its next run needs every frame released). A lossy consumer keeps one
//! frame: reading on while an array of the previous one lives raises `FramesHeld`.

use crate::array;
use crate::attrs;
use crate::FramesHeld;
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyRuntimeError, PyStopIteration, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use streamd::ring::{
    self, ConsumerOptions, Delivery, Detached, Dtype, GroupSet, RecvError, SetMode, WaitMode,
};

/// How long one wait runs without the GIL before signals are looked at.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// What a consumer and its frames share.
pub struct Shared {
    core: Mutex<Core>,
    /// Frames no longer referenced, handed back by whichever thread dropped them; taken
    /// by the consumer on its next call (never under `core`, so a drop never waits for a
    /// reader blocked in the ring).
    returned: Mutex<Vec<Detached>>,
}

struct Core {
    consumer: ring::Consumer,
    holds: bool,
    /// Sequences of the held frames still referenced.
    in_use: BTreeSet<u64>,
}

impl Core {
    /// Releases what came back: for a holder, commits up to the oldest frame in use.
    fn settle(&mut self, returned: &Mutex<Vec<Detached>>) {
        let frames = std::mem::take(&mut *lock(returned));
        for frame in frames {
            if self.holds {
                self.in_use.remove(&frame.seq());
            } else {
                self.consumer.release(frame);
            }
        }
        if self.holds {
            let oldest = self.in_use.first().copied().unwrap_or(u64::MAX);
            self.consumer.commit_below(oldest);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Every frame is gone (each kept this alive): release all before detaching, so
        // that nothing the reader had is delivered again to a group mate.
        let returned = std::mem::take(&mut self.returned);
        let core = self.core.get_mut().unwrap_or_else(|e| e.into_inner());
        core.settle(&returned);
        core.consumer.commit();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic cannot leave these in a state worse than the protocol allows; go on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One frame's reservation: its slot stays the frame's until the last of the `Frame`
/// and its arrays lets go of this.
pub struct Lease {
    frame: Option<Detached>,
    /// `None` for a stage's frame, which the worker's guard reserves for the call.
    shared: Option<Arc<Shared>>,
    data: *mut u8,
}

// SAFETY: `data` points into the consumer's mapping, kept by `shared`; the lease only
// hands it to NumPy, and the slot is reserved until the lease drops, whatever thread.
unsafe impl Send for Lease {}
unsafe impl Sync for Lease {}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (Some(frame), Some(shared)) = (self.frame.take(), &self.shared) {
            lock(&shared.returned).push(frame);
            // Released at once unless the consumer is waiting in the ring (then on its
            // next call): the producer gets the slot back as soon as nobody uses it.
            if let Ok(mut core) = shared.core.try_lock() {
                core.settle(&shared.returned);
            }
        }
    }
}

/// The base object of a frame's arrays: holds the lease.
#[pyclass(module = "streamd", frozen)]
pub struct SlotView {
    _lease: Arc<Lease>,
}

/// A frame read in place from a ring (see the release rule in the module docs).
#[pyclass(module = "streamd")]
pub struct Frame {
    lease: Mutex<Option<Arc<Lease>>>,
    #[pyo3(get)]
    id: u64,
    #[pyo3(get)]
    timestamp_ns: u64,
    #[pyo3(get)]
    seq: u64,
    dtype: Dtype,
    shape: Vec<u32>,
    attrs: Py<PyDict>,
}

impl Frame {
    pub fn new(
        py: Python<'_>,
        lease: Arc<Lease>,
        header: &ring::FrameHeader,
        seq: u64,
        attrs: &[(String, attrs::Owned)],
    ) -> PyResult<Frame> {
        Ok(Frame {
            lease: Mutex::new(Some(lease)),
            id: header.frame_id,
            timestamp_ns: header.timestamp_ns,
            seq,
            dtype: header.dtype,
            shape: header.dims.to_vec(),
            attrs: attrs::to_dict(py, attrs)?.unbind(),
        })
    }

    /// A stage's frame: its lease reserves nothing (the worker's guard does, for the
    /// call), `data` is the slot's payload.
    pub fn borrowed(
        py: Python<'_>,
        data: *const u8,
        header: &ring::FrameHeader,
        attrs: &[(String, attrs::Owned)],
    ) -> PyResult<(Frame, Arc<Lease>)> {
        let lease = Arc::new(Lease {
            frame: None,
            shared: None,
            data: data.cast_mut(),
        });
        Ok((Frame::new(py, Arc::clone(&lease), header, 0, attrs)?, lease))
    }

    pub fn take_lease(&self) -> Option<Arc<Lease>> {
        lock(&self.lease).take()
    }

    pub fn header_like(&self) -> (u64, u64, Dtype, &[u32]) {
        (self.id, self.timestamp_ns, self.dtype, &self.shape)
    }
}

#[pymethods]
impl Frame {
    /// A read-only NumPy array over the slot, shaped like the frame, with no copy.
    #[getter]
    fn array<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(lease) = lock(&self.lease).clone() else {
            return Err(PyValueError::new_err(format!(
                "frame {} was released; keep frame.array (or a copy) before releasing it to use its pixels later",
                self.id
            )));
        };
        let data = lease.data;
        let base = Bound::new(py, SlotView { _lease: lease })?.into_any();
        // SAFETY: `data` is the frame's payload, at least shape × dtype bytes (checked
        // when the frame was read), page-aligned; the slot stays reserved while `base`
        // (which holds the lease) lives; read-only.
        unsafe { array::over(py, self.dtype, &self.shape, data, false, base) }
    }

    #[getter]
    fn attrs(&self, py: Python<'_>) -> Py<PyDict> {
        self.attrs.clone_ref(py)
    }

    #[getter]
    fn shape(&self) -> Vec<u32> {
        self.shape.clone()
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        self.dtype.name()
    }

    /// Releases the frame now; arrays made from it still keep the slot until they go.
    pub fn release(&self) {
        lock(&self.lease).take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.release();
    }

    fn __repr__(&self) -> String {
        format!(
            "Frame(id={}, timestamp_ns={}, shape={:?}, dtype={})",
            self.id,
            self.timestamp_ns,
            self.shape,
            self.dtype.name()
        )
    }
}

/// Reads a ring: alone (every frame) or in a group (the group shares the frames).
#[pyclass(module = "streamd")]
pub struct Consumer {
    shared: Arc<Shared>,
    /// The frame handed out last: taking the next releases it.
    last: Option<Py<Frame>>,
    timeout: Option<Duration>,
    ring: String,
    ended: Option<String>,
}

enum Got {
    /// The frame, its payload's address, its attributes.
    Frame(Detached, usize, Vec<(String, attrs::Owned)>),
    Nothing,
    Ended(String),
    Full,
    Error(RecvError),
}

#[pymethods]
impl Consumer {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (ring, group=None, batch=1, delivery="lossless", timeout=None, attach_timeout=5.0, set=None, sets=None))]
    fn new(
        py: Python<'_>,
        ring: &str,
        group: Option<String>,
        batch: u32,
        delivery: &str,
        timeout: Option<f64>,
        attach_timeout: f64,
        set: Option<u32>,
        sets: Option<u32>,
    ) -> PyResult<Consumer> {
        let delivery: Delivery = delivery.parse().map_err(PyValueError::new_err)?;
        // A member of a distributor set sees every frame of its set (PvaPy's mode:all).
        let set = match (set, sets) {
            (None, None) => None,
            (Some(index), Some(sets)) => Some(GroupSet {
                index,
                sets,
                mode: SetMode::All,
            }),
            _ => {
                return Err(PyValueError::new_err(
                    "set and sets go together: give both (set 0 to sets - 1), or neither",
                ))
            }
        };
        let seconds = |value: f64, what: &str| {
            if (0.0..1e9).contains(&value) {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(PyValueError::new_err(format!(
                    "{what} must be a number of seconds from 0 up, got {value}"
                )))
            }
        };
        let timeout = timeout.map(|t| seconds(t, "timeout")).transpose()?;
        let holds = delivery == Delivery::Lossless;
        let options = ConsumerOptions {
            group,
            batch,
            set,
            delivery,
            wait: WaitMode::Futex,
            attach_timeout: seconds(attach_timeout, "attach_timeout")?,
            hold: holds,
        };
        let mut consumer = py
            .detach(|| ring::Consumer::attach(ring, &options))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        consumer.set_interrupt(crate::interrupt_flag());
        Ok(Consumer {
            shared: Arc::new(Shared {
                core: Mutex::new(Core {
                    consumer,
                    holds,
                    in_use: BTreeSet::new(),
                }),
                returned: Mutex::new(Vec::new()),
            }),
            last: None,
            timeout,
            ring: ring.to_string(),
            ended: None,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<Frame>> {
        match self.recv(py, None)? {
            Some(frame) => Ok(frame),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    /// The next frame; `None` at the end of the stream. Waits up to `timeout` seconds
    /// (the consumer's own when not given, else for ever) and raises TimeoutError then.
    #[pyo3(signature = (timeout=None))]
    fn recv(&mut self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<Frame>>> {
        if let Some(last) = self.last.take() {
            last.borrow(py).release();
        }
        if self.ended.is_some() {
            return Ok(None);
        }
        let timeout = match timeout {
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be 0 or more seconds, got {t}"
                )))
            }
            None => self.timeout,
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut collected = false;
        loop {
            let slice = deadline.map_or(WAIT_SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(WAIT_SLICE)
            });
            let shared = &self.shared;
            let got = py.detach(|| {
                let mut core = lock(&shared.core);
                core.settle(&shared.returned);
                let received = core
                    .consumer
                    .recv_timeout(slice)
                    .map(|f| f.map(ring::Frame::detach));
                let got = match received {
                    Ok(Some(frame)) => {
                        let data = core
                            .consumer
                            .detached_payload(&frame)
                            .map_or(0, |p| p.as_ptr() as usize);
                        let attrs = match core.consumer.detached_attributes(&frame) {
                            Some(Ok(area)) => attrs::decode(area),
                            _ => Vec::new(),
                        };
                        Got::Frame(frame, data, attrs)
                    }
                    Ok(None) => Got::Nothing,
                    Err(RecvError::EndOfStream { published }) => {
                        Got::Ended(format!("end of stream after {published} frames"))
                    }
                    Err(e @ RecvError::ProducerDied { .. }) => Got::Ended(e.to_string()),
                    Err(RecvError::MustCommit) if core.consumer.read_everything() => {
                        Got::Ended("end of stream".into())
                    }
                    Err(RecvError::MustCommit) => Got::Full,
                    Err(e) => Got::Error(e),
                };
                if let Got::Frame(frame, ..) = &got {
                    if core.holds {
                        let seq = frame.seq();
                        core.in_use.insert(seq);
                    }
                }
                got
            });
            match got {
                Got::Frame(frame, data, attrs) => {
                    let header = frame.header().clone();
                    let expected = header.pixel_count() * header.dtype.size() as u64;
                    let data = data as *mut u8;
                    if data.is_null() || expected > header.payload_len {
                        return Err(PyRuntimeError::new_err(format!(
                            "frame {} says {:?} {} but carries {} bytes; the producer wrote it wrong",
                            header.frame_id, &*header.dims, header.dtype.name(), header.payload_len
                        )));
                    }
                    let seq = frame.seq();
                    let lease = Arc::new(Lease {
                        frame: Some(frame),
                        shared: Some(Arc::clone(&self.shared)),
                        data,
                    });
                    let out = Py::new(py, Frame::new(py, lease, &header, seq, &attrs)?)?;
                    self.last = Some(out.clone_ref(py));
                    return Ok(Some(out));
                }
                Got::Ended(reason) => {
                    self.ended = Some(reason);
                    return Ok(None);
                }
                Got::Nothing => {}
                Got::Full if !collected => {
                    // Frames in reference cycles go only with a collection.
                    collected = true;
                    py.import("gc")?.call_method0("collect")?;
                }
                Got::Full => {
                    let core = lock(&self.shared.core);
                    return Err(FramesHeld::new_err(format!(
                        "ring '{}': {} frame(s) read are still in use (the oldest is sequence {}), and the consumer cannot read on until they are released; delete the arrays or copy them (frame.array.copy())",
                        self.ring,
                        core.in_use.len(),
                        core.in_use.first().copied().unwrap_or_default()
                    )));
                }
                Got::Error(RecvError::FrameDetached { .. }) => {
                    return Err(FramesHeld::new_err(format!(
                        "ring '{}': an array of the previous frame is still referenced, and a lossy consumer keeps one frame; delete it or copy it (frame.array.copy()) before reading on",
                        self.ring
                    )));
                }
                Got::Error(RecvError::Interrupted) => {}
                Got::Error(RecvError::Corrupt { .. }) => {}
                Got::Error(e) => return Err(PyRuntimeError::new_err(e.to_string())),
            }
            let flag = crate::interrupt_flag();
            if flag.swap(false, Relaxed) {
                py.check_signals()?;
                return Err(PyKeyboardInterrupt::new_err(()));
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(PyTimeoutError::new_err(format!(
                    "no frame from ring '{}' within the timeout",
                    self.ring
                )));
            }
        }
    }

    /// Frames received and missed so far.
    fn counters(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let c = lock(&self.shared.core).consumer.counters();
        let dict = PyDict::new(py);
        dict.set_item("received", c.received)?;
        dict.set_item("missed", c.missed)?;
        Ok(dict.unbind())
    }

    /// Why iteration ended, once it has.
    #[getter]
    fn ended(&self) -> Option<String> {
        self.ended.clone()
    }

    fn __repr__(&self) -> String {
        format!("Consumer(ring={:?})", self.ring)
    }
}
