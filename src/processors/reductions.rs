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

use super::{
    image_shape, integer_list, number, unknown_key, ArgValue, Outputs, ProcessError, Processor,
    Refused,
};
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

/// The region a frame is reduced over: rows `y0..y1`, columns `x0..x1` (clipped).
#[derive(Debug, Clone, Copy)]
struct Region {
    y0: u32,
    y1: u32,
    x0: u32,
    x1: u32,
    nx: u32,
}

impl Region {
    fn of(roi: Option<Roi>, ny: u32, nx: u32) -> Region {
        let roi = roi.unwrap_or(Roi { y: 0, x: 0, ny, nx });
        let (y0, x0) = (roi.y.min(ny), roi.x.min(nx));
        let y1 = (u64::from(roi.y) + u64::from(roi.ny)).min(u64::from(ny)) as u32;
        let x1 = (u64::from(roi.x) + u64::from(roi.nx)).min(u64::from(nx)) as u32;
        Region { y0, y1, x0, x1, nx }
    }

    fn is_empty(&self) -> bool {
        self.y0 >= self.y1 || self.x0 >= self.x1
    }

    fn width(&self) -> usize {
        (self.x1 - self.x0) as usize
    }

    fn pixels(&self) -> u64 {
        u64::from(self.y1 - self.y0) * self.width() as u64
    }

    /// Row `y` of the region, typed: borrowed in place when the payload is aligned for
    /// `T` (ring payloads are page-aligned), else copied into `scratch`. A plain
    /// function, not a closure-taking loop, so it inlines into the AVX2 build.
    #[inline(always)]
    fn row<'a, T: bytemuck::Pod>(
        &self,
        payload: &'a [u8],
        y: u32,
        scratch: &'a mut Vec<T>,
    ) -> &'a [T] {
        let size = std::mem::size_of::<T>();
        let len = self.width() * size;
        let start = (y as usize * self.nx as usize + self.x0 as usize) * size;
        let bytes = &payload[start..start + len];
        match bytemuck::try_cast_slice::<u8, T>(bytes) {
            Ok(row) => row,
            Err(_) => {
                scratch.clear();
                scratch.extend(
                    bytes
                        .chunks_exact(size)
                        .map(bytemuck::pod_read_unaligned::<T>),
                );
                scratch
            }
        }
    }
}

/// The threshold as an integer comparison: `v > t` for an integer `v` is `v > floor(t)`.
#[derive(Debug, Clone, Copy)]
enum Above {
    Never,
    Always,
    Over(u32),
}

impl Above {
    fn of(threshold: f64) -> Above {
        if threshold.is_nan() || threshold >= f64::from(u32::MAX) {
            Above::Never
        } else if threshold < 0.0 {
            Above::Always
        } else {
            Above::Over(threshold.floor() as u32)
        }
    }

    /// The value pixels are compared with (`Never`/`Always` are settled afterwards).
    fn limit(self) -> u32 {
        match self {
            Above::Over(t) => t,
            _ => u32::MAX,
        }
    }

    fn count(self, counted: u64, pixels: u64) -> u64 {
        match self {
            Above::Never => 0,
            Above::Always => pixels,
            Above::Over(_) => counted,
        }
    }
}

/// Exact integer moments of the region's rows, summed as the rows go.
#[derive(Debug, Default)]
struct IntMoments {
    sum: u128,
    squares: u128,
    /// Σ y · (row sum): the centroid's row weight.
    wy: u128,
    min: u32,
    max: u32,
    above: u64,
}

/// One row of a u8/u16 frame, in one loop the compiler vectorises: the row's sum, sum of
/// squares, min, max and count above `limit`, and each pixel added to its column's sum.
#[inline(always)]
fn small_row<T: Copy + Into<u32>>(row: &[T], columns: &mut [u64], limit: u32) -> [u64; 5] {
    let (mut sum, mut squares, mut above) = (0u64, 0u64, 0u64);
    let (mut min, mut max) = (u32::MAX, 0u32);
    for (c, &v) in columns.iter_mut().zip(row) {
        let v: u32 = v.into();
        *c += u64::from(v);
        sum += u64::from(v);
        // v < 2^16, so v² < 2^32 and a row of at most 2^32 pixels fits 64 bits.
        squares += u64::from(v * v);
        min = min.min(v);
        max = max.max(v);
        above += u64::from(v > limit);
    }
    [sum, squares, u64::from(min), u64::from(max), above]
}

/// One row of a u32 frame: as [`small_row`], with the squares split in 16-bit halves
/// (v² = hi²·2^32 + 2·hi·lo·2^16 + lo²) so every partial sum fits 64 bits exactly.
#[inline(always)]
fn wide_row(row: &[u32], columns: &mut [u64], limit: u32) -> ([u64; 5], [u64; 3]) {
    let (mut sum, mut above) = (0u64, 0u64);
    let (mut hh, mut hl, mut ll) = (0u64, 0u64, 0u64);
    let (mut min, mut max) = (u32::MAX, 0u32);
    for (c, &v) in columns.iter_mut().zip(row) {
        *c += u64::from(v);
        sum += u64::from(v);
        let (hi, lo) = (u64::from(v >> 16), u64::from(v & 0xffff));
        hh += hi * hi;
        hl += hi * lo;
        ll += lo * lo;
        min = min.min(v);
        max = max.max(v);
        above += u64::from(v > limit);
    }
    (
        [sum, 0, u64::from(min), u64::from(max), above],
        [hh, hl, ll],
    )
}

/// Per-row results of a float row: finite count, sum, Σ(v − row mean)², min, max,
/// count above the threshold.
#[derive(Debug, Clone, Copy)]
struct FloatRow {
    count: u64,
    sum: f64,
    m2: f64,
    min: f64,
    max: f64,
    above: u64,
}

/// One row of an f32 frame: a loop over the row for the sums, then one for the squared
/// deviations from the row's mean (the row is in L1 by then; memory is read once).
#[inline(always)]
fn float_row<T: Pixel>(row: &[T], columns: &mut [f64], threshold: f64) -> FloatRow {
    let (mut count, mut sum, mut above) = (0u64, 0.0f64, 0u64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for (c, &v) in columns.iter_mut().zip(row) {
        let v = v.f64();
        let finite = v.is_finite();
        let x = if finite { v } else { 0.0 };
        *c += x;
        sum += x;
        count += u64::from(finite);
        // Compare-and-select (not f64::min, whose NaN rule does not vectorise): no NaN
        // reaches here.
        let (lo, hi) = if finite {
            (x, x)
        } else {
            (f64::INFINITY, f64::NEG_INFINITY)
        };
        min = if lo < min { lo } else { min };
        max = if hi > max { hi } else { max };
        above += u64::from(finite) & u64::from(x > threshold);
    }
    let mut m2 = 0.0f64;
    if count > 0 {
        let mean = sum / count as f64;
        for &v in row {
            let v = v.f64();
            let d = if v.is_finite() { v - mean } else { 0.0 };
            m2 += d * d;
        }
    }
    FloatRow {
        count,
        sum,
        m2,
        min,
        max,
        above,
    }
}

/// Bins a row of values into `index` (`bins` for none), with [`bin`]'s formula, in a
/// loop the compiler vectorises; the caller counts the indices.
#[inline(always)]
fn bin_row<T: Pixel>(row: &[T], index: &mut Vec<u32>, h: &HistSpec) {
    index.clear();
    index.extend(row.iter().map(|&v| {
        let v = v.f64();
        let inside = v >= h.lo && v <= h.hi;
        // min(trunc(t), last) = trunc(min(t, last)) for t >= 0 (every value inside the
        // range); clamped, the conversion needs no saturation and vectorises.
        let t = (v - h.lo) * h.scale;
        let t = if t < h.last_f { t } else { h.last_f };
        let b = (if t > 0.0 { t } else { 0.0 }) as i32 as u32;
        if inside {
            b
        } else {
            h.none
        }
    }));
}

/// A histogram's range and scale, as [`bin`] takes them.
#[derive(Debug, Clone, Copy)]
struct HistSpec {
    lo: f64,
    hi: f64,
    scale: f64,
    /// The last bin; `none` (= bins) collects values outside the range.
    last_f: f64,
    none: u32,
}

/// Counts `index` into four interleaved tables (no store-to-load stall on repeated
/// values) of `tables[k].len()` entries each.
#[inline(always)]
fn count_into<T: Copy + Into<usize>, const N: usize>(tables: &mut [[u32; N]; 4], values: &[T]) {
    let [t0, t1, t2, t3] = tables;
    let mut quads = values.chunks_exact(4);
    for q in &mut quads {
        t0[q[0].into()] += 1;
        t1[q[1].into()] += 1;
        t2[q[2].into()] += 1;
        t3[q[3].into()] += 1;
    }
    for &v in quads.remainder() {
        t0[v.into()] += 1;
    }
}

/// Merges four count tables into `merged` (u64: no overflow however many flushes).
fn merge<const N: usize>(tables: &mut [[u32; N]; 4], merged: &mut [u64]) {
    for (i, m) in merged.iter_mut().enumerate() {
        *m += tables.iter().map(|t| u64::from(t[i])).sum::<u64>();
    }
    for t in tables.iter_mut() {
        t.fill(0);
    }
}

/// A u8 or u16 pixel: every value indexes a count table.
trait SmallPixel: bytemuck::Pod + Into<u32> + Into<usize> + Into<f64> {}
impl SmallPixel for u8 {}
impl SmallPixel for u16 {}

/// u8 and u16 frames, in one pass over the region: exact integer moments and column
/// sums, and (with a histogram) every value counted in a table of `2^bits` entries;
/// the histogram is then made from the table, one [`bin`] per distinct value, so its
/// bins are the ones the per-pixel formula gives.
#[inline(always)]
fn reduce_small<T: SmallPixel, const N: usize>(
    payload: &[u8],
    region: Region,
    settings: &Settings,
    tables: &mut [[u32; N]; 4],
    values: &mut Vec<u64>,
) -> Reductions {
    let above = Above::of(settings.threshold.unwrap_or(f64::INFINITY));
    let limit = above.limit();
    let mut columns = vec![0u64; region.width()];
    let mut m = IntMoments {
        min: u32::MAX,
        ..Default::default()
    };
    let want_table = settings.bins > 0;
    values.clear();
    values.resize(if want_table { N } else { 0 }, 0);
    // Each table entry counts at most this many pixels before the tables are merged.
    let mut since_merge = 0u64;
    let mut scratch = Vec::new();
    for y in region.y0..region.y1 {
        let row = region.row::<T>(payload, y, &mut scratch);
        let [sum, squares, min, max, over] = small_row(row, &mut columns, limit);
        m.sum += u128::from(sum);
        m.squares += u128::from(squares);
        m.wy += u128::from(y) * u128::from(sum);
        m.min = m.min.min(min as u32);
        m.max = m.max.max(max as u32);
        m.above += over;
        if want_table {
            if since_merge + row.len() as u64 > u64::from(u32::MAX) {
                merge(tables, values);
                since_merge = 0;
            }
            since_merge += row.len() as u64;
            count_into(tables, row);
        }
    }
    if want_table {
        // Leaves the tables zeroed for the next frame.
        merge(tables, values);
    }
    let mut r = integer_result(&m, &columns, region, above, settings);
    if want_table {
        let h = hist_spec(r.hist_range, settings.bins);
        for v in m.min..=m.max {
            let n = values[v as usize];
            if n > 0 {
                if let Some(b) = bin(f64::from(v), h.lo, h.hi, h.scale, settings.bins) {
                    r.histogram[b] = r.histogram[b].wrapping_add(n as u32);
                }
            }
        }
    }
    r
}

/// u32 frames: exact integer moments in one pass; a histogram takes a second pass
/// (its range may be the frame's min and max).
#[inline(always)]
fn reduce_wide(payload: &[u8], region: Region, settings: &Settings) -> Reductions {
    let above = Above::of(settings.threshold.unwrap_or(f64::INFINITY));
    let limit = above.limit();
    let mut columns = vec![0u64; region.width()];
    let mut m = IntMoments {
        min: u32::MAX,
        ..Default::default()
    };
    let mut scratch = Vec::new();
    for y in region.y0..region.y1 {
        let row = region.row::<u32>(payload, y, &mut scratch);
        let ([sum, _, min, max, over], [hh, hl, ll]) = wide_row(row, &mut columns, limit);
        m.sum += u128::from(sum);
        m.squares += (u128::from(hh) << 32) + (u128::from(hl) << 17) + u128::from(ll);
        m.wy += u128::from(y) * u128::from(sum);
        m.min = m.min.min(min as u32);
        m.max = m.max.max(max as u32);
        m.above += over;
    }
    let mut r = integer_result(&m, &columns, region, above, settings);
    if settings.bins > 0 {
        histogram_pass::<u32>(payload, region, &mut r, settings.bins);
    }
    r
}

/// Bins every pixel of the region into `r.histogram` over `r.hist_range`.
#[inline(always)]
fn histogram_pass<T: Pixel>(payload: &[u8], region: Region, r: &mut Reductions, bins: usize) {
    let h = hist_spec(r.hist_range, bins);
    // `bin` places nothing in an empty or NaN range.
    if h.hi.partial_cmp(&h.lo) != Some(std::cmp::Ordering::Greater) {
        return;
    }
    let mut counts = vec![[0u32; 4]; bins + 1];
    let mut index = Vec::with_capacity(region.width());
    let mut scratch = Vec::new();
    for y in region.y0..region.y1 {
        let row = region.row::<T>(payload, y, &mut scratch);
        bin_row(row, &mut index, &h);
        let mut quads = index.chunks_exact(4);
        for q in &mut quads {
            counts[q[0] as usize][0] += 1;
            counts[q[1] as usize][1] += 1;
            counts[q[2] as usize][2] += 1;
            counts[q[3] as usize][3] += 1;
        }
        for &b in quads.remainder() {
            counts[b as usize][0] += 1;
        }
    }
    for (out, c) in r.histogram.iter_mut().zip(&counts) {
        *out = c.iter().fold(0u32, |a, &n| a.wrapping_add(n));
    }
}

fn hist_spec((lo, hi): (f64, f64), bins: usize) -> HistSpec {
    HistSpec {
        lo,
        hi,
        scale: bins as f64 / (hi - lo),
        last_f: bins.saturating_sub(1) as f64,
        none: bins as u32,
    }
}

/// The histogram range: `range`, or the frame's min and max (widened when equal).
fn hist_range(settings: &Settings, min: f64, max: f64) -> (f64, f64) {
    settings.range.unwrap_or(if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    })
}

/// Reductions from exact integer moments (the histogram left empty for the caller).
fn integer_result(
    m: &IntMoments,
    columns: &[u64],
    region: Region,
    above: Above,
    settings: &Settings,
) -> Reductions {
    let pixels = region.pixels();
    let wx = columns
        .iter()
        .enumerate()
        .map(|(i, &c)| (region.x0 as u128 + i as u128) * u128::from(c))
        .sum::<u128>();
    let n = u128::from(pixels);
    let sum = m.sum as f64;
    // n·Σv² − (Σv)² is exact in 128 bits; one rounding at the end.
    let spread = n * m.squares - m.sum * m.sum;
    let (min, max) = (f64::from(m.min), f64::from(m.max));
    let (cy, cx) = if m.sum == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (m.wy as f64 / sum, wx as f64 / sum)
    };
    Reductions {
        count: pixels,
        nonfinite: 0,
        sum,
        mean: sum / pixels as f64,
        min,
        max,
        std: (spread as f64 / (pixels as f64 * pixels as f64)).sqrt(),
        centroid_y: cy,
        centroid_x: cx,
        above: settings.threshold.map(|_| above.count(m.above, pixels)),
        histogram: vec![0; settings.bins],
        hist_range: hist_range(settings, min, max),
        empty_roi: false,
    }
}

/// A pixel type reduced in f64: the floats, and the integer types without a typed path
/// (signed, and 64-bit, whose values beyond 2^53 round).
trait Pixel: bytemuck::Pod {
    fn f64(self) -> f64;
}

macro_rules! pixel_as_f64 {
    ($($t:ty),*) => {
        $(impl Pixel for $t {
            #[inline(always)]
            fn f64(self) -> f64 {
                self as f64
            }
        })*
    };
}
pixel_as_f64!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

/// f32 and f64 frames, and integer types without a typed path, in f64: one pass for the
/// moments (rows merged with Chan's formula, so the variance does not cancel), a second
/// for a histogram.
#[inline(always)]
fn reduce_float<T: Pixel>(payload: &[u8], region: Region, settings: &Settings) -> Reductions {
    let threshold = settings.threshold.unwrap_or(f64::INFINITY);
    let mut columns = vec![0.0f64; region.width()];
    let (mut count, mut sum, mut above) = (0u64, 0.0f64, 0u64);
    let (mut mean, mut m2) = (0.0f64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut wy = 0.0f64;
    let mut scratch = Vec::new();
    for y in region.y0..region.y1 {
        let row = region.row::<T>(payload, y, &mut scratch);
        let r = float_row(row, &mut columns, threshold);
        if r.count > 0 {
            let row_mean = r.sum / r.count as f64;
            let total = count + r.count;
            let delta = row_mean - mean;
            mean += delta * (r.count as f64 / total as f64);
            m2 += r.m2 + delta * delta * (count as f64 * r.count as f64 / total as f64);
            count = total;
        }
        sum += r.sum;
        wy += f64::from(y) * r.sum;
        min = min.min(r.min);
        max = max.max(r.max);
        above += r.above;
    }
    let nonfinite = region.pixels() - count;
    if count == 0 {
        return empty(nonfinite, settings, false);
    }
    let wx = columns
        .iter()
        .enumerate()
        .map(|(i, &c)| (region.x0 as usize + i) as f64 * c)
        .sum::<f64>();
    let (cy, cx) = if sum == 0.0 {
        (f64::NAN, f64::NAN)
    } else {
        (wy / sum, wx / sum)
    };
    let mut r = Reductions {
        count,
        nonfinite,
        sum,
        mean: sum / count as f64,
        min,
        max,
        std: (m2 / count as f64).sqrt(),
        centroid_y: cy,
        centroid_x: cx,
        above: settings.threshold.map(|_| above),
        histogram: vec![0; settings.bins],
        hist_range: hist_range(settings, min, max),
        empty_roi: false,
    };
    if settings.bins > 0 {
        // Non-finite pixels fail the range test, so they land in no bin.
        histogram_pass::<T>(payload, region, &mut r, settings.bins);
    }
    r
}

/// The result for a region without a finite pixel.
fn empty(nonfinite: u64, settings: &Settings, empty_roi: bool) -> Reductions {
    let nan = f64::NAN;
    Reductions {
        count: 0,
        nonfinite,
        sum: 0.0,
        mean: nan,
        min: nan,
        max: nan,
        std: nan,
        centroid_y: nan,
        centroid_x: nan,
        above: settings.threshold.map(|_| 0),
        histogram: vec![0; settings.bins],
        hist_range: (nan, nan),
        empty_roi,
    }
}

/// Reduces a `ny` × `nx` frame in one pass over the region (a histogram of u32 or f32
/// takes a second): typed integer arithmetic for u8, u16 and u32, exact until the final
/// conversion to f64; the other types in f64.
pub fn reduce(payload: &[u8], dtype: Dtype, ny: u32, nx: u32, settings: &Settings) -> Reductions {
    Scratch::default().reduce(payload, dtype, ny, nx, settings)
}

/// Value-count tables kept from frame to frame (allocated on first use, left zeroed).
#[derive(Default)]
pub struct Scratch {
    u8_tables: Option<Box<[[u32; 256]; 4]>>,
    u16_tables: Option<Box<[[u32; 65536]; 4]>>,
    values: Vec<u64>,
}

impl Scratch {
    /// [`reduce`], reusing this scratch space.
    pub fn reduce(
        &mut self,
        payload: &[u8],
        dtype: Dtype,
        ny: u32,
        nx: u32,
        settings: &Settings,
    ) -> Reductions {
        let region = Region::of(settings.roi, ny, nx);
        if region.is_empty() {
            return empty(0, settings, true);
        }
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 (checked at run time just above).
            return unsafe { self.reduce_avx2(payload, dtype, region, settings) };
        }
        self.reduce_typed(payload, dtype, region, settings)
    }

    #[inline(always)]
    fn reduce_typed(
        &mut self,
        payload: &[u8],
        dtype: Dtype,
        region: Region,
        settings: &Settings,
    ) -> Reductions {
        let values = &mut self.values;
        match dtype {
            Dtype::U8 => {
                let t = self.u8_tables.get_or_insert_with(bytemuck::zeroed_box);
                reduce_small::<u8, 256>(payload, region, settings, t, values)
            }
            Dtype::U16 => {
                let t = self.u16_tables.get_or_insert_with(bytemuck::zeroed_box);
                reduce_small::<u16, 65536>(payload, region, settings, t, values)
            }
            Dtype::U32 => reduce_wide(payload, region, settings),
            Dtype::F32 => reduce_float::<f32>(payload, region, settings),
            Dtype::F64 => reduce_float::<f64>(payload, region, settings),
            Dtype::I8 => reduce_float::<i8>(payload, region, settings),
            Dtype::I16 => reduce_float::<i16>(payload, region, settings),
            Dtype::I32 => reduce_float::<i32>(payload, region, settings),
            Dtype::I64 => reduce_float::<i64>(payload, region, settings),
            Dtype::U64 => reduce_float::<u64>(payload, region, settings),
        }
    }

    /// The same code as `reduce_typed`, compiled for AVX2: the row loops are written
    /// for the compiler to vectorise, and 256-bit lanes double what one instruction does.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn reduce_avx2(
        &mut self,
        payload: &[u8],
        dtype: Dtype,
        region: Region,
        settings: &Settings,
    ) -> Reductions {
        self.reduce_typed(payload, dtype, region, settings)
    }
}

/// Whether the CPU has AVX2 (asked once).
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    static HAS_AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS_AVX2.get_or_init(|| is_x86_feature_detected!("avx2"))
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
    scratch: Scratch,
    publish: Publish,
    frames: u64,
    empty_roi: u64,
}

impl Default for Reduce {
    fn default() -> Self {
        Reduce {
            settings: Settings::default(),
            scratch: Scratch::default(),
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
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        match key {
            "roi" => {
                let v = integer_list(key, value, 4)?;
                if v[2] == 0 || v[3] == 0 || v.iter().any(|&n| n > u64::from(u32::MAX)) {
                    return Err(format!(
                        "roi = [y, x, ny, nx] needs ny and nx of at least 1, got {value}"
                    )
                    .into());
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
                    _ => {
                        return Err(
                            format!("range must be [lo, hi] with lo < hi, got {value}").into()
                        )
                    }
                }
            }
            "publish" => {
                self.publish = match value.as_str() {
                    Some("record") => Publish::Record,
                    Some("frame") => Publish::Frame,
                    _ => {
                        return Err(
                            format!("publish must be \"record\" or \"frame\", got {value}").into(),
                        )
                    }
                }
            }
            _ => return Err(unknown_key("stats", key, &KEYS).into()),
        }
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let header = frame.header();
        let (ny, nx) = image_shape("stats", header)?;
        let r = self
            .scratch
            .reduce(frame.payload(), header.dtype, ny, nx, &self.settings);
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
        let attributes = frame.raw_attributes()?;
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
        result.map_err(Into::into)
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
