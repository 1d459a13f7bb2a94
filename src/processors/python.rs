//! `processor = "python"`: a stage whose work is a Python class, in the shape PvaPy users
//! know (constructed with its args, `start`, `configure`, `process`, `stop`,
//! `get_stats`, `reset_stats`). Its workers run in a Python interpreter
//! (`python -m streamd._worker`) that hosts this crate's worker loop through the Python
//! package, so they are supervised, pinned, restarted and counted like any other. This
//! side, in the binary, only checks the arguments and, before anything starts, that the
//! interpreter has the package and that the class imports.
//!
//! `processor = "pva"` is a Python stage whose class ships with the package: the EPICS
//! pvAccess sink (`streamd.pva.Sink`, on p4p), which serves a ring's frames as an
//! NTNDArray channel.

use super::{ArgValue, Outputs, ProcessError, Processor, Refused, Wiring};
use crate::ring::Frame;
use serde::{Deserialize, Serialize};
use std::process::{Command, Stdio};

/// The interpreter used when the pipeline file names none.
pub const DEFAULT_INTERPRETER: &str = "python3";

/// The module of the EPICS pvAccess bridge in the Python package: its `Source`,
/// `Sink` and `MetadataChannels` classes.
pub const PVA_MODULE: &str = "streamd.pva";

/// Python stages whose class ships with the package: processor name, class in
/// [`PVA_MODULE`], and the arguments the stage requires.
const SHIPPED: &[(&str, &str, &[&str])] = &[("pva", "Sink", &["channel"])];

/// The keys streamd reads from a Python stage's or source's arguments; every other key
/// is the user's, handed to the class's constructor.
pub const CODE_KEYS: &[&str] = &["python", "file", "module", "class"];

/// Where a Python stage's or source's class is, and which interpreter runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PythonCode {
    /// The interpreter (a venv's `bin/python`), `python3` on `PATH` when not given.
    pub python: Option<String>,
    /// A `.py` file (absolute once the pipeline file is read) or a module to import.
    pub file: Option<String>,
    pub module: Option<String>,
    pub class: Option<String>,
}

impl PythonCode {
    /// Takes one of [`CODE_KEYS`]; `Ok(false)` for a key that is the user's.
    pub fn configure(&mut self, key: &str, value: &ArgValue) -> Result<bool, String> {
        let field = match key {
            "python" => &mut self.python,
            "file" => &mut self.file,
            "module" => &mut self.module,
            "class" => &mut self.class,
            _ => return Ok(false),
        };
        match value.as_str() {
            Some(text) if !text.is_empty() => {
                *field = Some(text.to_string());
                Ok(true)
            }
            _ => Err(format!("{key} must be a non-empty string")),
        }
    }

    /// Refuses an incomplete description.
    pub fn check_complete(&self) -> Result<(), String> {
        match (&self.file, &self.module, &self.class) {
            (Some(_), Some(_), _) => Err("file and module exclude each other; keep one".into()),
            (None, None, _) => Err(
                "a Python stage needs file = \"my_processor.py\" or module = \"package.module\""
                    .into(),
            ),
            (_, _, None) => Err("a Python stage needs class = \"ClassName\"".into()),
            _ => Ok(()),
        }
    }

    /// The description in a stage's arguments (checked when the pipeline file was read).
    pub fn from_args(args: &toml::Table) -> PythonCode {
        let mut code = PythonCode::default();
        for (key, value) in args {
            // Checked when the pipeline was read; a bad value cannot reach here.
            let _ = code.configure(key, value);
        }
        code
    }

    /// The code a stage of `processor` runs: its arguments' for `python`, the shipped
    /// class for `pva`; `None` for a processor of the binary.
    pub fn for_stage(processor: &str, args: &toml::Table) -> Option<PythonCode> {
        if processor == "python" {
            return Some(PythonCode::from_args(args));
        }
        let (_, class, _) = SHIPPED.iter().find(|(name, _, _)| *name == processor)?;
        Some(PythonCode {
            python: PythonCode::from_args(args).python,
            file: None,
            module: Some(PVA_MODULE.into()),
            class: Some((*class).into()),
        })
    }

    pub fn interpreter(&self) -> &str {
        self.python.as_deref().unwrap_or(DEFAULT_INTERPRETER)
    }

    /// Imports the class in the interpreter (`python -m streamd._check`), without running
    /// it; `kind` is `stage` or `source` (a source needs `frames`). With `configure`, a
    /// scratch instance is made with `args` and given that change, as `streamd configure`
    /// checks a change before the workers see it. The error is the Python error's last
    /// line, with FILE:LINE:COL for a syntax error.
    pub fn check(
        &self,
        kind: &str,
        args: &toml::Table,
        configure: Option<&toml::Table>,
    ) -> Result<(), String> {
        let request = serde_json::json!({
            "kind": kind,
            "code": self,
            "args": args,
            "configure": configure,
        });
        let python = self.interpreter();
        let output = Command::new(python)
            .args(["-m", "streamd._check", &request.to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "cannot run the Python interpreter '{python}' ({e}); install Python 3 or name one with python = \"/path/to/venv/bin/python\""
                )
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        if last.contains("No module named streamd") || last.contains("No module named 'streamd'") {
            return Err(format!(
                "the Python interpreter '{python}' has no streamd package; install it with `{python} -m pip install ./python` from the streamd checkout, or name another with python = \"...\""
            ));
        }
        Err(crate::units::one_line(last.trim()))
    }
}

/// The binary's side of a Python stage: the arguments, and the checks made before start.
#[derive(Default)]
pub struct PythonStage {
    code: PythonCode,
    user_args: toml::Table,
    /// A stage whose class ships with the package (`pva`): its processor name.
    shipped: Option<&'static str>,
}

impl PythonStage {
    /// A stage whose class ships with the package (`processor = "pva"`).
    pub fn shipped(processor: &'static str) -> PythonStage {
        let args = toml::Table::new();
        PythonStage {
            code: PythonCode::for_stage(processor, &args).unwrap_or_default(),
            user_args: args,
            shipped: Some(processor),
        }
    }

    /// The arguments handed to the class, without streamd's own keys.
    pub fn user_args(args: &toml::Table) -> toml::Table {
        args.iter()
            .filter(|(k, _)| !CODE_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Processor for PythonStage {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        if let Some(name) = self.shipped {
            if matches!(key, "file" | "module" | "class") {
                return Err(format!(
                    "{name} runs the package's own class; {key} belongs to processor = \"python\""
                )
                .into());
            }
        }
        if !self.code.configure(key, value)? {
            self.user_args.insert(key.to_string(), value.clone());
        }
        Ok(())
    }

    fn check_wiring(&self, _wiring: &Wiring) -> Result<(), Refused> {
        if let Some((name, _, required)) = SHIPPED.iter().find(|s| Some(s.0) == self.shipped) {
            if let Some(missing) = required.iter().find(|k| !self.user_args.contains_key(**k)) {
                return Err(format!("{name} needs {missing} = \"...\"").into());
            }
        }
        Ok(self.code.check_complete()?)
    }

    fn prepare(&self, _workers: u32) -> Result<(), Refused> {
        self.code
            .check("stage", &self.user_args, None)
            .map_err(Into::into)
    }

    fn start(&mut self, _ctx: &super::StageContext) -> Result<(), ProcessError> {
        Err("a Python stage runs in its Python interpreter (python -m streamd._worker), not in the streamd binary".into())
    }

    fn process(&mut self, _: usize, _: &Frame<'_>, _: &mut Outputs) -> Result<(), ProcessError> {
        Err("a Python stage runs in its Python interpreter".into())
    }
}

impl PythonStage {
    /// Checks a run-time change on a scratch instance of the class (`streamd configure`):
    /// a `configure` that raises refuses the change.
    pub fn check_change(
        processor: &str,
        args: &toml::Table,
        key: &str,
        value: &ArgValue,
    ) -> Result<(), Refused> {
        let mut stage = PythonStage::default();
        if let Some(code) = PythonCode::for_stage(processor, args) {
            stage.code = code;
        }
        for (k, v) in args {
            stage.configure(k, v)?;
        }
        if CODE_KEYS.contains(&key) {
            return Err(format!(
                "{key} names the stage's code; change it in the pipeline file and run again"
            )
            .into());
        }
        let change = toml::Table::from_iter([(key.to_string(), value.clone())]);
        Ok(stage.code.check("stage", &stage.user_args, Some(&change))?)
    }
}
