//! Hosting Python stages and sources in the crate's worker loop: the `Host` that
//! `streamd run` gets when it starts a worker as `python -m streamd._worker`.

use crate::consumer::Frame;
use crate::{array, attrs};
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::sync::Arc;
use streamd::pipeline::plan::{MetadataPlan, SourcePlan};
use streamd::pipeline::source::{ChannelValue, MetadataFeed};
use streamd::pipeline::worker::Host;
use streamd::processors::python::{PythonCode, PythonStage, PVA_MODULE};
use streamd::processors::{ArgValue, Outputs, ProcessError, Processor, Refused, StageContext};
use streamd::ring::{AttributeArea, Dims, Dtype, Frame as RingFrame, FrameMeta, SlotWriter};
use streamd::sources::{Next, Source, SuppliedFrame};

pub struct PythonHost;

impl Host for PythonHost {
    fn processor(&self, processor: &str, args: &toml::Table) -> Result<Box<dyn Processor>, String> {
        Ok(Box::new(PyStage {
            code: PythonCode::for_stage(processor, args).unwrap_or_default(),
            user_args: PythonStage::user_args(args),
            object: None,
        }))
    }

    fn frames(
        &self,
        code: &PythonCode,
        args: &toml::Table,
        plan: &SourcePlan,
    ) -> Result<Box<dyn Source>, String> {
        Python::attach(|py| {
            let object = construct(py, code, args)?;
            let frames = object
                .call_method0("frames")
                .and_then(|g| g.try_iter().map(|i| i.into_any()))
                .map_err(|e| describe(py, &e))?;
            Ok(Box::new(PySource {
                object: object.unbind(),
                frames: frames.unbind(),
                capacity: u64::from(plan.nx) * u64::from(plan.ny) * plan.dtype.size() as u64,
                current: None,
            }) as Box<dyn Source>)
        })
    }

    fn metadata(&self, plan: &MetadataPlan) -> Result<Box<dyn MetadataFeed>, String> {
        Python::attach(|py| {
            let code = PythonCode {
                module: Some(PVA_MODULE.into()),
                class: Some("MetadataChannels".into()),
                ..PythonCode::default()
            };
            let channels: Vec<toml::Value> = plan
                .pvs
                .iter()
                .map(|c| {
                    toml::Value::Table(toml::Table::from_iter([
                        ("name".to_string(), toml::Value::String(c.name.clone())),
                        (
                            "protocol".to_string(),
                            toml::Value::String(c.protocol.clone()),
                        ),
                        ("pv".to_string(), toml::Value::String(c.pv.clone())),
                    ]))
                })
                .collect();
            let args = toml::Table::from_iter([
                ("channels".to_string(), toml::Value::Array(channels)),
                (
                    "queue_size".to_string(),
                    toml::Value::Integer(i64::from(plan.queue_size)),
                ),
            ]);
            let object = construct(py, &code, &args)?;
            Ok(Box::new(PyFeed {
                object: object.unbind(),
            }) as Box<dyn MetadataFeed>)
        })
    }
}

/// Metadata channel values from the package's `MetadataChannels` (EPICS PVs).
struct PyFeed {
    object: Py<PyAny>,
}

impl MetadataFeed for PyFeed {
    fn take(&mut self) -> Result<Vec<ChannelValue>, String> {
        Python::attach(|py| {
            let taken = self
                .object
                .call_method0(py, "take")
                .and_then(|t| t.extract::<Vec<(usize, u64, f64)>>(py))
                .map_err(|e| describe(py, &e))?;
            Ok(taken
                .into_iter()
                .map(|(channel, timestamp_ns, value)| ChannelValue {
                    channel,
                    timestamp_ns,
                    value,
                })
                .collect())
        })
    }

    fn counters(&self) -> Vec<(String, u64)> {
        Python::attach(|py| stats_of(py, &self.object))
    }

    fn reset_counters(&mut self) {
        Python::attach(|py| reset_stats_of(py, &self.object));
    }
}

/// Calls an object's `reset_stats()`, when it has one.
fn reset_stats_of(py: Python<'_>, object: &Py<PyAny>) {
    if object.bind(py).hasattr("reset_stats").unwrap_or(false) {
        // A failing reset leaves the counters as they were; there is no one to tell.
        let _ = object.call_method0(py, "reset_stats");
    }
}

/// An object's `get_stats()`: its whole-number values, shown as counters.
fn stats_of(py: Python<'_>, object: &Py<PyAny>) -> Vec<(String, u64)> {
    if !object.bind(py).hasattr("get_stats").unwrap_or(false) {
        return Vec::new();
    }
    let Ok(stats) = object.call_method0(py, "get_stats") else {
        return Vec::new();
    };
    let Ok(dict) = stats.bind(py).cast::<PyDict>().cloned() else {
        return Vec::new();
    };
    dict.iter()
        .filter_map(|(k, v)| Some((k.extract::<String>().ok()?, whole(&v)?)))
        .take(streamd::processors::MAX_COUNTERS)
        .collect()
}

/// The exception as its last traceback line would show it, with where it was raised.
fn describe(py: Python<'_>, e: &PyErr) -> String {
    let kind = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let mut text = format!("{kind}: {}", e.value(py));
    let mut tb = e.traceback(py).map(|t| t.into_any());
    let mut place = None;
    while let Some(t) = tb {
        let file = t
            .getattr("tb_frame")
            .and_then(|f| f.getattr("f_code"))
            .and_then(|c| c.getattr("co_filename"))
            .and_then(|n| n.extract::<String>());
        let line = t.getattr("tb_lineno").and_then(|l| l.extract::<u32>());
        if let (Ok(file), Ok(line)) = (file, line) {
            place = Some(format!("{file}:{line}"));
        }
        tb = t.getattr("tb_next").ok().filter(|n| !n.is_none());
    }
    if let Some(place) = place {
        text.push_str(&format!(" (at {place})"));
    }
    streamd::units::one_line(&text)
}

fn python_args<'py>(py: Python<'py>, args: &toml::Table) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_string(args).map_err(crate::runtime)?;
    Ok(crate::json_to_python(py, &json)?.into_bound(py))
}

/// Imports the class and makes an instance with `args`.
fn construct<'py>(
    py: Python<'py>,
    code: &PythonCode,
    args: &toml::Table,
) -> Result<Bound<'py, PyAny>, String> {
    let made = (|| {
        let class = py.import("streamd._load")?.call_method1(
            "load_class",
            (
                code.file.as_deref(),
                code.module.as_deref(),
                code.class.as_deref(),
            ),
        )?;
        class.call1((python_args(py, args)?,))
    })();
    made.map_err(|e| describe(py, &e))
}

/// A Python stage: the class PvaPy users know, called for every frame.
struct PyStage {
    code: PythonCode,
    user_args: toml::Table,
    object: Option<Py<PyAny>>,
}

impl PyStage {
    fn has(py: Python<'_>, object: &Py<PyAny>, method: &str) -> bool {
        object.bind(py).hasattr(method).unwrap_or(false)
    }

    /// Publishes what `process` returned (see the README: nothing, an array, an array
    /// with attributes, the frame, or a list of these by port).
    fn publish(
        py: Python<'_>,
        result: &Bound<'_, PyAny>,
        input: &RingFrame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        // A sink stage: what `process` returns has nowhere to go.
        if out.is_empty() {
            return Ok(());
        }
        if let Ok(list) = result.cast::<PyList>() {
            for (port, item) in list.iter().enumerate() {
                Self::publish_one(py, port, &item, input, out)?;
            }
            return Ok(());
        }
        Self::publish_one(py, 0, result, input, out)
    }

    fn publish_one(
        py: Python<'_>,
        port: usize,
        item: &Bound<'_, PyAny>,
        input: &RingFrame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        if item.is_none() {
            return Ok(());
        }
        if item.cast::<Frame>().is_ok() {
            return Ok(out.forward(port, input)?);
        }
        let (array, extra) = match item.cast::<PyTuple>() {
            Ok(pair) if pair.len() == 2 => {
                let extra = pair.get_item(1).map_err(|e| describe(py, &e))?;
                (pair.get_item(0).map_err(|e| describe(py, &e))?, Some(extra))
            }
            _ => (item.clone(), None),
        };
        let pixels = Pixels::of(py, &array).map_err(|e| describe(py, &e))?;
        let mut area = AttributeArea::copied(input.raw_attributes().unwrap_or(&[]))?;
        if let Some(extra) = extra {
            let dict = extra.cast::<PyDict>().map_err(|_| {
                "the second item of a returned pair must be a dict of attributes".to_string()
            })?;
            attrs::encode(dict, &mut area).map_err(|e| describe(py, &e))?;
        }
        let header = input.header();
        let meta = FrameMeta {
            frame_id: header.frame_id,
            timestamp_ns: header.timestamp_ns,
            dtype: pixels.dtype,
            dims: &pixels.dims,
            flags: 0,
        };
        Ok(out.send(port, &meta, pixels.bytes(), area.as_bytes(), &[])?)
    }
}

/// A C-contiguous NumPy array's bytes, with its ring dtype and dims.
struct Pixels<'py> {
    array: Bound<'py, PyUntypedArray>,
    dtype: Dtype,
    dims: Vec<u32>,
}

impl<'py> Pixels<'py> {
    fn of(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Pixels<'py>> {
        let array = py
            .import("numpy")?
            .call_method1("ascontiguousarray", (value,))?
            .cast_into::<PyUntypedArray>()?;
        let dtype =
            array::ring_dtype(&array.dtype()).map_err(pyo3::exceptions::PyTypeError::new_err)?;
        let dims = match array.shape() {
            [n] => vec![1, *n as u32],
            shape @ ([_, _] | [_, _, _] | [_, _, _, _]) => {
                shape.iter().map(|&d| d as u32).collect()
            }
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "a frame has 1 to 4 dimensions, (ny, nx) for an image; got shape {other:?}"
                )))
            }
        };
        if array.shape().iter().any(|&d| d > u32::MAX as usize) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "a frame dimension is larger than 2^32 - 1",
            ));
        }
        Ok(Pixels { array, dtype, dims })
    }

    fn bytes(&self) -> &[u8] {
        let len = self.array.len() * self.dtype.size();
        // SAFETY: a C-contiguous array (ascontiguousarray) of `len()` elements of the
        // dtype's size; `self.array` keeps it alive for the borrow of `self`.
        unsafe {
            let object = self.array.as_array_ptr();
            std::slice::from_raw_parts((*object).data.cast::<u8>(), len)
        }
    }
}

impl Processor for PyStage {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        let Some(object) = &self.object else {
            if !self.code.configure(key, value)? {
                self.user_args.insert(key.to_string(), value.clone());
            }
            return Ok(());
        };
        Python::attach(|py| {
            if !Self::has(py, object, "configure") {
                return Err("the class has no configure(args) method".to_string());
            }
            let change = toml::Table::from_iter([(key.to_string(), value.clone())]);
            let args = python_args(py, &change).map_err(|e| describe(py, &e))?;
            object
                .call_method1(py, "configure", (args,))
                .map(drop)
                .map_err(|e| describe(py, &e))
        })
        .map_err(Refused)
    }

    fn start(&mut self, _ctx: &StageContext) -> Result<(), ProcessError> {
        Python::attach(|py| {
            let object = construct(py, &self.code, &self.user_args)?;
            if object.hasattr("start").unwrap_or(false) {
                object.call_method0("start").map_err(|e| describe(py, &e))?;
            }
            self.object = Some(object.unbind());
            Ok(())
        })
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &RingFrame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let object = self.object.as_ref().ok_or("the stage did not start")?;
        Python::attach(|py| {
            let attributes = attrs::decode(frame.raw_attributes().unwrap_or(&[]));
            let (view, lease) =
                Frame::borrowed(py, frame.payload().as_ptr(), frame.header(), &attributes)
                    .map_err(|e| describe(py, &e))?;
            let view = Py::new(py, view).map_err(|e| describe(py, &e))?;
            let outcome = match object.call_method1(py, "process", (view.clone_ref(py),)) {
                Ok(result) => Self::publish(py, result.bind(py), frame, out),
                Err(e) => Err(describe(py, &e).into()),
            };
            view.borrow(py).release();
            drop(view);
            // The slot is released when this call returns: an array of it still alive
            // would see the slot's next frame.
            if Arc::strong_count(&lease) > 1 {
                return Err(format!(
                    "process() kept an array of frame {} after returning; keep a copy (frame.array.copy()) instead",
                    frame.header().frame_id
                )
                .into());
            }
            outcome
        })
    }

    fn stop(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        let Some(object) = &self.object else {
            return Ok(());
        };
        Python::attach(|py| {
            if Self::has(py, object, "stop") {
                object
                    .call_method0(py, "stop")
                    .map_err(|e| describe(py, &e))?;
            }
            Ok(())
        })
    }

    fn reset_counters(&mut self) {
        if let Some(object) = &self.object {
            Python::attach(|py| {
                if Self::has(py, object, "reset_stats") {
                    let _ = object.call_method0(py, "reset_stats");
                }
            });
        }
    }

    /// `get_stats()`: its whole-number values, shown by `status`, `top` and the metrics.
    fn counters(&self) -> Vec<(String, u64)> {
        let Some(object) = &self.object else {
            return Vec::new();
        };
        Python::attach(|py| stats_of(py, object))
    }
}

/// A counter's value: a non-negative whole number (an int, or a float that is one).
fn whole(value: &Bound<'_, PyAny>) -> Option<u64> {
    if let Ok(v) = value.extract::<u64>() {
        return Some(v);
    }
    let v = value.extract::<f64>().ok()?;
    (v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// A Python source: the items of its `frames()` iterator.
struct PySource {
    /// The class instance, for its `get_stats()`.
    object: Py<PyAny>,
    frames: Py<PyAny>,
    /// The largest frame the pipeline file declared (the ring's slots).
    capacity: u64,
    current: Option<(Py<PyAny>, AttributeArea)>,
}

impl PySource {
    /// An item: an array, `(array, attrs)`, or a dict with `array` and optional `id`,
    /// `timestamp_ns`, `attrs` and `missed` (frames lost before this one).
    fn take(
        &mut self,
        py: Python<'_>,
        item: &Bound<'_, PyAny>,
        next_id: u64,
    ) -> PyResult<SuppliedFrame> {
        let mut missed = 0;
        let (array, id, timestamp_ns, attributes) = if let Ok(dict) = item.cast::<PyDict>() {
            if let Some(m) = dict.get_item("missed")? {
                missed = m.extract::<u64>()?;
            }
            let array = dict.get_item("array")?.ok_or_else(|| {
                pyo3::exceptions::PyKeyError::new_err("a frame dict needs an 'array'")
            })?;
            let id = dict
                .get_item("id")?
                .map(|v| v.extract::<u64>())
                .transpose()?;
            let ts = dict
                .get_item("timestamp_ns")?
                .map(|v| v.extract::<u64>())
                .transpose()?;
            (array, id, ts, dict.get_item("attrs")?)
        } else if let Ok(pair) = item.cast::<PyTuple>() {
            (pair.get_item(0)?, None, None, pair.get_item(1).ok())
        } else {
            (item.clone(), None, None, None)
        };
        let pixels = Pixels::of(py, &array)?;
        let bytes = pixels.bytes().len() as u64;
        if bytes > self.capacity {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "a frame of shape {:?} {} ({bytes} bytes) is larger than the source declares ({} bytes); raise nx, ny or dtype in the pipeline file",
                pixels.dims,
                pixels.dtype.name(),
                self.capacity
            )));
        }
        let mut area = AttributeArea::default();
        if let Some(a) = attributes.filter(|a| !a.is_none()) {
            attrs::encode(a.cast::<PyDict>()?, &mut area)?;
        }
        let frame = SuppliedFrame {
            frame_id: id.unwrap_or(next_id),
            timestamp_ns,
            dtype: pixels.dtype,
            dims: Dims::new(&pixels.dims).expect("1 to 4 dims, checked in Pixels::of"),
            missed,
        };
        self.current = Some((pixels.array.into_any().unbind(), area));
        Ok(frame)
    }
}

impl Source for PySource {
    /// A `None` item is no frame yet (the source waited as long as it waits at once).
    fn next(&mut self, next_id: u64) -> Result<Next, String> {
        Python::attach(|py| {
            let item = match self.frames.bind(py).call_method0("__next__") {
                Ok(item) => item,
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                    return Ok(Next::End)
                }
                Err(e) => return Err(describe(py, &e)),
            };
            if item.is_none() {
                return Ok(Next::Idle);
            }
            self.take(py, &item, next_id)
                .map(Next::Frame)
                .map_err(|e| describe(py, &e))
        })
    }

    fn counters(&self) -> Vec<(String, u64)> {
        Python::attach(|py| stats_of(py, &self.object))
    }

    fn reset_counters(&mut self) {
        Python::attach(|py| reset_stats_of(py, &self.object));
    }

    fn write(&mut self, slot: &mut SlotWriter<'_>) -> Result<(), String> {
        let (array, area) = self.current.take().ok_or("no frame was made ready")?;
        Python::attach(|py| {
            let pixels = Pixels::of(py, array.bind(py)).map_err(|e| describe(py, &e))?;
            let bytes = pixels.bytes();
            let payload = slot.payload_mut();
            let room = payload.len();
            payload
                .get_mut(..bytes.len())
                .ok_or_else(|| {
                    format!(
                        "a frame of {} bytes does not fit a slot of {room}",
                        bytes.len()
                    )
                })?
                .copy_from_slice(bytes);
            slot.copy_attributes(area.as_bytes())
                .map_err(|e| e.to_string())
        })
    }
}
