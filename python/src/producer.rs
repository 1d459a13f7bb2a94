//! `streamd.Producer` and `streamd.Slot`: frames written in place by Python (acquisition
//! scripts, vendor SDKs). A claimed slot's array is writable until the slot is
//! published (then it is made read-only: the frame belongs to the consumers).

use crate::{array, attrs};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use streamd::ring::{
    self, AttributeArea, ClaimError, Dtype, FrameMeta, FullPolicy, HeldSlot, RingOptions,
};

struct Core {
    producer: ring::Producer,
    /// A slot is claimed and not yet published or dropped.
    claimed: bool,
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the ring mapped while an array over one of its slots lives.
#[pyclass(module = "streamd", frozen)]
pub struct RingMemory {
    _core: Arc<Mutex<Core>>,
}

/// Creates a ring and publishes frames into it.
#[pyclass(module = "streamd")]
pub struct Producer {
    core: Arc<Mutex<Core>>,
    dtype: Dtype,
    shape: Vec<u32>,
    ring: String,
}

/// A claimed slot: `array` is writable; `publish` makes it a frame.
#[pyclass(module = "streamd")]
pub struct Slot {
    core: Arc<Mutex<Core>>,
    held: Option<HeldSlot>,
    data: *mut u8,
    dtype: Dtype,
    shape: Vec<u32>,
    /// The arrays handed out, made read-only at publication.
    arrays: Vec<Py<PyAny>>,
}

// SAFETY: `data` points into the ring mapping that `core` keeps; it is only handed to
// NumPy while the slot is claimed by this producer.
unsafe impl Send for Slot {}
unsafe impl Sync for Slot {}

fn interrupted(py: Python<'_>) -> PyErr {
    crate::interrupt_flag().store(false, Relaxed);
    py.check_signals()
        .err()
        .unwrap_or_else(|| PyKeyboardInterrupt::new_err(()))
}

#[pymethods]
impl Producer {
    #[new]
    #[pyo3(signature = (ring, shape, dtype, slots=8, policy="block"))]
    fn new(
        py: Python<'_>,
        ring: &str,
        shape: Vec<u32>,
        dtype: &Bound<'_, PyAny>,
        slots: u32,
        policy: &str,
    ) -> PyResult<Producer> {
        let descr = py.import("numpy")?.call_method1("dtype", (dtype,))?;
        let dtype = array::ring_dtype(descr.cast::<numpy::PyArrayDescr>()?)
            .map_err(PyValueError::new_err)?;
        if shape.is_empty() || shape.contains(&0) || ring::Dims::new(&shape).is_none() {
            return Err(PyValueError::new_err(format!(
                "shape {shape:?} is not a frame shape; give (ny, nx) with both at least 1"
            )));
        }
        let full_policy: FullPolicy = policy.parse().map_err(PyValueError::new_err)?;
        let slot_bytes = shape.iter().map(|&d| u64::from(d)).product::<u64>() * dtype.size() as u64;
        let options = RingOptions {
            name: ring.to_string(),
            slots,
            slot_bytes,
            full_policy,
        };
        let (mut producer, _stale) = py
            .detach(|| ring::Producer::create(&options))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        producer.set_interrupt(crate::interrupt_flag());
        Ok(Producer {
            core: Arc::new(Mutex::new(Core {
                producer,
                claimed: false,
            })),
            dtype,
            shape,
            ring: ring.to_string(),
        })
    }

    /// Claims the next slot, waiting for space under `block`; `None` when the frame is
    /// dropped under `drop-newest` (counted).
    fn claim(&self, py: Python<'_>) -> PyResult<Option<Slot>> {
        let core = &self.core;
        let claimed = py.detach(|| {
            let mut core = lock(core);
            if core.claimed {
                return Err(None);
            }
            match core.producer.claim() {
                Ok(mut writer) => {
                    // An address, to cross the GIL-free closure.
                    let data = writer.payload_mut().as_mut_ptr() as usize;
                    let held = writer.hold();
                    core.claimed = true;
                    Ok(Some((held, data)))
                }
                Err(ClaimError::Full) => Ok(None),
                Err(ClaimError::Interrupted) => Err(Some(())),
            }
        });
        match claimed {
            Ok(Some((held, data))) => Ok(Some(Slot {
                core: Arc::clone(&self.core),
                held: Some(held),
                data: data as *mut u8,
                dtype: self.dtype,
                shape: self.shape.clone(),
                arrays: Vec::new(),
            })),
            Ok(None) => Ok(None),
            Err(None) => Err(PyRuntimeError::new_err(
                "a slot is already claimed; publish it (or drop it) before claiming another",
            )),
            Err(Some(())) => Err(interrupted(py)),
        }
    }

    /// Waits until `count` consumers are attached (so that none misses the first frame).
    fn wait_for_consumers(&self, py: Python<'_>, count: usize) -> PyResult<()> {
        let core = &self.core;
        py.detach(|| lock(core).producer.wait_for_consumers(count))
            .map_err(|_| interrupted(py))
    }

    /// Ends the stream: consumers get end-of-stream after the last frame.
    fn finish(&self) {
        lock(&self.core).producer.finish();
    }

    /// Frames published and dropped so far.
    fn counters(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let c = lock(&self.core).producer.counters();
        let dict = PyDict::new(py);
        dict.set_item("published", c.published)?;
        dict.set_item("dropped", c.dropped)?;
        Ok(dict.unbind())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.finish();
    }

    fn __repr__(&self) -> String {
        format!(
            "Producer(ring={:?}, shape={:?}, dtype={})",
            self.ring,
            self.shape,
            self.dtype.name()
        )
    }
}

#[pymethods]
impl Slot {
    /// A writable NumPy array over the slot's payload.
    #[getter]
    fn array<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.held.is_none() {
            return Err(PyValueError::new_err(
                "the slot was published; claim a new one",
            ));
        }
        let base = Bound::new(
            py,
            RingMemory {
                _core: Arc::clone(&self.core),
            },
        )?
        .into_any();
        // SAFETY: the payload holds the shape's bytes (the ring was made for it); the slot
        // is claimed by this producer (only this array writes it) until publication,
        // when the array is made read-only; `base` keeps the mapping.
        let array = unsafe { array::over(py, self.dtype, &self.shape, self.data, true, base)? };
        self.arrays.push(array.clone().unbind());
        Ok(array)
    }

    /// Publishes the slot as frame `frame_id`, stamped `timestamp_ns` (now when not
    /// given), with the attributes of `attrs` (int, float, bool or str values).
    #[pyo3(signature = (frame_id, timestamp_ns=None, attrs=None))]
    fn publish(
        &mut self,
        py: Python<'_>,
        frame_id: u64,
        timestamp_ns: Option<u64>,
        attrs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let Some(held) = self.held.take() else {
            return Err(PyValueError::new_err("the slot was already published"));
        };
        let mut area = AttributeArea::default();
        if let Some(dict) = attrs {
            if let Err(e) = attrs::encode(dict, &mut area) {
                self.held = Some(held);
                return Err(e);
            }
        }
        for array in self.arrays.drain(..) {
            array::freeze(array.bind(py));
        }
        let timestamp_ns = timestamp_ns.unwrap_or_else(streamd::sys::now_ns);
        let mut core = lock(&self.core);
        core.claimed = false;
        let mut writer = core
            .producer
            .resume_held(held)
            .map_err(|_| PyRuntimeError::new_err("the slot is no longer this producer's"))?;
        writer
            .copy_attributes(area.as_bytes())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let meta = FrameMeta {
            frame_id,
            timestamp_ns,
            dtype: self.dtype,
            dims: &self.shape,
            flags: 0,
        };
        writer
            .publish(&meta)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.held.take().is_some() {
            // Unpublished: the next claim takes the same slot again.
            lock(&self.core).claimed = false;
        }
    }
}
