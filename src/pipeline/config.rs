//! The pipeline file (TOML): parsing and validation. Everything a user can get wrong is
//! found here, before any ring or process exists, and reported as one sentence that
//! starts with `FILE:LINE:COLUMN:`.

use super::pinning;
use super::plan::{
    CoreChoice, MetadataPlan, Order, Pipeline, RestartPolicy, RingPlan, SourceContent, SourcePlan,
    StagePlan,
};
use crate::pattern::{NpyStack, TiffSeries};
use crate::processors::python::PythonCode;
use crate::processors::{self, Processor};
use crate::registry;
use crate::ring::{Delivery, Dtype, FullPolicy};
use crate::sources::zmq::ZmqSettings;
use crate::units::{quote, Rate, Seconds};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Longest ring segment name (`PIPELINE.RING.N`), from the ring layout.
const MAX_SEGMENT_NAME: usize = crate::ring::MAX_NAME_LEN;
const DEFAULT_SLOTS: u32 = 64;
/// Stages besides the source (the stats segment has 64 entries, one is the source's).
const MAX_STAGES: usize = 63;
/// Processor arguments of which a stage may give only one.
const EXCLUSIVE_ARGS: &[(&str, &str)] = &[("tile", "grid"), ("file", "module")];
/// Most slots a ring may have.
const MAX_SLOTS: u32 = 1 << 20;
/// Largest ring segment (as the ring itself refuses larger ones).
const MAX_RING_BYTES: u64 = 1 << 40;
/// Most sets a stage's input may be dealt round (`sets`).
const MAX_STAGE_SETS: u32 = 1024;

/// A configuration mistake, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ConfigError {
    /// `FILE:LINE:COLUMN`.
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.origin, self.line, self.column)
    }
}

// ---- The file as written ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Spanned<String>,
    drain_timeout_s: Option<Spanned<f64>>,
    /// Read as a value first: serde would take `restart = [1, 2]` as a struct.
    restart: Option<Spanned<toml::Value>>,
    #[serde(default, rename = "ring")]
    rings: Vec<Spanned<RawRing>>,
    source: Spanned<RawSource>,
    #[serde(default, rename = "stage")]
    stages: Vec<Spanned<RawStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRing {
    name: Spanned<String>,
    slots: Option<Spanned<u32>>,
    frame: Option<Spanned<RawShape>>,
    slot_bytes: Option<Spanned<u64>>,
    full_policy: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShape {
    nx: u32,
    ny: u32,
    dtype: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    ring: Spanned<String>,
    /// `python`: frames from a Python class's `frames()` (with file or module, class,
    /// python, args); `pva`: NTNDArray updates of an EPICS channel (channel, queue_size,
    /// until_disconnect, python); `zmq`: DECTRIS Stream V2 (endpoint, channel, shared);
    /// absent: the simulator (pattern) or replayed files.
    kind: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    queue_size: Option<Spanned<i64>>,
    until_disconnect: Option<Spanned<bool>>,
    python: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    module: Option<Spanned<String>>,
    class: Option<Spanned<String>>,
    args: Option<Spanned<toml::Table>>,
    pattern: Option<Spanned<String>>,
    replay: Option<Spanned<String>>,
    nx: Option<u32>,
    ny: Option<u32>,
    dtype: Option<Spanned<String>>,
    fps: Option<Spanned<f64>>,
    frames: Option<u64>,
    cores: Option<Spanned<RawCores>>,
    metadata: Option<Spanned<RawMetadata>>,
    /// `zmq`: the sender's PUSH socket, and whether other receivers share it.
    endpoint: Option<Spanned<String>>,
    shared: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    ring: Spanned<String>,
    channels: Spanned<String>,
    #[serde(default)]
    jitter_us: f64,
    #[serde(default)]
    gap_every: u64,
    queue_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    processor: Spanned<String>,
    input: Spanned<OneOrMany>,
    output: Option<Spanned<OneOrMany>>,
    metadata: Option<Spanned<OneOrMany>>,
    workers: Option<Spanned<u32>>,
    batch: Option<Spanned<u32>>,
    delivery: Option<Spanned<String>>,
    #[serde(default)]
    broadcast: bool,
    sets: Option<Spanned<u32>>,
    set: Option<Spanned<u32>>,
    order: Option<Spanned<String>>,
    after: Option<Spanned<String>>,
    cores: Option<Spanned<RawCores>>,
    #[serde(default)]
    args: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The ring names of `key = "a"` or `key = ["a", "b"]`; none when the key is absent.
    fn list(value: Option<&Spanned<OneOrMany>>) -> Vec<String> {
        match value.map(Spanned::get_ref) {
            None => Vec::new(),
            Some(OneOrMany::One(r)) => vec![r.clone()],
            Some(OneOrMany::Many(list)) => list.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCores {
    Word(String),
    List(Vec<usize>),
}

// ---- Loading ----------------------------------------------------------------------------

impl Pipeline {
    /// Reads and validates `path`. `name` replaces the file's pipeline name (to run two
    /// copies of one file side by side).
    pub fn load(path: &Path, name: Option<&str>) -> Result<Pipeline, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the pipeline file: {e}"),
        })?;
        // Absolute, so replayed files are found whatever folder the stages run in.
        let base = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Pipeline::parse(&text, &origin, &base, name)
    }

    /// Validates pipeline text; relative replay paths are taken from `base`.
    pub fn parse(
        text: &str,
        origin: &str,
        base: &Path,
        name: Option<&str>,
    ) -> Result<Pipeline, ConfigError> {
        let v = Validator { text, origin };
        let raw: RawPipeline = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            // serde says "field"; the file has keys.
            let mut message = e
                .message()
                .trim_end_matches('\n')
                .replace('\n', " ")
                .replace("unknown field", "unknown key")
                .replace("missing field", "missing key");
            if message.starts_with("duplicate key") {
                // Name the key: the span points at it.
                let key: String = text[at.min(text.len())..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                message = format!(
                    "key {} is given twice; give it once (each ring and stage is its own [[ring]] or [[stage]] table, with double brackets)",
                    quote(&key)
                );
            }
            v.error(at..at, message)
        })?;
        v.pipeline(raw, base, name)
    }
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
}

/// A `[[ring]]` as checked so far: its plan, where the file declares it, and the slot
/// size it declares (`None`: sized from its producer).
struct Declared<'r> {
    plan: RingPlan,
    raw: &'r Spanned<RawRing>,
    bytes: Option<u64>,
}

/// The declared rings, in file order, and who writes each (by position).
struct Rings<'r> {
    declared: Vec<Declared<'r>>,
    writer_of: HashMap<usize, String>,
}

/// The rings a stage reads and writes, by name.
struct StageRings {
    inputs: Vec<String>,
    metadata: Vec<String>,
    outputs: Vec<String>,
}

impl Rings<'_> {
    fn index(&self, name: &str) -> Option<usize> {
        self.declared.iter().position(|d| d.plan.name == name)
    }
}

/// Checks a pipeline name given outside the file (`--name`); the message starts with
/// the quoted name.
pub fn check_pipeline_name(name: &str) -> Result<(), String> {
    check_name("pipeline", name, 16).map_err(|m| m.trim_start_matches("pipeline name ").to_string())
}

impl Validator<'_> {
    /// The Python class of a `kind = "python"` or `kind = "pva"` source, `None` for the
    /// simulator; each kind's keys are refused on the others.
    fn python_source(
        &self,
        src: &RawSource,
        base: &Path,
    ) -> Result<Option<SourceContent>, ConfigError> {
        let keys = [
            ("python", &src.python),
            ("file", &src.file),
            ("module", &src.module),
            ("class", &src.class),
        ];
        let pva_keys = [
            src.channel.as_ref().map(|v| ("channel", v.span())),
            src.queue_size.as_ref().map(|v| ("queue_size", v.span())),
            src.until_disconnect
                .as_ref()
                .map(|v| ("until_disconnect", v.span())),
        ];
        let zmq_keys = [
            src.endpoint.as_ref().map(|v| ("endpoint", v.span())),
            src.shared.as_ref().map(|v| ("shared", v.span())),
        ];
        if src.kind.as_ref().is_none_or(|k| k.get_ref() != "zmq") {
            if let Some((key, span)) = zmq_keys.iter().flatten().next() {
                return Err(self.error(
                    span.clone(),
                    format!("{key} belongs to a Stream V2 source; add kind = \"zmq\""),
                ));
            }
        }
        let kind = match src.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
            Some((k, "python")) => k,
            Some((k, "pva")) => return self.pva_source(src, k).map(Some),
            Some((k, "zmq")) => return self.zmq_source(src, k).map(Some),
            Some((k, other)) if other == "sim" || other == "replay" => {
                return Err(self.at(
                    k,
                    format!("kind = \"{other}\" is the default: leave kind out for the simulator (pattern) or replayed files (replay)"),
                ))
            }
            Some((k, other)) => {
                let known: Vec<&str> = registry::SOURCES.iter().map(|k| k.name).collect();
                return Err(self.at(
                    k,
                    format!(
                        "unknown source kind {} (known: {}; leave kind out for the simulator or replayed files)",
                        quote(other),
                        known.join(", ")
                    ),
                ))
            }
            None => {
                if let Some((key, span)) = pva_keys.iter().flatten().next() {
                    return Err(self.error(
                        span.clone(),
                        format!("{key} belongs to an EPICS source; add kind = \"pva\""),
                    ));
                }
                let stray = keys.iter().find_map(|(_, v)| v.as_ref());
                return match stray.or(None) {
                    Some(v) => Err(self.at(v, "file, module, class and python belong to a Python source; add kind = \"python\"")),
                    None => match &src.args {
                        Some(a) => Err(self.at(a, "args belong to a Python source; add kind = \"python\"")),
                        None => Ok(None),
                    },
                };
            }
        };
        if let Some((key, span)) = pva_keys.iter().flatten().next() {
            return Err(self.error(
                span.clone(),
                format!("{key} belongs to kind = \"pva\"; a Python source takes its own arguments in args"),
            ));
        }
        let mut code = PythonCode::default();
        for (key, value) in keys {
            if let Some(v) = value {
                let text = match key {
                    "file" => base.join(v.get_ref()).display().to_string(),
                    _ => v.get_ref().clone(),
                };
                code.configure(key, &toml::Value::String(text))
                    .map_err(|m| self.at(v, m))?;
            }
        }
        code.check_complete()
            .map_err(|m| self.at(kind, m.replace("Python stage", "Python source")))?;
        let args = src
            .args
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default();
        Ok(Some(SourceContent::Python {
            kind: "python".into(),
            code,
            args,
        }))
    }

    /// `kind = "zmq"`: DECTRIS Stream V2 from the PUSH socket at `endpoint`.
    fn zmq_source(
        &self,
        src: &RawSource,
        kind: &Spanned<String>,
    ) -> Result<SourceContent, ConfigError> {
        let stray = [
            ("file", src.file.as_ref().map(Spanned::span)),
            ("module", src.module.as_ref().map(Spanned::span)),
            ("class", src.class.as_ref().map(Spanned::span)),
            ("python", src.python.as_ref().map(Spanned::span)),
            ("args", src.args.as_ref().map(Spanned::span)),
            ("queue_size", src.queue_size.as_ref().map(Spanned::span)),
            (
                "until_disconnect",
                src.until_disconnect.as_ref().map(Spanned::span),
            ),
            ("fps", src.fps.as_ref().map(Spanned::span)),
        ];
        if let Some((key, span)) = stray.iter().find_map(|(k, s)| s.clone().map(|s| (k, s))) {
            return Err(self.error(
                span,
                format!("{key} does not belong to a zmq source (it takes endpoint, channel, shared, nx, ny, dtype and frames; frames come when the detector sends them)"),
            ));
        }
        let mut settings = ZmqSettings::default();
        for (key, value) in [
            (
                "endpoint",
                src.endpoint
                    .as_ref()
                    .map(|v| (v.span(), toml::Value::String(v.get_ref().clone()))),
            ),
            (
                "channel",
                src.channel
                    .as_ref()
                    .map(|v| (v.span(), toml::Value::String(v.get_ref().clone()))),
            ),
            (
                "shared",
                src.shared
                    .as_ref()
                    .map(|v| (v.span(), toml::Value::Boolean(*v.get_ref()))),
            ),
        ] {
            if let Some((span, value)) = value {
                settings
                    .configure(key, &value)
                    .map_err(|m| self.error(span, m))?;
            }
        }
        settings.check_complete().map_err(|m| self.at(kind, m))?;
        Ok(SourceContent::Zmq(settings))
    }

    /// `kind = "pva"`: the package's pvAccess source (`streamd.pva.Source`), monitoring
    /// `channel`.
    fn pva_source(
        &self,
        src: &RawSource,
        kind: &Spanned<String>,
    ) -> Result<SourceContent, ConfigError> {
        for (key, value) in [
            ("file", &src.file),
            ("module", &src.module),
            ("class", &src.class),
        ] {
            if let Some(v) = value {
                return Err(self.at(
                    v,
                    format!("{key} belongs to kind = \"python\"; a pva source runs the package's own class"),
                ));
            }
        }
        if let Some(a) = &src.args {
            return Err(self.at(
                a,
                "a pva source takes channel, queue_size and until_disconnect, not args",
            ));
        }
        let Some(channel) = &src.channel else {
            return Err(self.at(
                kind,
                "a pva source needs channel = \"PV name\" (the NTNDArray channel to monitor)",
            ));
        };
        let name = channel.get_ref();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.at(channel, "channel must be a PV name without spaces"));
        }
        let mut args = toml::Table::new();
        args.insert("channel".into(), toml::Value::String(name.clone()));
        if let Some(q) = &src.queue_size {
            if !(0..=1_000_000).contains(q.get_ref()) {
                return Err(self.at(
                    q,
                    format!("queue_size must be 0 to 1000000, got {}", q.get_ref()),
                ));
            }
            args.insert("queue_size".into(), toml::Value::Integer(*q.get_ref()));
        }
        if let Some(u) = &src.until_disconnect {
            args.insert(
                "until_disconnect".into(),
                toml::Value::Boolean(*u.get_ref()),
            );
        }
        if let Some(n) = src.frames {
            // A count of frames taken: the channel numbers its own (uniqueId).
            let n = i64::try_from(n).map_err(|_| self.at(kind, "frames is too large"))?;
            args.insert("frames".into(), toml::Value::Integer(n));
        }
        let mut code = PythonCode {
            module: Some(processors::python::PVA_MODULE.into()),
            class: Some("Source".into()),
            ..PythonCode::default()
        };
        if let Some(p) = &src.python {
            code.configure("python", &toml::Value::String(p.get_ref().clone()))
                .map_err(|m| self.at(p, m))?;
        }
        Ok(SourceContent::Python {
            kind: "pva".into(),
            code,
            args,
        })
    }
}

fn check_name(kind: &str, name: &str, max: usize) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= max
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {} is invalid: use 1 to {max} characters from A-Z a-z 0-9 _ -",
            quote(name)
        ))
    }
}

impl Validator<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let at = span.start.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError {
            origin: self.origin.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// The stage's `set` of `sets` (both or neither; the set below the sets).
    fn stage_set(&self, stage: &str, st: &RawStage) -> Result<Option<(u32, u32)>, ConfigError> {
        match (&st.set, &st.sets) {
            (None, None) => Ok(None),
            (Some(one), None) | (None, Some(one)) => Err(self.at(
                one,
                format!("stage '{stage}': set and sets go together; give both (set 0 to sets - 1)"),
            )),
            (Some(set), Some(sets)) => {
                let (set_n, sets_n) = (*set.get_ref(), *sets.get_ref());
                if !(1..=MAX_STAGE_SETS).contains(&sets_n) {
                    return Err(self.at(
                        sets,
                        format!(
                            "stage '{stage}': sets must be 1 to {MAX_STAGE_SETS}, got {sets_n}"
                        ),
                    ));
                }
                if set_n >= sets_n {
                    return Err(self.at(
                        set,
                        format!("stage '{stage}': set {set_n} does not exist among {sets_n} sets; use 0 to {}", sets_n - 1),
                    ));
                }
                Ok(Some((set_n, sets_n)))
            }
        }
    }

    fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.error(s.span(), message)
    }

    /// The `[restart]` table, each key checked where it is written.
    fn restart(&self, raw: Option<&Spanned<toml::Value>>) -> Result<RestartPolicy, ConfigError> {
        let mut policy = RestartPolicy::default();
        let Some(raw) = raw else {
            return Ok(policy);
        };
        let Some(table) = raw.get_ref().as_table() else {
            return Err(self.at(
                raw,
                "restart must be a table: write [restart] with max_crashes, window_s and backoff_ms on their own lines",
            ));
        };
        // Values of an inline or [restart] table carry no spans of their own: find each
        // key's line in the text after the table's start.
        let key_at = |key: &str| -> Range<usize> {
            let from = raw.span().start.min(self.text.len());
            self.text[from..]
                .find(key)
                .map_or(raw.span(), |i| from + i..from + i + key.len())
        };
        for (key, value) in table {
            let integer = |min: i64, max: i64| -> Result<i64, ConfigError> {
                match value.as_integer() {
                    Some(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(self.error(
                        key_at(key),
                        format!(
                            "restart.{key} must be an integer from {min} to {max}, got {value}"
                        ),
                    )),
                }
            };
            match key.as_str() {
                "max_crashes" => policy.max_crashes = integer(1, 1_000_000)? as u32,
                "backoff_ms" => policy.backoff_ms = integer(0, 60_000)? as u64,
                "window_s" => {
                    let n = value
                        .as_float()
                        .or_else(|| value.as_integer().map(|i| i as f64));
                    policy.window_s = n
                        .ok_or_else(|| {
                            format!("restart.window_s must be a number of seconds, got {value}")
                        })
                        .and_then(|n| Seconds::positive(n, "restart.window_s"))
                        .map_err(|m| self.error(key_at(key), m))?
                        .get();
                }
                other => {
                    return Err(self.error(
                        key_at(other),
                        format!(
                            "unknown key {} in [restart]; use max_crashes, window_s or backoff_ms",
                            quote(other)
                        ),
                    ))
                }
            }
        }
        Ok(policy)
    }

    fn cores(&self, raw: Option<&Spanned<RawCores>>) -> Result<CoreChoice, ConfigError> {
        let Some(raw) = raw else {
            return Ok(CoreChoice::Auto);
        };
        match raw.get_ref() {
            RawCores::Word(w) if w == "auto" => Ok(CoreChoice::Auto),
            RawCores::Word(w) => Err(self.at(
                raw,
                format!("cores must be \"auto\" or a list of core ids, not \"{w}\""),
            )),
            RawCores::List(list) if list.is_empty() => {
                Err(self.at(raw, "cores is an empty list; give core ids or \"auto\""))
            }
            RawCores::List(list) => {
                let available = pinning::available_cores();
                if let Some(bad) = list.iter().find(|c| !available.contains(c)) {
                    return Err(self.at(
                        raw,
                        format!(
                            "core {bad} is not available on this host (available: {}); use ids from that list or \"auto\"",
                            pinning::describe(&available)
                        ),
                    ));
                }
                Ok(CoreChoice::List(list.clone()))
            }
        }
    }

    /// The whole file, checked step by step in the order its parts depend on each other:
    /// settings, rings, the source, the stages, then what needs them all (producers,
    /// cycles, ring sizes, segment names).
    fn pipeline(
        &self,
        raw: RawPipeline,
        base: &Path,
        name_override: Option<&str>,
    ) -> Result<Pipeline, ConfigError> {
        let name = name_override.map_or_else(|| raw.name.get_ref().clone(), str::to_string);
        check_name("pipeline", &name, 16).map_err(|m| self.at(&raw.name, m))?;
        let drain_timeout = match &raw.drain_timeout_s {
            None => Duration::from_secs(10),
            Some(s) => Seconds::positive(*s.get_ref(), "drain_timeout_s")
                .map_err(|m| self.at(s, m))?
                .duration(),
        };
        let restart = self.restart(raw.restart.as_ref())?;
        if raw.stages.len() > MAX_STAGES {
            return Err(self.at(
                &raw.stages[MAX_STAGES].get_ref().name,
                format!(
                    "a pipeline has at most {MAX_STAGES} stages besides its source; this is stage {}",
                    MAX_STAGES + 1
                ),
            ));
        }
        let mut rings = Rings {
            declared: Vec::new(),
            writer_of: HashMap::new(),
        };
        for r in &raw.rings {
            let ring = self.ring(r, &rings.declared)?;
            rings.declared.push(ring);
        }
        let source = self.source(&raw.source, base, &mut rings)?;
        let mut stages = Vec::new();
        let mut processors_built = Vec::new();
        for s in &raw.stages {
            let (stage, processor) = self.stage(s, &stages, &source, base, &mut rings)?;
            stages.push(stage);
            processors_built.push(processor);
        }
        self.group_tables(&raw.stages, &stages)?;
        self.worker_total(&raw.stages, &stages)?;
        self.producers(&mut rings, &stages)?;
        // No cycles; the order also sizes rings from their producers.
        let order = self.topological(&raw, &stages)?;
        let bytes = self.ring_sizes(&raw, &rings, &source, &stages, &processors_built, &order)?;
        let rings = self.ring_plans(rings, bytes, &name)?;
        Ok(Pipeline {
            name,
            origin: self.origin.to_string(),
            drain_timeout,
            restart,
            rings,
            source,
            stages,
        })
    }

    /// One `[[ring]]` after the `earlier` ones: its name, slots, full policy and the
    /// frame or slot size it declares (`None`: sized from its producer).
    fn ring<'r>(
        &self,
        r: &'r Spanned<RawRing>,
        earlier: &[Declared<'_>],
    ) -> Result<Declared<'r>, ConfigError> {
        let ring = r.get_ref();
        let rn = &ring.name;
        check_name("ring", rn.get_ref(), 24).map_err(|m| self.at(rn, m))?;
        if earlier.iter().any(|d| &d.plan.name == rn.get_ref()) {
            return Err(self.at(rn, format!("ring '{}' is declared twice", rn.get_ref())));
        }
        let slots = match &ring.slots {
            None => DEFAULT_SLOTS,
            Some(s) if (1..=MAX_SLOTS).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                return Err(self.at(
                    s,
                    format!("slots must be 1 to {MAX_SLOTS}, got {}", s.get_ref()),
                ))
            }
        };
        let full_policy = match &ring.full_policy {
            None => FullPolicy::Block,
            Some(p) => p.get_ref().parse().map_err(|m: String| self.at(p, m))?,
        };
        let frame_bytes = match &ring.frame {
            None => None,
            Some(f) => {
                let shape = f.get_ref();
                let dtype: Dtype = shape
                    .dtype
                    .get_ref()
                    .parse()
                    .map_err(|m: String| self.at(&shape.dtype, m))?;
                if shape.nx == 0 || shape.ny == 0 {
                    return Err(self.at(f, "frame nx and ny must be at least 1"));
                }
                Some(u64::from(shape.nx) * u64::from(shape.ny) * dtype.size() as u64)
            }
        };
        let declared = match (&ring.slot_bytes, frame_bytes) {
            (Some(s), Some(fb)) if *s.get_ref() < fb => {
                return Err(self.at(
                    s,
                    format!(
                        "ring '{}' has slot_bytes {} but its frame needs {fb} bytes; raise slot_bytes or drop it",
                        rn.get_ref(),
                        s.get_ref()
                    ),
                ))
            }
            (Some(s), _) if *s.get_ref() == 0 => {
                return Err(self.at(s, "slot_bytes must be at least 1"))
            }
            (Some(s), _) => Some(*s.get_ref()),
            (None, fb) => fb,
        };
        Ok(Declared {
            plan: RingPlan {
                name: rn.get_ref().clone(),
                slots,
                slot_bytes: declared.unwrap_or(0),
                full_policy,
                writers: 1,
            },
            raw: r,
            bytes: declared,
        })
    }

    /// The `[source]` table: the ring it writes, its rate, its frames (a pattern,
    /// replayed files or a Python class) and the metadata it publishes beside them.
    /// Returns the plan and the bytes of one frame.
    fn source(
        &self,
        raw: &Spanned<RawSource>,
        base: &Path,
        rings: &mut Rings<'_>,
    ) -> Result<SourcePlan, ConfigError> {
        let src = raw.get_ref();
        let src_ring = rings.index(src.ring.get_ref()).ok_or_else(|| {
            self.at(
                &src.ring,
                format!(
                    "the source writes ring '{}', which no [[ring]] declares",
                    src.ring.get_ref()
                ),
            )
        })?;
        let fps = match &src.fps {
            None => 0.0,
            Some(f) => Rate::new(*f.get_ref(), "fps")
                .map_err(|m| self.at(f, m))?
                .get(),
        };
        let python = self.python_source(src, base)?;
        let (content, nx, ny, dtype, frames) = self.source_frames(raw, python, base)?;
        rings.writer_of.insert(src_ring, "the source".to_string());
        let metadata = match &src.metadata {
            None => None,
            Some(m) => Some(self.source_metadata(m, &content, rings)?),
        };
        let source = SourcePlan {
            ring: src.ring.get_ref().clone(),
            content,
            nx,
            ny,
            dtype,
            fps,
            frames,
            cores: self.cores(src.cores.as_ref())?,
            metadata,
        };
        Ok(source)
    }

    /// What the source's frames are: content, nx, ny, dtype and how many (`None`: until
    /// stopped).
    fn source_frames(
        &self,
        raw: &Spanned<RawSource>,
        python: Option<SourceContent>,
        base: &Path,
    ) -> Result<(SourceContent, u32, u32, Dtype, Option<u64>), ConfigError> {
        let src = raw.get_ref();
        Ok(match (&src.pattern, &src.replay) {
            (pattern, replay) if python.is_some() => {
                let who = python.as_ref().map_or("", SourceContent::kind);
                if let Some(other) = pattern.as_ref().or(replay.as_ref()) {
                    return Err(self.at(
                        other,
                        format!("a {who} source makes its own frames; remove pattern and replay"),
                    ));
                }
                let (Some(nx), Some(ny)) = (src.nx, src.ny) else {
                    return Err(self.at(
                        raw,
                        format!("a {who} source declares the largest frame it takes: set nx and ny (and dtype, u16 by default)"),
                    ));
                };
                let dtype = match &src.dtype {
                    None => Dtype::U16,
                    Some(d) => d.get_ref().parse().map_err(|m: String| self.at(d, m))?,
                };
                if nx == 0 || ny == 0 {
                    return Err(self.at(raw, "the source's nx and ny must be at least 1"));
                }
                let content = python.expect("matched");
                // A pva source counts the frames it takes itself (see pva_source).
                let frames = match &content {
                    SourceContent::Python { kind, .. } if kind == "pva" => None,
                    _ => src.frames,
                };
                (content, nx, ny, dtype, frames)
            }
            (Some(p), Some(_)) => {
                return Err(self.at(p, "the source has both pattern and replay; keep one"))
            }
            (_, Some(replay)) => {
                if src.nx.is_some() || src.ny.is_some() || src.dtype.is_some() {
                    return Err(self.at(
                        replay,
                        "a replayed source takes its shape from its files; remove nx, ny and dtype",
                    ));
                }
                let path = base.join(replay.get_ref());
                if replay.get_ref().ends_with(".npy") {
                    let stack = NpyStack::open(&path).map_err(|m| self.at(replay, m))?;
                    let n = stack.frames() as u64;
                    (
                        SourceContent::Npy(path),
                        stack.nx,
                        stack.ny,
                        stack.dtype,
                        src.frames.or(Some(n)),
                    )
                } else {
                    let series = TiffSeries::open(&path).map_err(|m| self.at(replay, m))?;
                    let n = series.frames() as u64;
                    let files = series.paths().to_vec();
                    (
                        SourceContent::Tiff(files),
                        series.nx,
                        series.ny,
                        series.dtype,
                        src.frames.or(Some(n)),
                    )
                }
            }
            (pattern, None) => {
                let content = match pattern.as_ref().map(|p| (p, p.get_ref().as_str())) {
                    None | Some((_, "ramp")) => SourceContent::Ramp,
                    Some((_, "random")) => SourceContent::Random,
                    Some((p, other)) => {
                        return Err(self.at(
                            p,
                            format!("unknown pattern '{other}' (use ramp or random, or replay = \"FILE.npy\" or \"DIR/*.tif\")"),
                        ))
                    }
                };
                let dtype = match &src.dtype {
                    None => Dtype::U16,
                    Some(d) => d.get_ref().parse().map_err(|m: String| self.at(d, m))?,
                };
                let (nx, ny) = (src.nx.unwrap_or(512), src.ny.unwrap_or(512));
                if nx == 0 || ny == 0 {
                    return Err(self.at(raw, "the source's nx and ny must be at least 1"));
                }
                (content, nx, ny, dtype, src.frames)
            }
        })
    }

    /// The source's `metadata` table: its own ring and the channels it publishes,
    /// simulated or read from PVs (by a `content` that runs in Python).
    fn source_metadata(
        &self,
        m: &Spanned<RawMetadata>,
        content: &SourceContent,
        rings: &mut Rings<'_>,
    ) -> Result<MetadataPlan, ConfigError> {
        let raw = m.get_ref();
        let ring = rings.index(raw.ring.get_ref()).ok_or_else(|| {
            self.at(
                &raw.ring,
                format!(
                    "the source's metadata goes to ring '{}', which no [[ring]] declares",
                    raw.ring.get_ref()
                ),
            )
        })?;
        if rings.writer_of.insert(ring, "the source".into()).is_some() {
            return Err(self.at(
                &raw.ring,
                "the metadata ring must differ from the frame ring",
            ));
        }
        if !(raw.jitter_us >= 0.0 && raw.jitter_us.is_finite()) {
            return Err(self.at(
                m,
                "jitter_us must be 0 or a positive number of microseconds",
            ));
        }
        let Some(pvs) = MetadataPlan::parse_pvs(raw.channels.get_ref()) else {
            if raw.queue_size.is_some() {
                return Err(self.at(
                    m,
                    "queue_size belongs to channels read from PVs (pva://NAME, ca://NAME)",
                ));
            }
            return Ok(MetadataPlan {
                ring: raw.ring.get_ref().clone(),
                channels: MetadataPlan::parse_channels(raw.channels.get_ref())
                    .map_err(|e| self.at(&raw.channels, e))?,
                jitter_ns: (raw.jitter_us * 1000.0).round() as u64,
                gap_every: raw.gap_every,
                pvs: Vec::new(),
                queue_size: 0,
            });
        };
        let pvs = pvs.map_err(|e| self.at(&raw.channels, e))?;
        if !matches!(content, SourceContent::Python { .. }) {
            return Err(self.at(&raw.channels, "channels read from PVs need a source that runs in Python: kind = \"pva\" or kind = \"python\""));
        }
        if raw.jitter_us != 0.0 || raw.gap_every != 0 {
            return Err(self.at(
                m,
                "jitter_us and gap_every shape simulated channels; PV channels bring their own values",
            ));
        }
        let queue_size = match raw.queue_size {
            None => 0,
            Some(q) if (0..=1_000_000).contains(&q) => q as u32,
            Some(q) => return Err(self.at(m, format!("queue_size must be 0 to 1000000, got {q}"))),
        };
        Ok(MetadataPlan {
            ring: raw.ring.get_ref().clone(),
            channels: Vec::new(),
            jitter_ns: 0,
            gap_every: 0,
            pvs,
            queue_size,
        })
    }

    /// One `[[stage]]` after the `earlier` ones: its rings (each written by one producer),
    /// workers, delivery and processor, whose arguments and wiring are checked by the
    /// processor itself. Returns the plan and the configured processor (which sizes the
    /// stage's output rings).
    fn stage(
        &self,
        s: &Spanned<RawStage>,
        earlier: &[StagePlan],
        source: &SourcePlan,
        base: &Path,
        rings: &mut Rings<'_>,
    ) -> Result<(StagePlan, Box<dyn Processor>), ConfigError> {
        let st = s.get_ref();
        check_name("stage", st.name.get_ref(), 24).map_err(|m| self.at(&st.name, m))?;
        if earlier.iter().any(|p| &p.name == st.name.get_ref()) {
            return Err(self.at(
                &st.name,
                format!("stage '{}' is declared twice", st.name.get_ref()),
            ));
        }
        let stage_name = st.name.get_ref().clone();
        let StageRings {
            inputs,
            metadata,
            outputs,
        } = self.stage_rings(st, &stage_name, rings)?;
        let positive = |v: &Option<Spanned<u32>>, key: &str| -> Result<u32, ConfigError> {
            match v {
                None => Ok(1),
                Some(n) if *n.get_ref() >= 1 => Ok(*n.get_ref()),
                Some(n) => Err(self.at(n, format!("{key} must be at least 1"))),
            }
        };
        let workers = positive(&st.workers, "workers")?;
        if workers > 64 {
            return Err(self.at(
                st.workers.as_ref().expect("set"),
                "workers must be at most 64",
            ));
        }
        let batch = positive(&st.batch, "batch")?;
        let delivery = match &st.delivery {
            None => Delivery::Lossless,
            Some(d) => d.get_ref().parse().map_err(|m: String| self.at(d, m))?,
        };
        let set = self.stage_set(&stage_name, st)?;
        let order = self.stage_order(&stage_name, st)?;
        let after = self.stage_after(&stage_name, st, &inputs, earlier)?;
        let (processor, args) = self.stage_processor(st, &stage_name, base)?;
        processor
            .check_wiring(&processors::Wiring {
                inputs: inputs.len(),
                outputs: outputs.len(),
                metadata: metadata.len(),
                workers,
                // Frames straight from the source have its shape.
                frame: inputs
                    .iter()
                    .all(|i| *i == source.ring)
                    .then_some((source.ny, source.nx)),
            })
            .map_err(|m| self.at(&st.processor, format!("stage '{stage_name}': {m}")))?;
        // `NAME.63` for broadcast groups and metadata groups (`NAME.m63`).
        let longest_group = if metadata.is_empty() {
            stage_name.len() + if st.broadcast { 3 } else { 0 }
        } else {
            stage_name.len() + 4
        };
        if longest_group > MAX_SEGMENT_NAME {
            return Err(self.at(&st.name, format!("stage name '{stage_name}' is too long for a ring group; use at most 27 characters")));
        }
        let cores = self.cores(st.cores.as_ref())?;
        let mut at = BTreeMap::new();
        at.insert(
            "processor".to_string(),
            self.at(&st.processor, "").location(),
        );
        for (key, value) in &st.args {
            at.insert(key.clone(), self.at(value, "").location());
        }
        let plan = StagePlan {
            at,
            name: stage_name,
            processor: st.processor.get_ref().clone(),
            args,
            inputs,
            outputs,
            metadata,
            workers,
            batch,
            delivery,
            broadcast: st.broadcast,
            set,
            order,
            after,
            cores,
        };
        Ok((plan, processor))
    }

    /// A stage's inputs, metadata rings and outputs: each declared, each output written by
    /// this stage alone.
    fn stage_rings(
        &self,
        st: &RawStage,
        stage_name: &str,
        rings: &mut Rings<'_>,
    ) -> Result<StageRings, ConfigError> {
        let inputs = OneOrMany::list(Some(&st.input));
        if inputs.is_empty() {
            return Err(self.at(
                &st.input,
                format!("stage '{stage_name}' has an empty input list"),
            ));
        }
        let metadata = OneOrMany::list(st.metadata.as_ref());
        for (input, span) in inputs.iter().map(|i| (i, st.input.span())).chain(
            metadata
                .iter()
                .map(|m| (m, st.metadata.as_ref().expect("listed").span())),
        ) {
            if rings.index(input).is_none() {
                return Err(self.error(
                    span,
                    format!(
                        "stage '{stage_name}' reads ring '{input}', which no [[ring]] declares"
                    ),
                ));
            }
        }
        let outputs = OneOrMany::list(st.output.as_ref());
        for o in &outputs {
            let span = st.output.as_ref().expect("listed");
            let idx = rings.index(o).ok_or_else(|| {
                self.at(
                    span,
                    format!("stage '{stage_name}' writes ring '{o}', which no [[ring]] declares"),
                )
            })?;
            if let Some(other) = rings.writer_of.get(&idx) {
                return Err(self.at(
                    span,
                    format!("ring '{o}' is already written by {other}; a ring has one producer, so give this stage its own ring"),
                ));
            }
            rings.writer_of.insert(idx, format!("stage '{stage_name}'"));
        }
        Ok(StageRings {
            inputs,
            metadata,
            outputs,
        })
    }

    /// A stage's processor, configured with its `args` (each refusal at the value that
    /// caused it), and the arguments as the workers get them.
    fn stage_processor(
        &self,
        st: &RawStage,
        stage_name: &str,
        base: &Path,
    ) -> Result<(Box<dyn Processor>, toml::Table), ConfigError> {
        let mut processor =
            registry::create(st.processor.get_ref()).map_err(|m| self.at(&st.processor, m))?;
        // Keys that exclude each other (a later one would silently replace the other).
        for (one, other) in EXCLUSIVE_ARGS {
            if let (Some(_), Some(second)) = (st.args.get(*one), st.args.get(*other)) {
                return Err(self.at(
                    second,
                    format!("stage '{stage_name}': {one} and {other} exclude each other; keep one"),
                ));
            }
        }
        let mut args = toml::Table::new();
        for (key, value) in &st.args {
            let value_here = match (st.processor.get_ref().as_str(), key.as_str()) {
                // A Python stage's file is found from the pipeline file's folder.
                ("python", "file") => match value.get_ref().as_str() {
                    Some(file) => toml::Value::String(base.join(file).display().to_string()),
                    None => value.get_ref().clone(),
                },
                _ => value.get_ref().clone(),
            };
            processor
                .configure(key, &value_here)
                .map_err(|m| self.at(value, format!("stage '{stage_name}': {m}")))?;
            args.insert(key.clone(), value_here);
        }
        Ok((processor, args))
    }

    /// Every ring has a producer; a ring written by a stage has a segment per worker.
    fn producers(&self, rings: &mut Rings<'_>, stages: &[StagePlan]) -> Result<(), ConfigError> {
        for (i, d) in rings.declared.iter_mut().enumerate() {
            if !rings.writer_of.contains_key(&i) {
                return Err(self.at(
                    &d.raw.get_ref().name,
                    format!(
                        "ring '{}' has no producer: neither the source nor any stage writes it",
                        d.plan.name
                    ),
                ));
            }
            d.plan.writers = stages
                .iter()
                .find(|s| s.outputs.contains(&d.plan.name))
                .map_or(1, |s| s.workers);
        }
        Ok(())
    }

    /// How the stage's workers take turns (`order`).
    fn stage_order(&self, stage: &str, st: &RawStage) -> Result<Order, ConfigError> {
        match st.order.as_ref().map(|o| (o, o.get_ref().as_str())) {
            None | Some((_, "first-free")) => Ok(Order::FirstFree),
            Some((o, "round-robin")) if st.broadcast => Err(self.at(o, format!("stage '{stage}': round-robin deals runs to workers, broadcast gives every worker every frame; keep one"))),
            Some((_, "round-robin")) => Ok(Order::RoundRobin),
            Some((o, other)) => Err(self.at(
                o,
                format!("unknown order '{other}' (use first-free or round-robin)"),
            )),
        }
    }

    /// The earlier stage this one waits for (`after`): it reads every ring this stage
    /// reads, in one lossless group whose floor says which frames it has finished.
    fn stage_after(
        &self,
        stage: &str,
        st: &RawStage,
        inputs: &[String],
        earlier: &[StagePlan],
    ) -> Result<Option<String>, ConfigError> {
        let Some(after) = &st.after else {
            return Ok(None);
        };
        let name = after.get_ref();
        let Some(first) = earlier.iter().find(|p| &p.name == name) else {
            let known: Vec<&str> = earlier.iter().map(|p| p.name.as_str()).collect();
            return Err(self.at(after, format!(
                "stage '{stage}': after = \"{name}\" names no stage declared before it (earlier stages: {}); name one that reads the same rings",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        if let Some(ring) = inputs.iter().find(|r| !first.inputs.contains(r)) {
            return Err(self.at(after, format!(
                "stage '{stage}' reads ring '{ring}', which stage '{name}' does not read; after needs a stage reading every ring this one reads"
            )));
        }
        if first.delivery != Delivery::Lossless
            || first.broadcast
            || first.order == Order::RoundRobin
            || first.set.is_some()
        {
            return Err(self.at(after, format!(
                "stage '{stage}': after = \"{name}\" needs '{name}' to share its frames in one lossless group (no lossy delivery, broadcast, round-robin or sets)"
            )));
        }
        Ok(Some(name.clone()))
    }

    /// Each group (and set) of a stage takes an entry of its ring's group table on every
    /// segment it reads; a full table would only show when the run starts.
    fn group_tables(
        &self,
        raw: &[Spanned<RawStage>],
        stages: &[StagePlan],
    ) -> Result<(), ConfigError> {
        let mut entries: HashMap<String, usize> = HashMap::new();
        for (st, plan) in raw.iter().zip(stages) {
            for ring in &plan.inputs {
                *entries.entry(ring.clone()).or_default() += plan.groups().len();
            }
            for ring in &plan.metadata {
                *entries.entry(ring.clone()).or_default() += plan.workers as usize;
            }
            let over = plan
                .reads()
                .map(|r| (r, entries.get(r).copied().unwrap_or(0)))
                .find(|&(_, n)| n > crate::ring::MAX_GROUPS);
            if let Some((ring, n)) = over {
                return Err(self.at(
                    &st.get_ref().name,
                    format!("ring '{ring}' would need {n} consumer groups with stage '{}' (a group per stage, per worker with broadcast or round-robin); a ring has {}: use fewer workers or another ring", plan.name, crate::ring::MAX_GROUPS),
                ));
            }
        }
        Ok(())
    }

    /// At most 1024 worker processes, the source's included.
    fn worker_total(
        &self,
        raw: &[Spanned<RawStage>],
        stages: &[StagePlan],
    ) -> Result<(), ConfigError> {
        let mut total = 1u32;
        for (st, plan) in raw.iter().zip(stages) {
            total += plan.workers;
            if total > 1024 {
                let st = st.get_ref();
                let span = st.workers.as_ref().map_or(st.name.span(), Spanned::span);
                return Err(self.error(
                    span,
                    format!("stage '{}' brings the pipeline to {total} workers; a pipeline has at most 1024 with its source", plan.name),
                ));
            }
        }
        Ok(())
    }

    /// Every ring's slot size: the declared one, else what its producer writes (the
    /// source's frames, or what a stage makes of its inputs, in data-flow `order`); a
    /// declared size too small for its producer is refused.
    fn ring_sizes(
        &self,
        raw: &RawPipeline,
        rings: &Rings<'_>,
        source: &SourcePlan,
        stages: &[StagePlan],
        processors_built: &[Box<dyn Processor>],
        order: &[usize],
    ) -> Result<Vec<u64>, ConfigError> {
        let declared = &rings.declared;
        let index = |name: &str| rings.index(name).expect("checked");
        let src_ring = index(&source.ring);
        let mut bytes: Vec<u64> = declared.iter().map(|d| d.plan.slot_bytes).collect();
        let source_bytes = source.frame_bytes();
        if declared[src_ring]
            .bytes
            .is_some_and(|declared| declared < source_bytes)
        {
            return Err(self.at(
                &raw.source.get_ref().ring,
                format!(
                    "the source's {}x{} {} frames ({source_bytes} bytes) do not fit ring '{}', whose slots hold {} bytes",
                    source.nx, source.ny, source.dtype.name(), source.ring, bytes[src_ring]
                ),
            ));
        }
        if declared[src_ring].bytes.is_none() {
            bytes[src_ring] = source_bytes;
        }
        for &si in order {
            let stage = &stages[si];
            let input = stage.input_frames(source, |ring| bytes[index(ring)]);
            let needed = processors_built[si].output_bytes(&input);
            for out in &stage.outputs {
                let oi = index(out);
                match declared[oi].bytes {
                    Some(declared) if declared < needed => {
                        let o = raw.stages[si]
                            .get_ref()
                            .output
                            .as_ref()
                            .expect("has output");
                        return Err(self.at(
                            o,
                            format!(
                                "stage '{}' writes frames of up to {needed} bytes but ring '{out}' holds {declared}; raise its slot_bytes or frame, or remove them to size it from the stage",
                                stage.name
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => bytes[oi] = needed,
                }
            }
        }
        Ok(bytes)
    }

    /// The rings as planned, sized by `bytes`: each within the ring's size limit, and
    /// each segment name (`PIPELINE.RING.N`) within the ring layout's.
    fn ring_plans(
        &self,
        rings: Rings<'_>,
        bytes: Vec<u64>,
        pipeline: &str,
    ) -> Result<Vec<RingPlan>, ConfigError> {
        let mut ring_plans = Vec::new();
        for (Declared { mut plan, raw, .. }, b) in rings.declared.into_iter().zip(bytes) {
            plan.slot_bytes = b;
            // As the ring will compute it: pages of payload plus a page of header a slot.
            let size = b
                .checked_next_multiple_of(4096)
                .and_then(|p| p.checked_add(4096))
                .and_then(|stride| stride.checked_mul(u64::from(plan.slots)));
            if size.is_none_or(|s| s > MAX_RING_BYTES) {
                let ring = raw.get_ref();
                let span = ring
                    .slot_bytes
                    .as_ref()
                    .map_or(ring.name.span(), Spanned::span);
                return Err(self.error(
                    span,
                    format!(
                        "ring '{}' of {} slots of {b} bytes would take more than 2^40 bytes (1 TiB); use fewer or smaller slots",
                        plan.name, plan.slots
                    ),
                ));
            }
            if let Some(longest) = plan.segments(pipeline).iter().map(String::len).max() {
                if longest > MAX_SEGMENT_NAME {
                    return Err(self.at(
                        &raw.get_ref().name,
                        format!(
                            "ring '{}' of pipeline '{pipeline}' makes a segment name of {longest} characters; shorten the pipeline or ring name to stay within {MAX_SEGMENT_NAME}",
                            plan.name
                        ),
                    ));
                }
            }
            ring_plans.push(plan);
        }
        Ok(ring_plans)
    }

    /// Stage indices in data-flow order; a cycle is an error at the stage closing it.
    fn topological(
        &self,
        raw: &RawPipeline,
        stages: &[StagePlan],
    ) -> Result<Vec<usize>, ConfigError> {
        // 0 = unvisited, 1 = on the current path, 2 = done.
        fn visit(
            i: usize,
            stages: &[StagePlan],
            state: &mut [u8],
            path: &mut Vec<usize>,
            order: &mut Vec<usize>,
        ) -> Result<(), Vec<usize>> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let from = path.iter().position(|&p| p == i).expect("on path");
                    return Err(path[from..].to_vec());
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for (j, s) in stages.iter().enumerate() {
                // A stage also waits for the one it comes `after`.
                if s.reads().any(|inp| stages[i].outputs.contains(inp))
                    || s.after.as_ref() == Some(&stages[i].name)
                {
                    visit(j, stages, state, path, order)?;
                }
            }
            path.pop();
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        let mut state = vec![0u8; stages.len()];
        let mut order = Vec::new();
        for i in 0..stages.len() {
            let mut path = Vec::new();
            if let Err(cycle) = visit(i, stages, &mut state, &mut path, &mut order) {
                let names: Vec<&str> = cycle.iter().map(|&c| stages[c].name.as_str()).collect();
                let last = *cycle.last().expect("non-empty");
                let out = raw.stages[last]
                    .get_ref()
                    .output
                    .as_ref()
                    .expect("a cycle passes through outputs");
                return Err(self.at(
                    out,
                    format!(
                        "stages {} → {} form a cycle; frames must flow one way from the source",
                        names.join(" → "),
                        names[0]
                    ),
                ));
            }
        }
        order.reverse();
        Ok(order)
    }
}
