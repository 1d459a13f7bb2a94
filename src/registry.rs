//! Every processor a pipeline file can name, the file writers included, and every kind
//! of source. It sits above [`crate::processors`], [`crate::writers`] and
//! [`crate::sources`], which know nothing of it: the pipeline and the control socket
//! create processors and sources here by name.

use crate::pipeline::plan::{SourceContent, SourcePlan};
use crate::processors::{
    metadata, passthrough, python, reductions, route, split, stitch, verify, zmq_push, Processor,
    Refused,
};
use crate::sources::{replay, sim, zmq::ZmqSource, Source};
use crate::writers::{hdf5, raw, tiff};

/// A processor the pipeline file can name.
pub struct Registration {
    pub name: &'static str,
    pub about: &'static str,
    pub create: fn() -> Box<dyn Processor>,
}

/// Every built-in processor, by name.
pub static REGISTRY: &[Registration] = &[
    Registration {
        name: "passthrough",
        about: "forwards frames unchanged (every = N keeps one frame id in N)",
        create: || Box::new(passthrough::Passthrough::default()),
    },
    Registration {
        name: "verify",
        about: "checks the ramp pattern of every frame and can record frame ids and attributes",
        create: || Box::new(verify::Verify::default()),
    },
    Registration {
        name: "split",
        about: "cuts each frame into tiles (tile = [ny, nx] or grid = [rows, cols])",
        create: || Box::new(split::Split::default()),
    },
    Registration {
        name: "stitch",
        about: "reassembles tiles into whole frames, in frame-id order",
        create: || Box::new(stitch::Stitch::default()),
    },
    Registration {
        name: "metadata",
        about: "attaches metadata channel values to frames by timestamp",
        create: || Box::new(metadata::AttachMetadata::default()),
    },
    Registration {
        name: "stats",
        about: "per-frame reductions: sum, mean, min, max, std, histogram, centroid, count above",
        create: || Box::new(reductions::Reduce::default()),
    },
    Registration {
        name: "route",
        about: "sends each frame to one output ring by a value of its attributes",
        create: || Box::new(route::Route::default()),
    },
    Registration {
        name: "python",
        about:
            "runs a Python class on every frame (file or module, class; PvaPy's processor shape)",
        create: || Box::new(python::PythonStage::default()),
    },
    Registration {
        name: "pva",
        about: "serves frames as an EPICS pvAccess NTNDArray channel (channel = NAME; p4p)",
        create: || Box::new(python::PythonStage::shipped("pva")),
    },
    Registration {
        name: "zmq",
        about: "publishes frames as DECTRIS Stream V2 on a ZeroMQ PUSH socket (receivers share it)",
        create: || Box::new(zmq_push::ZmqSink::default()),
    },
    Registration {
        name: "tiff",
        about: "writes one TIFF file per frame (tags: frame id, timestamp, attributes)",
        create: || Box::new(tiff::TiffWriter::default()),
    },
    Registration {
        name: "hdf5",
        about: "writes NXmx HDF5 files: SWMR, rollover, optional bitshuffle-LZ4",
        create: || Box::new(hdf5::Hdf5Writer::default()),
    },
    Registration {
        name: "raw",
        about: "appends frames to flat O_DIRECT files with a CSV index",
        create: || Box::new(raw::RawWriter::default()),
    },
];

/// Names of the registered processors, for messages.
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A new, unconfigured processor.
pub fn create(name: &str) -> Result<Box<dyn Processor>, String> {
    REGISTRY
        .iter()
        .find(|r| r.name == name)
        .map(|r| (r.create)())
        .ok_or_else(|| format!("unknown processor '{name}' (known: {})", names()))
}

/// Creates processor `name` and applies `args`; the error names the failing key.
pub fn build(name: &str, args: &toml::Table) -> Result<Box<dyn Processor>, ArgError> {
    let mut processor = create(name).map_err(|reason| ArgError { key: None, reason })?;
    for (key, value) in args {
        processor
            .configure(key, value)
            .map_err(|Refused(reason)| ArgError {
                key: Some(key.clone()),
                reason,
            })?;
    }
    Ok(processor)
}

/// A processor or one of its arguments was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// The argument at fault; `None` when the processor itself is unknown.
    pub key: Option<String>,
    pub reason: String,
}

/// Opens a built-in source from a validated plan.
pub type OpenSource = fn(&SourcePlan) -> Result<Box<dyn Source>, String>;

/// A source kind the pipeline file can name (`[source] kind`).
pub struct SourceKind {
    pub name: &'static str,
    pub about: &'static str,
    /// `None`: its frames come from the worker's host (the Python package), which makes
    /// the source itself.
    pub open: Option<OpenSource>,
}

/// Every source kind, by name.
pub static SOURCES: &[SourceKind] = &[
    SourceKind {
        name: "sim",
        about: "the simulator: ramp or random frames (the default kind)",
        open: Some(|plan| {
            let random = match plan.content {
                SourceContent::Ramp => false,
                SourceContent::Random => true,
                _ => return Err("the simulator makes ramp or random frames".into()),
            };
            Ok(Box::new(sim::open(random, plan.dtype, plan.ny, plan.nx)))
        }),
    },
    SourceKind {
        name: "replay",
        about: "frames replayed from an .npy stack or a TIFF series (chosen when replay is given)",
        open: Some(|plan| {
            let (dtype, ny, nx) = (plan.dtype, plan.ny, plan.nx);
            Ok(Box::new(match &plan.content {
                SourceContent::Npy(path) => replay::npy(path, dtype, ny, nx)?,
                SourceContent::Tiff(paths) => replay::tiff(paths, dtype, ny, nx)?,
                _ => return Err("a replay source reads an .npy stack or TIFF files".into()),
            }))
        }),
    },
    SourceKind {
        name: "python",
        about: "frames from a Python class's frames() generator",
        open: None,
    },
    SourceKind {
        name: "pva",
        about: "EPICS pvAccess NTNDArray frames, through the Python package (p4p)",
        open: None,
    },
    SourceKind {
        name: "zmq",
        about: "DECTRIS Stream V2 (CBOR over a ZeroMQ PULL socket): a detector or another streamd",
        open: Some(|plan| {
            let SourceContent::Zmq(settings) = &plan.content else {
                return Err("a zmq source needs its endpoint".into());
            };
            let source = ZmqSource::open(settings, plan.dtype, plan.ny, plan.nx)?;
            Ok(Box::new(source))
        }),
    },
];

/// Names of the source kinds, for messages.
pub fn source_kinds() -> String {
    SOURCES
        .iter()
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The source kind `name`.
pub fn source_kind(name: &str) -> Result<&'static SourceKind, String> {
    SOURCES.iter().find(|k| k.name == name).ok_or_else(|| {
        format!(
            "unknown source kind {} (known: {})",
            crate::units::quote(name),
            source_kinds()
        )
    })
}

/// Opens the built-in source a plan describes; a hosted one (Python, pva) is refused:
/// it runs in its interpreter.
pub fn open_source(plan: &SourcePlan) -> Result<Box<dyn Source>, String> {
    match source_kind(plan.content.kind())?.open {
        Some(open) => open(plan),
        None => Err("a Python source runs in its interpreter (python -m streamd._worker)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_names_the_failing_argument() {
        let args: toml::Table = toml::from_str("every = 0").unwrap();
        let err = build("passthrough", &args).err().unwrap();
        assert_eq!(err.key.as_deref(), Some("every"));
        assert_eq!(err.reason, "every must be a positive integer, got 0");
        assert!(build("nope", &toml::Table::new()).is_err());
    }
}
