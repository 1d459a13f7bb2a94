//! `stats`: per-frame reductions (raspi-rtl's task library): pixel count, sum, mean,
//! min, max, standard deviation (population), intensity-weighted centroid, count above a
//! threshold and a histogram, optionally over a region of interest.
//!
//! Stated behaviour at the edges:
//! * Non-finite pixels (NaN, ±inf; only f32 has them) are left out of every reduction
//!   and counted in `nonfinite`.
//! * `roi = [y, x, ny, nx]` is clipped to the frame; a region with no pixel left, or a
//!   frame with no finite pixel, gives `count = 0`, `sum = 0`, `above = 0`, an empty
//!   histogram and NaN for mean, min, max, std, centroid and the histogram range; a
//!   region wholly outside the frame is counted in the `empty_roi` counter.
//! * The centroid is NaN when the weights sum to zero.
//! * The histogram has `bins` equal bins over `range = [lo, hi]` (default: the frame's
//!   min and max, widened by 0.5 each side when they are equal, as NumPy does); a value
//!   equal to `hi` falls in the last bin, values outside the range in none.
//!
//! `publish = "record"` (the default) sends a small record per frame: the histogram as
//! a `u32` payload of `bins` values and the reductions as attributes (`count`, `sum`,
//! `mean`, `min`, `max`, `std`, `centroid_y`, `centroid_x`, `above` with a threshold,
//! `nonfinite`, `hist_lo`, `hist_hi`), under the frame's id, timestamp and attributes.
//! `publish = "frame"` forwards the frame itself with those attributes, for a `route`.

use super::{image_shape, integer_list, number, unknown_key, ArgValue, Outputs, Processor};
use crate::ring::{AttrValue, Dtype, Frame, FrameMeta};

/// A region of interest: first row, first column, rows, columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roi {
    pub y: u32,
    pub x: u32,
    pub ny: u32,
    pub nx: u32,
}

/// What to compute besides the always-present moments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub roi: Option<Roi>,
    pub threshold: Option<f64>,
    pub bins: usize,
    pub range: Option<(f64, f64)>,
}

/// The reductions of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Reductions {
    pub count: u64,
    pub nonfinite: u64,
    pub sum: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub std: f64,
    pub centroid_y: f64,
    pub centroid_x: f64,
    pub above: Option<u64>,
    pub histogram: Vec<u32>,
    pub hist_range: (f64, f64),
    /// The region held no pixel of the frame.
    pub empty_roi: bool,
}

/// Decodes `out.len()` pixels of `dtype` from `bytes` into `out`.
fn decode(bytes: &[u8], dtype: Dtype, out: &mut [f64]) {
    match dtype {
        Dtype::U8 => out
            .iter_mut()
            .zip(bytes)
            .for_each(|(d, &b)| *d = f64::from(b)),
        Dtype::U16 => out
            .iter_mut()
            .zip(bytes.chunks_exact(2))
            .for_each(|(d, b)| *d = f64::from(u16::from_le_bytes([b[0], b[1]]))),
        Dtype::U32 => out
            .iter_mut()
            .zip(bytes.chunks_exact(4))
            .for_each(|(d, b)| *d = f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::F32 => out
            .iter_mut()
            .zip(bytes.chunks_exact(4))
            .for_each(|(d, b)| *d = f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
    }
}

/// Reduces a `ny` × `nx` frame: two passes over the region, a row at a time.
pub fn reduce(payload: &[u8], dtype: Dtype, ny: u32, nx: u32, settings: &Settings) -> Reductions {
    let roi = settings.roi.unwrap_or(Roi { y: 0, x: 0, ny, nx });
    let (y0, x0) = (roi.y.min(ny), roi.x.min(nx));
    let y1 = (u64::from(roi.y) + u64::from(roi.ny)).min(u64::from(ny)) as u32;
    let x1 = (u64::from(roi.x) + u64::from(roi.nx)).min(u64::from(nx)) as u32;
    let empty_roi = y0 >= y1 || x0 >= x1;
    let size = dtype.size();
    let mut row = vec![0.0f64; x1.saturating_sub(x0) as usize];
    let mut rows = |each: &mut dyn FnMut(u32, &[f64])| {
        for y in y0..y1 {
            let start = (y as usize * nx as usize + x0 as usize) * size;
            decode(&payload[start..start + row.len() * size], dtype, &mut row);
            each(y, &row);
        }
    };
    let (mut count, mut nonfinite, mut sum) = (0u64, 0u64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut wy, mut wx) = (0.0f64, 0.0f64);
    let threshold = settings.threshold.unwrap_or(f64::INFINITY);
    let mut above = 0u64;
    rows(&mut |y, values| {
        // Row sums first: fewer long dependency chains than one running total.
        let (mut row_sum, mut row_wx) = (0.0f64, 0.0f64);
        for (i, &v) in values.iter().enumerate() {
            if !v.is_finite() {
                nonfinite += 1;
                continue;
            }
            count += 1;
            row_sum += v;
            min = min.min(v);
            max = max.max(v);
            row_wx += (x0 as usize + i) as f64 * v;
            above += u64::from(v > threshold);
        }
        sum += row_sum;
        wy += f64::from(y) * row_sum;
        wx += row_wx;
    });
    let above = settings.threshold.map(|_| above);
    let nan = f64::NAN;
    if count == 0 {
        return Reductions {
            count,
            nonfinite,
            sum: 0.0,
            mean: nan,
            min: nan,
            max: nan,
            std: nan,
            centroid_y: nan,
            centroid_x: nan,
            above,
            histogram: vec![0; settings.bins],
            hist_range: (nan, nan),
            empty_roi,
        };
    }
    let mean = sum / count as f64;
    let hist_range = settings.range.unwrap_or(if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    });
    let (lo, hi) = hist_range;
    let scale = settings.bins as f64 / (hi - lo);
    let mut histogram = vec![0u32; settings.bins];
    // Second pass: deviations from the mean, so the variance does not cancel.
    let mut squares = 0.0f64;
    rows(&mut |_, values| {
        for &v in values.iter().filter(|v| v.is_finite()) {
            squares += (v - mean) * (v - mean);
            if let Some(b) = bin(v, lo, hi, scale, settings.bins) {
                histogram[b] += 1;
            }
        }
    });
    let (cy, cx) = if sum == 0.0 {
        (nan, nan)
    } else {
        (wy / sum, wx / sum)
    };
    Reductions {
        count,
        nonfinite,
        sum,
        mean,
        min,
        max,
        std: (squares / count as f64).sqrt(),
        centroid_y: cy,
        centroid_x: cx,
        above,
        histogram,
        hist_range,
        empty_roi,
    }
}

/// The histogram bin of `v` over `[lo, hi]` with `bins` bins of width `1 / scale`
/// (`scale = bins / (hi - lo)`): `floor((v - lo) * scale)`; `hi` is in the last one.
pub fn bin(v: f64, lo: f64, hi: f64, scale: f64, bins: usize) -> Option<usize> {
    if bins == 0 || !(v >= lo && v <= hi) || hi <= lo {
        return None;
    }
    Some((((v - lo) * scale) as usize).min(bins - 1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    Record,
    Frame,
}

pub struct Reduce {
    settings: Settings,
    publish: Publish,
    frames: u64,
    empty_roi: u64,
}

impl Default for Reduce {
    fn default() -> Self {
        Reduce {
            settings: Settings::default(),
            publish: Publish::Record,
            frames: 0,
            empty_roi: 0,
        }
    }
}

const KEYS: [&str; 5] = ["roi", "threshold", "bins", "range", "publish"];
/// Most histogram bins (a record stays small).
const MAX_BINS: usize = 65536;

impl Processor for Reduce {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), String> {
        match key {
            "roi" => {
                let v = integer_list(key, value, 4)?;
                if v[2] == 0 || v[3] == 0 || v.iter().any(|&n| n > u64::from(u32::MAX)) {
                    return Err(format!(
                        "roi = [y, x, ny, nx] needs ny and nx of at least 1, got {value}"
                    ));
                }
                self.settings.roi = Some(Roi {
                    y: v[0] as u32,
                    x: v[1] as u32,
                    ny: v[2] as u32,
                    nx: v[3] as u32,
                });
            }
            "threshold" => self.settings.threshold = Some(number(key, value)?),
            "bins" => {
                let n = value
                    .as_integer()
                    .filter(|&n| n >= 0 && n as usize <= MAX_BINS);
                self.settings.bins = n.ok_or_else(|| {
                    format!("bins must be an integer from 0 to {MAX_BINS}, got {value}")
                })? as usize;
            }
            "range" => {
                let list = value.as_array().filter(|l| l.len() == 2);
                let pair =
                    list.and_then(|l| Some((number(key, &l[0]).ok()?, number(key, &l[1]).ok()?)));
                match pair {
                    Some((lo, hi)) if lo < hi => self.settings.range = Some((lo, hi)),
                    _ => return Err(format!("range must be [lo, hi] with lo < hi, got {value}")),
                }
            }
            "publish" => {
                self.publish = match value.as_str() {
                    Some("record") => Publish::Record,
                    Some("frame") => Publish::Frame,
                    _ => {
                        return Err(format!(
                            "publish must be \"record\" or \"frame\", got {value}"
                        ))
                    }
                }
            }
            _ => return Err(unknown_key("stats", key, &KEYS)),
        }
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        out: &mut Outputs,
    ) -> Result<(), String> {
        let header = frame.header();
        let (ny, nx) = image_shape("stats", header)?;
        let r = reduce(frame.payload(), header.dtype, ny, nx, &self.settings);
        self.frames += 1;
        self.empty_roi += u64::from(r.empty_roi);
        if out.is_empty() {
            return Ok(());
        }
        let mut extra = vec![
            ("count", AttrValue::I64(r.count as i64)),
            ("sum", AttrValue::F64(r.sum)),
            ("mean", AttrValue::F64(r.mean)),
            ("min", AttrValue::F64(r.min)),
            ("max", AttrValue::F64(r.max)),
            ("std", AttrValue::F64(r.std)),
            ("centroid_y", AttrValue::F64(r.centroid_y)),
            ("centroid_x", AttrValue::F64(r.centroid_x)),
            ("nonfinite", AttrValue::I64(r.nonfinite as i64)),
        ];
        if let Some(above) = r.above {
            extra.push(("above", AttrValue::I64(above as i64)));
        }
        let attributes = frame.raw_attributes().map_err(|e| e.to_string())?;
        let result = match self.publish {
            Publish::Frame => {
                let meta = header.meta();
                out.send(0, &meta, frame.payload(), attributes, &extra)
            }
            Publish::Record => {
                extra.push(("hist_lo", AttrValue::F64(r.hist_range.0)));
                extra.push(("hist_hi", AttrValue::F64(r.hist_range.1)));
                let bytes: Vec<u8> = r.histogram.iter().flat_map(|c| c.to_le_bytes()).collect();
                let dims = [r.histogram.len() as u32];
                let meta = FrameMeta {
                    frame_id: header.frame_id,
                    timestamp_ns: header.timestamp_ns,
                    dtype: Dtype::U32,
                    dims: &dims,
                    flags: 0,
                };
                out.send(0, &meta, &bytes, attributes, &extra)
            }
        };
        result.map_err(|e| e.to_string())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("reduced".into(), self.frames),
            ("empty_roi".into(), self.empty_roi),
        ]
    }

    fn output_bytes(&self, input_bytes: u64, _source_bytes: u64) -> u64 {
        match self.publish {
            Publish::Frame => input_bytes,
            Publish::Record => (self.settings.bins as u64 * 4).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain reference: collect the region's finite values, then textbook formulas.
    fn reference(values: &[f64], ny: u32, nx: u32, s: &Settings) -> Reductions {
        let roi = s.roi.unwrap_or(Roi { y: 0, x: 0, ny, nx });
        let mut finite = Vec::new();
        let mut nonfinite = 0;
        for y in 0..ny {
            for x in 0..nx {
                let inside = y >= roi.y
                    && u64::from(y) < u64::from(roi.y) + u64::from(roi.ny)
                    && x >= roi.x
                    && u64::from(x) < u64::from(roi.x) + u64::from(roi.nx);
                if !inside {
                    continue;
                }
                let v = values[(y * nx + x) as usize];
                if v.is_finite() {
                    finite.push((y, x, v));
                } else {
                    nonfinite += 1;
                }
            }
        }
        let n = finite.len() as f64;
        let sum: f64 = finite.iter().map(|t| t.2).sum();
        let mean = sum / n;
        let min = finite.iter().map(|t| t.2).fold(f64::NAN, f64::min);
        let max = finite.iter().map(|t| t.2).fold(f64::NAN, f64::max);
        let var = finite.iter().map(|t| (t.2 - mean).powi(2)).sum::<f64>() / n;
        let range = s.range.unwrap_or(if min == max {
            (min - 0.5, max + 0.5)
        } else {
            (min, max)
        });
        let mut histogram = vec![0u32; s.bins];
        for &(_, _, v) in &finite {
            if v >= range.0 && v <= range.1 && s.bins > 0 {
                let b = ((v - range.0) * (s.bins as f64 / (range.1 - range.0))) as usize;
                histogram[b.min(s.bins - 1)] += 1;
            }
        }
        let cy = finite.iter().map(|t| f64::from(t.0) * t.2).sum::<f64>() / sum;
        let cx = finite.iter().map(|t| f64::from(t.1) * t.2).sum::<f64>() / sum;
        let empty = finite.is_empty();
        let nan = f64::NAN;
        Reductions {
            count: finite.len() as u64,
            nonfinite,
            sum,
            mean: if empty { nan } else { mean },
            min,
            max,
            std: if empty { nan } else { var.sqrt() },
            centroid_y: if sum == 0.0 { nan } else { cy },
            centroid_x: if sum == 0.0 { nan } else { cx },
            above: s
                .threshold
                .map(|t| finite.iter().filter(|f| f.2 > t).count() as u64),
            histogram,
            hist_range: if empty { (nan, nan) } else { range },
            empty_roi: roi.y >= ny || roi.x >= nx,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan())
            || a == b
            || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn agree(got: &Reductions, want: &Reductions) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.count, want.count);
        prop_assert_eq!(got.nonfinite, want.nonfinite);
        prop_assert_eq!(got.above, want.above);
        prop_assert_eq!(&got.histogram, &want.histogram);
        prop_assert_eq!(got.empty_roi, want.empty_roi);
        for (name, g, w) in [
            ("sum", got.sum, want.sum),
            ("mean", got.mean, want.mean),
            ("min", got.min, want.min),
            ("max", got.max, want.max),
            ("std", got.std, want.std),
            ("centroid_y", got.centroid_y, want.centroid_y),
            ("centroid_x", got.centroid_x, want.centroid_x),
            ("hist_lo", got.hist_range.0, want.hist_range.0),
            ("hist_hi", got.hist_range.1, want.hist_range.1),
        ] {
            prop_assert!(close(g, w), "{name}: got {g}, reference {w}");
        }
        Ok(())
    }

    fn settings() -> impl Strategy<Value = Settings> {
        (
            proptest::option::of((0u32..20, 0u32..20, 1u32..20, 1u32..20)),
            proptest::option::of(-10.0f64..300.0),
            0usize..12,
            proptest::option::of((-50.0f64..100.0, 1.0f64..400.0)),
        )
            .prop_map(|(roi, threshold, bins, range)| Settings {
                roi: roi.map(|(y, x, ny, nx)| Roi { y, x, ny, nx }),
                threshold,
                bins,
                range: range.map(|(lo, width)| (lo, lo + width)),
            })
    }

    proptest! {
        #[test]
        fn u16_frames_agree_with_the_reference(
            (ny, nx, data) in (1u32..16, 1u32..16).prop_flat_map(|(ny, nx)| {
                (Just(ny), Just(nx), proptest::collection::vec(any::<u16>(), (ny * nx) as usize))
            }),
            s in settings(),
        ) {
            let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            let values: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
            agree(&reduce(&payload, Dtype::U16, ny, nx, &s), &reference(&values, ny, nx, &s))?;
        }

        #[test]
        fn u8_frames_agree_with_the_reference(
            (ny, nx, data) in (1u32..16, 1u32..16).prop_flat_map(|(ny, nx)| {
                (Just(ny), Just(nx), proptest::collection::vec(any::<u8>(), (ny * nx) as usize))
            }),
            s in settings(),
        ) {
            let values: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
            agree(&reduce(&data, Dtype::U8, ny, nx, &s), &reference(&values, ny, nx, &s))?;
        }

        #[test]
        fn f32_frames_with_nan_and_inf_agree_with_the_reference(
            (ny, nx, data) in (1u32..16, 1u32..16).prop_flat_map(|(ny, nx)| {
                let pixel = prop_oneof![
                    8 => -1000.0f32..1000.0,
                    1 => Just(f32::NAN),
                    1 => Just(f32::INFINITY),
                    1 => Just(0.0f32),
                ];
                (Just(ny), Just(nx), proptest::collection::vec(pixel, (ny * nx) as usize))
            }),
            s in settings(),
        ) {
            let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            let values: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
            agree(&reduce(&payload, Dtype::F32, ny, nx, &s), &reference(&values, ny, nx, &s))?;
        }
    }

    #[test]
    fn an_roi_outside_the_frame_is_empty_with_nan_moments() {
        let s = Settings {
            roi: Some(Roi {
                y: 10,
                x: 0,
                ny: 4,
                nx: 4,
            }),
            threshold: Some(1.0),
            bins: 3,
            range: None,
        };
        let r = reduce(&[5u8; 16], Dtype::U8, 4, 4, &s);
        assert!(r.empty_roi);
        assert_eq!(
            (r.count, r.sum, r.above, r.histogram.clone()),
            (0, 0.0, Some(0), vec![0, 0, 0])
        );
        assert!(r.mean.is_nan() && r.min.is_nan() && r.std.is_nan() && r.centroid_x.is_nan());
    }

    #[test]
    fn an_all_nan_frame_counts_its_pixels_as_nonfinite() {
        let payload: Vec<u8> = [f32::NAN; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        let r = reduce(&payload, Dtype::F32, 2, 3, &Settings::default());
        assert_eq!((r.count, r.nonfinite, r.empty_roi), (0, 6, false));
        assert!(r.mean.is_nan() && r.max.is_nan());
    }

    #[test]
    fn a_single_bright_pixel_has_its_own_centroid() {
        let mut frame = [0u16; 12];
        frame[4 * 2 + 3] = 7;
        let payload: Vec<u8> = frame.iter().flat_map(|v| v.to_le_bytes()).collect();
        let r = reduce(
            &payload,
            Dtype::U16,
            3,
            4,
            &Settings {
                threshold: Some(6.0),
                ..Default::default()
            },
        );
        assert_eq!(
            (r.centroid_y, r.centroid_x, r.above, r.max),
            (2.0, 3.0, Some(1), 7.0)
        );
    }
}
