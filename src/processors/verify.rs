//! `verify`: a sink that checks every frame against the ramp pattern (spec §11) and,
//! with `ids_file`, writes the id of every frame it saw, one per line — how tests and
//! commissioning runs prove that each frame arrived exactly once. `attributes` adds the
//! named attributes to each line (`ID key=value ...`, `key=-` when absent);
//! `pattern = "none"` only records; `rotated = K` checks frames turned by K quarter
//! turns counter-clockwise after the ramp was written (`numpy.rot90(a, K)`), as a
//! rotating stage makes them.

use super::{unknown_key, ArgValue, Outputs, ProcessError, Processor, Refused, StageContext};
use crate::pattern::verify_ramp;
use crate::ring::{AttrValue, Frame};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Default)]
pub struct Verify {
    /// Frames are not checked against the ramp (`pattern = "none"`).
    record_only: bool,
    /// Path template; `{worker}` becomes the worker's index.
    ids_file: Option<String>,
    attributes: Vec<String>,
    ids: Option<BufWriter<File>>,
    scratch: Vec<u8>,
    /// Quarter turns (0 to 3) the frames were given after the ramp was written.
    rotated: u8,
    turned_back: Vec<u8>,
    verified: u64,
    verify_errors: u64,
}

impl Processor for Verify {
    /// The ids file is created when the stage starts.
    fn fixed_while_running(&self) -> &'static [&'static str] {
        &["ids_file"]
    }

    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        match (key, value) {
            ("pattern", ArgValue::String(p)) if p == "ramp" || p == "none" => {
                self.record_only = p == "none"
            }
            ("pattern", other) => {
                return Err(format!(
                    "pattern must be \"ramp\" (the only verifiable one) or \"none\", got {other}"
                )
                .into())
            }
            ("ids_file", ArgValue::String(path)) if path.trim().is_empty() => {
                return Err("ids_file is empty; give a file name, or remove the key".into())
            }
            ("ids_file", ArgValue::String(path)) if self.ids.is_none() => {
                self.ids_file = Some(path.clone())
            }
            ("ids_file", ArgValue::String(_)) => return Err(super::fixed_while_running(key)),
            ("ids_file", other) => {
                return Err(format!("ids_file must be a path, got {other}").into())
            }
            ("attributes", ArgValue::Array(list)) => {
                self.attributes = list
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("attributes must be a list of names, got {value}"))?
            }
            ("attributes", other) => {
                return Err(format!("attributes must be a list of names, got {other}").into())
            }
            ("rotated", ArgValue::Integer(k)) if (0..4).contains(k) => self.rotated = *k as u8,
            ("rotated", other) => {
                return Err(format!(
                    "rotated must be 0, 1, 2 or 3 quarter turns (as numpy.rot90's k), got {other}"
                )
                .into())
            }
            _ => {
                return Err(unknown_key(
                    "verify",
                    key,
                    &["pattern", "ids_file", "attributes", "rotated"],
                )
                .into())
            }
        }
        Ok(())
    }

    /// Each worker's ids file must be a file in a folder that exists and takes new files.
    fn prepare(&self, workers: u32) -> Result<(), Refused> {
        let Some(template) = &self.ids_file else {
            return Ok(());
        };
        for worker in 0..workers {
            let path = PathBuf::from(ids_path(template, worker));
            let folder = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let shown = folder.display();
            if path.is_dir() {
                return Err(
                    format!("ids_file {} is a folder; give a file name", path.display()).into(),
                );
            }
            if !folder.is_dir() {
                return Err(format!(
                    "ids_file {}: folder {shown} does not exist; create it or correct ids_file",
                    path.display()
                )
                .into());
            }
            let probe = folder.join(format!(".streamd-probe-{}", std::process::id()));
            match File::options().write(true).create_new(true).open(&probe) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                }
                Err(e) => {
                    return Err(format!(
                        "ids_file {}: cannot write in folder {shown}: {e}",
                        path.display()
                    )
                    .into())
                }
            }
        }
        Ok(())
    }

    fn start(&mut self, ctx: &StageContext) -> Result<(), ProcessError> {
        if let Some(template) = &self.ids_file {
            let path = ids_path(template, ctx.worker);
            // Append: a restarted worker keeps what its predecessor recorded.
            let file = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("could not open ids file {path}: {e}"))?;
            self.ids = Some(BufWriter::new(file));
        }
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        _out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let header = frame.header();
        if let Some(ids) = &mut self.ids {
            let mut line = header.frame_id.to_string();
            for key in &self.attributes {
                let value = frame
                    .attributes()
                    .filter_map(Result::ok)
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v);
                line.push_str(&match value {
                    Some(AttrValue::I64(i)) => format!(" {key}={i}"),
                    Some(AttrValue::F64(x)) => format!(" {key}={x}"),
                    Some(AttrValue::Str(s)) => format!(" {key}={s}"),
                    None => format!(" {key}=-"),
                });
            }
            writeln!(ids, "{line}").map_err(|e| format!("writing ids: {e}"))?;
        }
        if self.record_only {
            return Ok(());
        }
        let pixels = match (self.rotated, &*header.dims) {
            (0, _) => frame.payload(),
            (k, &[rows, cols]) => {
                turn_back(
                    frame.payload(),
                    [rows as usize, cols as usize],
                    header.dtype.size(),
                    k,
                    &mut self.turned_back,
                );
                &self.turned_back
            }
            (_, dims) => {
                self.verify_errors += 1;
                return Err(format!(
                    "frame {} has dims {dims:?}; only 2-D frames can be turned back",
                    header.frame_id
                )
                .into());
            }
        };
        if let Some(pixel) = verify_ramp(pixels, header.dtype, header.frame_id, &mut self.scratch) {
            self.verify_errors += 1;
            return Err(format!(
                "frame {} differs from the ramp at pixel {pixel}",
                header.frame_id
            )
            .into());
        }
        self.verified += 1;
        Ok(())
    }

    /// With an ids file, frames are held until their ids reach the file, so a killed
    /// worker's successor records what it had buffered (ids may then repeat).
    fn sync_interval(&self) -> Option<Duration> {
        self.ids_file.as_ref().map(|_| Duration::from_millis(200))
    }

    fn sync(&mut self) -> Result<(), ProcessError> {
        if let Some(ids) = &mut self.ids {
            ids.flush().map_err(|e| format!("writing ids: {e}"))?;
        }
        Ok(())
    }

    fn stop(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        if let Some(ids) = &mut self.ids {
            ids.flush().map_err(|e| format!("writing ids: {e}"))?;
        }
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("verified".into(), self.verified),
            ("verify_errors".into(), self.verify_errors),
        ]
    }
}

/// Worker `worker`'s ids file: `{worker}` in the template replaced by its index.
fn ids_path(template: &str, worker: u32) -> String {
    template.replace("{worker}", &worker.to_string())
}

/// Undoes `numpy.rot90(a, k)` of a `[rows, cols]` frame of `px`-byte pixels into `out`.
fn turn_back(data: &[u8], [rows, cols]: [usize; 2], px: usize, k: u8, out: &mut Vec<u8>) {
    out.resize(data.len(), 0);
    // The original is cols × rows for odd k, rows × cols for k = 2.
    let (orig_rows, orig_cols) = if k == 2 { (rows, cols) } else { (cols, rows) };
    for r in 0..orig_rows {
        for c in 0..orig_cols {
            let from = match k {
                1 => (rows - 1 - c) * cols + r,
                2 => (rows - 1 - r) * cols + (cols - 1 - c),
                _ => c * cols + (cols - 1 - r),
            };
            let to = r * orig_cols + c;
            out[to * px..(to + 1) * px].copy_from_slice(&data[from * px..(from + 1) * px]);
        }
    }
}
