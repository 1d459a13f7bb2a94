//! `route`: sends each frame to exactly one of its output rings by the value of one
//! attribute — hit finding and vetoes (`stats` with a threshold, then route on `above`)
//! or escalation of uncertain frames to a more expensive stage (edgeserve's gates).
//!
//! `key` names the attribute; `bounds = [b1, b2, ...]` (ascending) cut its values into
//! `len(bounds) + 1` routes: a frame goes to output `i`, where `i` is how many bounds its
//! value is greater than. The stage lists exactly that many output rings. A frame whose
//! attribute is absent, not a number, or NaN goes to output `missing` (default 0) and is
//! also counted in `no_value`. Every route counts its frames under its ring's name.

use super::{
    number, unknown_key, ArgValue, Outputs, ProcessError, Processor, Refused, StageContext, Wiring,
};
use crate::ring::{AttrValue, Frame};

#[derive(Default)]
pub struct Route {
    key: Option<String>,
    bounds: Vec<f64>,
    missing: usize,
    /// Output ring names (known from `start`).
    names: Vec<String>,
    routed: Vec<u64>,
    no_value: u64,
}

impl Processor for Route {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        match key {
            "key" => match value.as_str() {
                Some(k) if !k.is_empty() => self.key = Some(k.to_string()),
                _ => return Err(format!("key must be an attribute name, got {value}").into()),
            },
            "bounds" => {
                let bounds = value
                    .as_array()
                    .filter(|l| !l.is_empty())
                    .and_then(|l| {
                        l.iter()
                            .map(|v| number(key, v).ok())
                            .collect::<Option<Vec<f64>>>()
                    })
                    .ok_or_else(|| {
                        format!("bounds must be a non-empty list of numbers, got {value}")
                    })?;
                if bounds.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!("bounds must be strictly ascending, got {value}").into());
                }
                if !self.names.is_empty() && bounds.len() + 1 != self.names.len() {
                    return Err(format!(
                        "bounds makes {} routes but the stage has {} output rings",
                        bounds.len() + 1,
                        self.names.len()
                    )
                    .into());
                }
                self.bounds = bounds;
            }
            "missing" => {
                let port = value.as_integer().filter(|&p| p >= 0);
                self.missing = port.ok_or_else(|| {
                    format!("missing must be an output index (0, 1, ...), got {value}")
                })? as usize;
            }
            _ => return Err(unknown_key("route", key, &["key", "bounds", "missing"]).into()),
        }
        Ok(())
    }

    fn check_wiring(&self, wiring: &Wiring) -> Result<(), Refused> {
        if self.key.is_none() || self.bounds.is_empty() {
            return Err("route needs key = \"ATTRIBUTE\" and bounds = [..]".into());
        }
        let routes = self.bounds.len() + 1;
        if wiring.outputs != routes {
            return Err(format!(
                "route with {} bounds sends frames to {routes} output rings, but the stage lists {}",
                self.bounds.len(),
                wiring.outputs
            ).into());
        }
        if self.missing >= routes {
            return Err(format!(
                "missing = {} is not an output index (0 to {})",
                self.missing,
                routes - 1
            )
            .into());
        }
        Ok(())
    }

    fn start(&mut self, ctx: &StageContext) -> Result<(), ProcessError> {
        self.names = ctx.outputs.clone();
        self.routed = vec![0; ctx.outputs.len()];
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let key = self.key.as_deref().unwrap_or_default();
        let value = frame
            .attributes()
            .filter_map(Result::ok)
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| match v {
                AttrValue::I64(i) => Some(i as f64),
                AttrValue::F64(x) if !x.is_nan() => Some(x),
                _ => None,
            });
        let port = match value {
            Some(v) => self.bounds.iter().filter(|&&b| v > b).count(),
            None => {
                self.no_value += 1;
                self.missing
            }
        };
        if let Some(n) = self.routed.get_mut(port) {
            *n += 1;
        }
        out.forward(port, frame).map_err(Into::into)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut counters: Vec<(String, u64)> = self
            .names
            .iter()
            .zip(&self.routed)
            .map(|(name, &n)| (name.clone(), n))
            .collect();
        counters.push(("no_value".into(), self.no_value));
        counters
    }
}
