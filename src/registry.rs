//! Every processor a pipeline file can name, the file writers included. It sits above
//! [`crate::processors`] and [`crate::writers`], which know nothing of it: the pipeline
//! and the control socket create processors here by name.

use crate::processors::{
    metadata, passthrough, python, reductions, route, split, stitch, verify, Processor, Refused,
};
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
