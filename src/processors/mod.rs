//! Frame processors: what a pipeline stage does to each frame — the counterpart of
//! PvaPy's `UserDataProcessor`. A processor is configured from its `args` table, started
//! once per worker, handed every input frame in place, stopped at the end of the stream,
//! and asked for its counters, which the worker publishes in the stats segment.
//!
//! Processors know frames and rings, nothing of processes: the stage worker
//! (`pipeline::worker`) owns the loop, the rings and the statistics.
//!
//! Adding one: write a type implementing [`Processor`], then add a line to
//! [`crate::registry::REGISTRY`], which names the processors and the writers and so sits
//! above both. The README walks through an example.

mod error;
pub mod metadata;
mod outputs;
pub(crate) mod passthrough;
pub mod python;
#[allow(unsafe_code)] // the AVX2 reduction, after the CPU check
pub mod reductions;
pub(crate) mod route;
pub(crate) mod split;
pub(crate) mod stitch;
pub(crate) mod verify;
pub(crate) mod zmq_push;

pub use error::{ProcessError, Refused};
pub use outputs::{ClaimWatch, OutputError, OutputSlot, Outputs};

use crate::ring::Frame;

/// An argument value as written in the pipeline file or given to `streamd configure`.
pub type ArgValue = toml::Value;

/// Where a processor instance runs.
#[derive(Debug, Clone)]
pub struct StageContext {
    pub stage: String,
    /// This worker's index in its stage, 0-based.
    pub worker: u32,
    pub workers: u32,
    /// Number of input rings (a collector has several).
    pub inputs: usize,
    /// The output rings the processor publishes to, by port (0, 1, ...).
    pub outputs: Vec<String>,
    /// How often this worker was restarted after a crash (a writer then continues its
    /// files instead of starting new ones).
    pub restarts: u64,
    /// The counters a crashed predecessor last showed. The worker shows these plus the
    /// processor's own, so totals continue across restarts; a writer that finds more on
    /// disk than they say counts the difference as its own (see the writers).
    pub previous: Vec<(String, u64)>,
}

/// The frames a stage reads, for sizing what it writes: what
/// [`Processor::output_bytes`] is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputFrames {
    /// The largest payload its input rings' slots hold.
    pub bytes: u64,
    /// The size of the pipeline source's frames.
    pub source_bytes: u64,
    /// `(ny, nx, bytes per pixel)` where the stage reads only the source's ring.
    pub shape: Option<(u32, u32, u64)>,
}

/// How a stage is connected: what [`Processor::check_wiring`] is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    pub inputs: usize,
    pub outputs: usize,
    /// Metadata rings (the stage's `metadata` key).
    pub metadata: usize,
    /// Worker processes of the stage.
    pub workers: u32,
    /// `(ny, nx)` of the frames the stage gets, where the pipeline file tells it (a
    /// stage that reads the source's ring); `None` where only the frames will.
    pub frame: Option<(u32, u32)>,
}

/// One stage's work on frames.
pub trait Processor: Send {
    /// Sets one argument. Called for every `args` entry before `start`, and at run time
    /// by `streamd configure`. On error the processor must be left exactly as it was;
    /// the message says what is wrong with the key or the value.
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused>;

    /// Arguments that cannot change while the stage runs (what the processor settled
    /// when it started: a socket bound, a file opened, a way of holding frames).
    /// `streamd configure` refuses a change of these before any worker sees it.
    fn fixed_while_running(&self) -> &'static [&'static str] {
        &[]
    }

    /// Refuses a stage whose rings do not suit the processor's arguments (checked when
    /// the pipeline file is read and again for `streamd configure`).
    fn check_wiring(&self, _wiring: &Wiring) -> Result<(), Refused> {
        Ok(())
    }

    /// Called once before the first frame.
    fn start(&mut self, _ctx: &StageContext) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Handles one frame that arrived on input ring `input`. Publishing to `out` is the
    /// only way results travel on. An error counts the frame as failed and goes on.
    fn process(
        &mut self,
        input: usize,
        frame: &Frame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError>;

    /// Whether the processor wants a frame from input `input` now. A collector whose
    /// inputs run apart (a stitcher with a full cache) reads only the inputs behind; the
    /// others wait in their lossless rings, which holds their producers back. When it
    /// wants none, every input is read.
    fn wants(&self, _input: usize) -> bool {
        true
    }

    /// Takes one record from a metadata ring (stages with a `metadata` key). Every
    /// record published before an input frame is handed over before that frame.
    fn metadata(&mut self, _record: &Frame<'_>) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called when no input frame came for a while (about 10 ms, 1 ms with metadata
    /// rings) and after metadata arrived: a processor holding frames can time them out.
    /// Every metadata record published before any frame it holds has been handed over.
    fn poll(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        Ok(())
    }

    /// How often a processor that makes its frames durable later than `process` (a
    /// writer buffering for the disk) calls for [`sync`](Self::sync). `Some` makes the
    /// worker hold every input frame in its ring until a sync has made it durable (spec
    /// §5.8), so a crash loses nothing: what was not yet durable is delivered again, and
    /// the processor recognises repeated frames by id. `None`: a frame is done when
    /// `process` returns.
    fn sync_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Makes everything handed over so far durable, or counts what could not be. Also
    /// called when the ring needs its slots back (the worker holds half a ring at most).
    fn sync(&mut self) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called once after every input ended, before the output rings end.
    fn stop(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        Ok(())
    }

    /// A standing problem the processor cannot get past by itself (a full disk, a
    /// folder gone), asked after a frame failed and while the worker shows it: the worker
    /// enters the `error` state with the reason, and drains the pipeline when
    /// `stop_pipeline` says so. `None` again returns the worker to `running`.
    fn fault(&self) -> Option<&Fault> {
        None
    }

    /// Checks what the processor needs outside the pipeline (an output folder it can
    /// write) once, in the supervisor, before any process starts or frame is taken;
    /// `workers` is the stage's worker count.
    fn prepare(&self, _workers: u32) -> Result<(), Refused> {
        Ok(())
    }

    /// Called once in the supervisor after every worker of the stage finished or failed
    /// (a writer ties its workers' files together here); `Ok(Some(text))` is a line for
    /// the run's summary.
    fn conclude(&self, _workers: u32) -> Result<Option<String>, ProcessError> {
        Ok(None)
    }

    /// Processor-specific counters (at most [`MAX_COUNTERS`]), shown by `status` and `top`.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Zeroes the processor's own counters, for `streamd reset-stats` (a Python class's
    /// `reset_stats`); the built-in processors' counters are totals that stay.
    fn reset_counters(&mut self) {}

    /// Counters that are levels (frames cached now, a mode flag), not totals: a
    /// restarted worker shows its own value of these, not its predecessor's plus its own.
    fn gauges(&self) -> &'static [&'static str] {
        &[]
    }

    /// Largest payload this processor publishes for `input`; sizes output rings that
    /// do not give their own size, and bounds a change of arguments at run time.
    fn output_bytes(&self, input: &InputFrames) -> u64 {
        input.bytes
    }
}

/// The refusal of a change to one of [`Processor::fixed_while_running`]'s arguments.
pub fn fixed_while_running(key: &str) -> Refused {
    Refused(format!(
        "{key} cannot change while the stage runs; restart the pipeline with the new value"
    ))
}

/// What [`Processor::fault`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub reason: String,
    pub stop_pipeline: bool,
}

/// How many processor counters a worker can publish.
pub const MAX_COUNTERS: usize = 32;

/// Parses the VALUE of `KEY=VALUE` as TOML (`3`, `2.5`, `true`, `"text"`, `[1, 2]`); a
/// bare word that is not TOML is taken as a string.
pub fn parse_value(text: &str) -> ArgValue {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| ArgValue::String(text.to_string()))
}

/// Reads a positive integer argument.
pub(crate) fn positive_integer(key: &str, value: &ArgValue) -> Result<u64, String> {
    match value.as_integer() {
        Some(n) if n > 0 => Ok(n as u64),
        _ => Err(format!("{key} must be a positive integer, got {value}")),
    }
}

/// Reads a number (integer or float) argument.
pub fn number(key: &str, value: &ArgValue) -> Result<f64, String> {
    match value {
        ArgValue::Integer(n) => Ok(*n as f64),
        ArgValue::Float(x) if x.is_finite() => Ok(*x),
        other => Err(format!("{key} must be a number, got {other}")),
    }
}

/// Reads a list of exactly `n` non-negative integers (`[ny, nx]`-style arguments).
pub(crate) fn integer_list(key: &str, value: &ArgValue, n: usize) -> Result<Vec<u64>, String> {
    let list = value.as_array().filter(|l| l.len() == n).and_then(|l| {
        l.iter()
            .map(|v| v.as_integer().filter(|&i| i >= 0).map(|i| i as u64))
            .collect::<Option<Vec<u64>>>()
    });
    list.ok_or_else(|| format!("{key} must be a list of {n} non-negative integers, got {value}"))
}

/// The (ny, nx) of a 2-D frame; processors that work on images refuse other shapes.
pub fn image_shape(
    processor: &str,
    header: &crate::ring::FrameHeader,
) -> Result<(u32, u32), String> {
    match header.dims[..] {
        [ny, nx] => Ok((ny, nx)),
        _ => Err(format!(
            "{processor} takes 2-D frames; frame {} has dims {:?}",
            header.frame_id, header.dims
        )),
    }
}

/// The message for a key a processor does not take.
pub fn unknown_key(processor: &str, key: &str, takes: &[&str]) -> String {
    format!(
        "{processor} has no argument '{key}' (it takes: {})",
        takes.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_toml_or_fall_back_to_text() {
        assert_eq!(parse_value("3"), ArgValue::Integer(3));
        assert_eq!(parse_value("true"), ArgValue::Boolean(true));
        assert_eq!(parse_value("\"a b\""), ArgValue::String("a b".into()));
        assert_eq!(parse_value("ramp"), ArgValue::String("ramp".into()));
    }
}
