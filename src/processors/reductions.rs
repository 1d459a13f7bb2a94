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
    image_shape, integer_list, number, unknown_key, ArgValue, InputFrames, Outputs, ProcessError,
    Processor, Refused,
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

/// Moments of one u8/u16 row.
#[derive(Debug)]
struct SmallRow {
    sum: u64,
    squares: u64,
    min: u32,
    max: u32,
    above: u64,
}

/// One row of a u8/u16 frame, in one loop the compiler vectorises: the row's sum, sum of
/// squares, min, max and count above `limit`, and each pixel added to its column's sum.
/// Every quantity is at most 32 bits wide (sums over at most 2^16 pixels), so a vector
/// holds 8 or more pixels.
#[inline(always)]
fn small_row<T: SmallPixel>(row: &[T], columns: &mut [u32], limit: T) -> SmallRow {
    let mut r = SmallRow {
        sum: 0,
        squares: 0,
        min: u32::MAX,
        max: 0,
        above: 0,
    };
    for (row, columns) in row.chunks(1 << 16).zip(columns.chunks_mut(1 << 16)) {
        let (mut sum, mut above) = (0u32, 0u32);
        // w² < 2^32 in two 16-bit halves, each summed over 2^16 pixels below 2^32.
        let (mut squares_hi, mut squares_lo) = (0u32, 0u32);
        let (mut min, mut max) = (T::MAX, T::MIN);
        for (c, &v) in columns.iter_mut().zip(row) {
            let w: u32 = v.into();
            *c += w;
            sum += w;
            let square = w * w;
            squares_hi += square >> 16;
            squares_lo += square & 0xffff;
            min = min.min(v);
            max = max.max(v);
            above += u32::from(v > limit);
        }
        r.sum += u64::from(sum);
        r.squares += (u64::from(squares_hi) << 16) + u64::from(squares_lo);
        r.min = r.min.min(min.into());
        r.max = r.max.max(max.into());
        r.above += u64::from(above);
    }
    r
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

/// One row of a frame reduced in f64: a loop over the row for the sums, then one for the
/// squared deviations from the row's mean (the row is in L1 by then; memory is read once).
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

/// The histogram bin of `v`: `floor((v - lo) * scale)` with `scale = bins / (hi - lo)`,
/// `hi` in the last bin, `h.none` outside `[lo, hi]`; written so that a loop of it
/// vectorises.
#[inline(always)]
fn bin_of(v: f64, h: &HistSpec) -> u32 {
    bin_inside(v, v >= h.lo && v <= h.hi, h)
}

/// 2^52: the f64 whose unit in the last place is 1.
const TWO_TO_52: f64 = 4_503_599_627_370_496.0;

/// [`bin_of`] with the range test done by the caller.
#[inline(always)]
fn bin_inside(v: f64, inside: bool, h: &HistSpec) -> u32 {
    // Inside the range t >= 0, and min(floor(t), last) = floor(min(t, last)). Outside,
    // t may be anything: its bits are replaced by `none` below.
    let t = (v - h.lo) * h.scale;
    let t = if t < h.last_f { t } else { h.last_f };
    // For t in [0, last] (last <= i32::MAX, see `hist_spec`) 2^52 + floor(t) is exact,
    // and its low mantissa bits are floor(t). Safe and vectorised, where `as`
    // (saturating, NaN to 0) is scalar.
    let b = (t.floor() + TWO_TO_52).to_bits() as u32;
    // `none` outside: all ones, capped at `none` (inside, b < none). So the mask stays as
    // wide as the indices, where a select is made on the f64s, its mask widened to them.
    (b | u32::from(!inside).wrapping_neg()).min(h.none)
}

/// A histogram's range and scale, as [`bin_of`] takes them.
#[derive(Debug, Clone, Copy)]
struct HistSpec {
    lo: f64,
    hi: f64,
    scale: f64,
    /// The last bin; `none` (= bins) collects values outside the range.
    last_f: f64,
    none: u32,
}

/// Interleaved count lanes per bin: pixel `i` counts in lane `i % 8`, so a run of equal
/// values (a mostly-zero frame) increments each lane every 8th pixel, longer than it
/// takes a store to reach the next load of the same counter.
const COUNT_LANES: usize = 8;

/// Adds one to `counts[key(v)]` for each value.
#[inline(always)]
fn count_keys<T: Copy>(counts: &mut [[u32; COUNT_LANES]], values: &[T], key: impl Fn(T) -> usize) {
    let mut chunks = values.chunks_exact(COUNT_LANES);
    for chunk in &mut chunks {
        for (lane, &v) in chunk.iter().enumerate() {
            counts[key(v)][lane] += 1;
        }
    }
    for &v in chunks.remainder() {
        counts[key(v)][0] += 1;
    }
}

/// Pixels per block in [`count_blocks`].
const BLOCK: usize = 16;

/// Pixels per block in f32's [`Pixel::count_row`]: four cache lines, over which its test
/// (a min, a max and two bins in f64) costs less per pixel than over [`BLOCK`].
const VALUE_BLOCK: usize = 64;

/// Counts pixels by their bins in `lut` (u16). Bins rise with the value inside the
/// range (values below and above it share `none`), so a block whose min and max share a
/// bin other than `none` lies wholly in it and counts at once: neighbouring pixels
/// mostly do (dark areas, smooth ones, a ramp).
#[inline(always)]
fn count_blocks<T: SmallPixel>(
    counts: &mut [[u32; COUNT_LANES]],
    row: &[T],
    lut: &[u32; 1 << 16],
    none: u32,
) {
    let bin = |v: T| lut[Into::<usize>::into(v)] as usize;
    let mut blocks = row.chunks_exact(BLOCK);
    for (i, block) in (&mut blocks).enumerate() {
        let lo = block.iter().copied().fold(T::MAX, Ord::min);
        let hi = block.iter().copied().fold(T::MIN, Ord::max);
        let b = lut[Into::<usize>::into(lo)];
        if b == lut[Into::<usize>::into(hi)] && b != none {
            // Lanes in turn: consecutive blocks in one bin do not wait on each other.
            counts[b as usize][i % COUNT_LANES] += BLOCK as u32;
        } else {
            count_keys(counts, block, bin);
        }
    }
    count_keys(counts, blocks.remainder(), bin);
}

/// The histogram from lane counts (the entry past the last bin, values in none, left out).
fn histogram_of(counts: &[[u32; COUNT_LANES]], histogram: &mut [u32]) {
    for (out, c) in histogram.iter_mut().zip(counts) {
        *out = c.iter().fold(0u32, |a, &n| a.wrapping_add(n));
    }
}

/// A u8 or u16 pixel: every value indexes a table of 2^16 entries.
trait SmallPixel: bytemuck::Pod + Ord + Into<u32> + Into<usize> + TryFrom<u32> {
    const MIN: Self;
    const MAX: Self;
}
impl SmallPixel for u8 {
    const MIN: u8 = u8::MIN;
    const MAX: u8 = u8::MAX;
}
impl SmallPixel for u16 {
    const MIN: u16 = u16::MIN;
    const MAX: u16 = u16::MAX;
}

/// Sets `lut[v]` to the bin of `v` for `v` in `lo..=hi`.
fn fill_lut(lut: &mut [u32; 1 << 16], lo: u32, hi: u32, h: &HistSpec) {
    for (i, e) in lut[lo as usize..=hi as usize].iter_mut().enumerate() {
        // Values below 2^16: i32 converts to f64 in vector instructions.
        *e = bin_of(f64::from(lo as i32 + i as i32), h);
    }
}

/// u8 and u16 frames: exact integer moments and column sums in one pass. A u16
/// histogram counts each pixel's bin, looked up in a table of the bin of every value;
/// the table needs the range: given, rows are counted in the same pass; else, once the
/// frame's min and max are known, in a second. A u8 histogram (no `lut`) counts each
/// value in the one pass (256 entries, in L1: cheaper per pixel than a lookup) and bins
/// the values at the end.
#[inline(always)]
fn reduce_small<T: SmallPixel>(
    payload: &[u8],
    region: Region,
    settings: &Settings,
    mut lut: Option<&mut [u32; 1 << 16]>,
) -> Reductions {
    let above = Above::of(settings.threshold.unwrap_or(f64::INFINITY));
    // No pixel is above a limit past the type's largest value.
    let limit = T::try_from(above.limit()).unwrap_or(T::MAX);
    let mut columns = vec![0u64; region.width()];
    // Column sums of up to 2^16 rows (below 2^32), added into `columns` every 2^16 rows.
    let mut partial = vec![0u32; region.width()];
    let widen = |partial: &mut [u32], columns: &mut [u64]| {
        for (c, p) in columns.iter_mut().zip(partial.iter_mut()) {
            *c += u64::from(std::mem::take(p));
        }
    };
    let mut m = IntMoments {
        min: u32::MAX,
        ..Default::default()
    };
    let mut counts = vec![[0u32; COUNT_LANES]; settings.bins + 1];
    let by_value = lut.is_none() && settings.bins > 0;
    let mut values = vec![[0u32; COUNT_LANES]; if by_value { 256 } else { 0 }];
    let mut fused = None;
    let given = settings.range.and_then(|r| hist_spec(r, settings.bins));
    if let (Some(lut), Some(h)) = (lut.as_deref_mut(), given) {
        fill_lut(lut, 0, T::MAX.into(), &h);
        fused = Some(h);
    }
    let mut scratch = Vec::new();
    for (i, y) in (region.y0..region.y1).enumerate() {
        if i > 0 && i % (1 << 16) == 0 {
            widen(&mut partial, &mut columns);
        }
        let row = region.row::<T>(payload, y, &mut scratch);
        let r = small_row(row, &mut partial, limit);
        m.sum += u128::from(r.sum);
        m.squares += u128::from(r.squares);
        m.wy += u128::from(y) * u128::from(r.sum);
        m.min = m.min.min(r.min);
        m.max = m.max.max(r.max);
        m.above += r.above;
        if by_value {
            count_keys(&mut values, row, Into::<usize>::into);
        }
        if let (Some(h), Some(lut)) = (&fused, lut.as_deref()) {
            count_blocks(&mut counts, row, lut, h.none);
        }
    }
    widen(&mut partial, &mut columns);
    let mut r = integer_result(&m, &columns, region, above, settings);
    match (hist_spec(r.hist_range, settings.bins), lut) {
        (Some(h), None) => {
            for (v, lanes) in values.iter().enumerate() {
                let b = bin_of(v as f64, &h) as usize;
                for &n in lanes {
                    counts[b][0] = counts[b][0].wrapping_add(n);
                }
            }
        }
        (Some(h), Some(lut)) if fused.is_none() => {
            fill_lut(lut, m.min, m.max, &h);
            for y in region.y0..region.y1 {
                let row = region.row::<T>(payload, y, &mut scratch);
                count_blocks(&mut counts, row, lut, h.none);
            }
        }
        _ => {}
    }
    histogram_of(&counts, &mut r.histogram);
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
    if let Some(h) = hist_spec(r.hist_range, settings.bins) {
        let mut counts = vec![[0u32; COUNT_LANES]; settings.bins + 1];
        histogram_pass::<u32>(payload, region, &h, &mut counts);
        histogram_of(&counts, &mut r.histogram);
    }
    r
}

/// Bins and counts every pixel of the region.
#[inline(always)]
fn histogram_pass<T: Pixel>(
    payload: &[u8],
    region: Region,
    h: &HistSpec,
    counts: &mut [[u32; COUNT_LANES]],
) {
    let mut index = Vec::with_capacity(region.width());
    let mut scratch = Vec::new();
    for y in region.y0..region.y1 {
        let row = region.row::<T>(payload, y, &mut scratch);
        T::count_row(row, h, &mut index, counts);
    }
}

/// The histogram's spec, or `None` when no value can fall in a bin (no bins, or an
/// empty or NaN range).
fn hist_spec((lo, hi): (f64, f64), bins: usize) -> Option<HistSpec> {
    (bins > 0 && hi > lo).then(|| HistSpec {
        lo,
        hi,
        scale: bins as f64 / (hi - lo),
        // At most i32::MAX, which `bin_of`'s conversion relies on (counts for more bins
        // could not be allocated anyway).
        last_f: (bins - 1).min(i32::MAX as usize) as f64,
        none: bins as u32,
    })
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

    /// One row's moments: [`float_row`], unless the type has a faster exact loop.
    #[inline(always)]
    fn row(row: &[Self], columns: &mut [f64], threshold: f64) -> FloatRow {
        float_row(row, columns, threshold)
    }

    /// Counts a row's values by their bins (`index`: room for the row's bin indices).
    #[inline(always)]
    fn count_row(
        row: &[Self],
        h: &HistSpec,
        index: &mut Vec<u32>,
        counts: &mut [[u32; COUNT_LANES]],
    ) {
        index.clear();
        index.extend(row.iter().map(|&v| bin_of(v.f64(), h)));
        count_keys(counts, index, |b| b as usize);
    }
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
pixel_as_f64!(u32, u64, i8, i16, i32, i64, f64);

impl Pixel for f32 {
    #[inline(always)]
    fn f64(self) -> f64 {
        f64::from(self)
    }

    #[inline(always)]
    fn row(row: &[f32], columns: &mut [f64], threshold: f64) -> FloatRow {
        f32_row(row, columns, threshold)
    }

    /// As the u16 path's [`count_blocks`]: bins rise with the value inside the range, so
    /// a block whose min is inside and shares its bin with the max lies wholly in that
    /// bin and counts at once; neighbouring pixels mostly do. Min and max are taken as
    /// [`ordered`] integers (which vectorise), among which NaN lies beyond ±inf: outside
    /// the range, in no bin. Noise fails every test: after two misses in a row only every
    /// 8th block is tested. Other pixels are binned one by one, the range test in f32
    /// (exact: the bounds rounded inwards to f32s), on twice the lanes of an f64 one.
    #[inline(always)]
    fn count_row(
        row: &[f32],
        h: &HistSpec,
        index: &mut Vec<u32>,
        counts: &mut [[u32; COUNT_LANES]],
    ) {
        let (lo, hi) = (-f32_below(-h.lo), f32_below(h.hi));
        let bin = |v: f32| bin_inside(f64::from(v), v >= lo && v <= hi, h);
        let float = |k: i32| f32::from_bits(ordered(k) as u32);
        index.clear();
        let mut blocks = row.chunks_exact(VALUE_BLOCK);
        let mut misses = 0;
        for (i, block) in (&mut blocks).enumerate() {
            if misses < 2 || i % 8 == 0 {
                let (min, max) = block.iter().fold((i32::MAX, i32::MIN), |(min, max), &v| {
                    let k = ordered(v.to_bits() as i32);
                    (min.min(k), max.max(k))
                });
                let (min, max) = (float(min), float(max));
                let b = bin(min);
                if min >= lo && b == bin(max) {
                    // Lanes in turn: consecutive blocks in one bin do not wait on each other.
                    counts[b as usize][i % COUNT_LANES] += VALUE_BLOCK as u32;
                    misses = 0;
                    continue;
                }
                misses += 1;
            }
            index.extend(block.iter().map(|&v| bin(v)));
        }
        index.extend(blocks.remainder().iter().map(|&v| bin(v)));
        count_keys(counts, index, |b| b as usize);
    }
}

/// Whether an f32 is finite, as a float comparison (false for NaN) that vectorises.
#[inline(always)]
fn finite(v: f32) -> bool {
    v.abs() < f32::INFINITY
}

/// The largest f32 at most `t` (+inf for NaN): for an f32 `v`, `v > t` exactly when
/// `v > f32_below(t)`, so the threshold test can run in f32 lanes.
fn f32_below(t: f64) -> f32 {
    if t.is_nan() {
        return f32::INFINITY;
    }
    let f = t as f32;
    if f64::from(f) <= t {
        return f;
    }
    // The next f32 down from f (> t, so not -inf); f32::next_down is newer than the MSRV.
    let bits = f.to_bits();
    f32::from_bits(if f == 0.0 {
        0x8000_0001
    } else if f > 0.0 {
        bits - 1
    } else {
        bits + 1
    })
}

/// An f32's bits as an i32 in the order of the floats (for all but NaN; -0 below +0), so
/// min and max are integer reductions, which vectorise (float ones do not: NaN rules).
/// Its own inverse.
#[inline(always)]
fn ordered(bits: i32) -> i32 {
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// Independent f64 lanes of [`shifted_sums`].
const LANES: usize = 16;

/// `v − shift` as an f64, 0 when `v` is not finite; `v` (or 0) is added to `column`.
#[inline(always)]
fn shifted(v: f32, column: &mut f64, shift: f64) -> f64 {
    // The finite test on the f64: the same answer, in the lanes of the sums.
    let x = f64::from(v);
    let ok = x.abs() < f64::INFINITY;
    *column += if ok { x } else { 0.0 };
    if ok {
        x - shift
    } else {
        0.0
    }
}

/// Σd and Σd² over a row's finite values, d = v − `shift`, each value added to its
/// column's sum; in [`LANES`] lanes: one f64 sum is a chain of additions the compiler
/// may not reorder, so it would stay scalar; lanes are vectors. Each lane adds up four
/// pixels a lane-width apart before adding them into its sums, the loop's carried
/// dependencies, which are then taken a quarter as often.
#[inline(always)]
fn shifted_sums(row: &[f32], columns: &mut [f64], shift: f64) -> (f64, f64) {
    const STEP: usize = 4 * LANES;
    let (mut sums, mut squares) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut pixels = row.chunks_exact(STEP);
    let mut column = columns.chunks_exact_mut(STEP);
    for (p, c) in (&mut pixels).zip(&mut column) {
        for lane in 0..LANES {
            let d: [f64; 4] = std::array::from_fn(|k| {
                shifted(p[lane + k * LANES], &mut c[lane + k * LANES], shift)
            });
            sums[lane] += (d[0] + d[1]) + (d[2] + d[3]);
            squares[lane] += (d[0] * d[0] + d[1] * d[1]) + (d[2] * d[2] + d[3] * d[3]);
        }
    }
    for (&v, c) in pixels.remainder().iter().zip(column.into_remainder()) {
        let d = shifted(v, c, shift);
        sums[0] += d;
        squares[0] += d * d;
    }
    (sums.iter().sum(), squares.iter().sum())
}

/// One row of an f32 frame, as [`float_row`] computes it, in two loops that vectorise.
/// First the column sums and the moments, in f64 lanes: the loop with the most
/// arithmetic, so that the row's arrival from memory overlaps it. The moments are
/// summed from a shift, the row's first finite value, in one pass: (shift − mean)² is
/// at most Σ(v − mean)², so Σd² − (Σd)²/n loses at most log2(n + 1) bits to
/// cancellation (11 of 53 for 2048 pixels), where Σv² − (Σv)²/n could lose them all.
/// Then the finite count, min, max (as ordered integers) and threshold test (in f32,
/// exact), in f32 lanes over the row in L1.
#[inline(always)]
fn f32_row(row: &[f32], columns: &mut [f64], threshold: f64) -> FloatRow {
    let Some(&first) = row.iter().find(|&&v| finite(v)) else {
        return FloatRow {
            count: 0,
            sum: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            above: 0,
        };
    };
    let shift = f64::from(first);
    let (sum, squares) = shifted_sums(row, columns, shift);
    let t = f32_below(threshold);
    // u32 counts: a row has fewer than 2^32 pixels.
    let (mut count, mut above) = (0u32, 0u32);
    let (mut min, mut max) = (i32::MAX, i32::MIN);
    for &v in row {
        let ok = finite(v);
        count += u32::from(ok);
        let k = ordered(v.to_bits() as i32);
        min = min.min(if ok { k } else { i32::MAX });
        max = max.max(if ok { k } else { i32::MIN });
        above += u32::from(ok && v > t);
    }
    let n = f64::from(count);
    let float = |k: i32| f64::from(f32::from_bits(ordered(k) as u32));
    FloatRow {
        count: u64::from(count),
        sum: n * shift + sum,
        // Rounding can leave it a hair below zero.
        m2: (squares - sum * sum / n).max(0.0),
        min: float(min),
        max: float(max),
        above: u64::from(above),
    }
}

/// f32 and f64 frames, and integer types without a typed path, in f64: one pass for the
/// moments (rows merged with Chan's formula, so the variance does not cancel); a
/// histogram bins each row in the same pass when its range is given, else in a second
/// pass once the frame's min and max are known. Non-finite pixels fail the range test,
/// so they land in no bin.
#[inline(always)]
fn reduce_float<T: Pixel>(payload: &[u8], region: Region, settings: &Settings) -> Reductions {
    let threshold = settings.threshold.unwrap_or(f64::INFINITY);
    let mut columns = vec![0.0f64; region.width()];
    let (mut count, mut sum, mut above) = (0u64, 0.0f64, 0u64);
    let (mut mean, mut m2) = (0.0f64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut wy = 0.0f64;
    let mut counts = vec![[0u32; COUNT_LANES]; settings.bins + 1];
    let fused = settings.range.and_then(|r| hist_spec(r, settings.bins));
    let mut index = Vec::new();
    let mut scratch = Vec::new();
    for y in region.y0..region.y1 {
        let row = region.row::<T>(payload, y, &mut scratch);
        let r = T::row(row, &mut columns, threshold);
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
        if let Some(h) = &fused {
            T::count_row(row, h, &mut index, &mut counts);
        }
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
    if fused.is_none() {
        if let Some(h) = hist_spec(r.hist_range, settings.bins) {
            histogram_pass::<T>(payload, region, &h, &mut counts);
        }
    }
    histogram_of(&counts, &mut r.histogram);
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

/// Reduces a `ny` × `nx` frame in one pass over the region (a histogram takes a second
/// unless its range is given, and always for u32): typed integer arithmetic for u8, u16 and u32, exact until the final
/// conversion to f64; the other types in f64.
pub fn reduce(payload: &[u8], dtype: Dtype, ny: u32, nx: u32, settings: &Settings) -> Reductions {
    Scratch::default().reduce(payload, dtype, ny, nx, settings)
}

/// Tables kept from frame to frame (allocated on first use).
#[derive(Default)]
pub struct Scratch {
    /// The bin of each u16 value.
    lut: Option<Box<[u32; 1 << 16]>>,
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
        match dtype {
            Dtype::U8 => reduce_small::<u8>(payload, region, settings, None),
            Dtype::U16 => {
                let lut = self.lut.get_or_insert_with(bytemuck::zeroed_box);
                reduce_small::<u16>(payload, region, settings, Some(lut))
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

    fn output_bytes(&self, input: &InputFrames) -> u64 {
        match self.publish {
            Publish::Frame => input.bytes,
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

    proptest! {
        // Rows wider than the vector lanes and count lanes, so the lane loops run, not
        // only their remainders.
        #[test]
        fn wide_rows_agree_with_the_reference(
            (ny, nx, words) in (1u32..4, 16u32..80).prop_flat_map(|(ny, nx)| {
                (Just(ny), Just(nx), proptest::collection::vec(any::<u32>(), (ny * nx) as usize))
            }),
            s in settings(),
        ) {
            let s = Settings { roi: s.roi.map(|r| Roi { nx: r.nx * 4, ..r }), ..s };
            // Mostly small u16 values (many repeated), some anywhere in the range.
            let u16s: Vec<u16> = words
                .iter()
                .map(|&w| if w % 4 == 0 { (w >> 16) as u16 } else { (w % 8) as u16 })
                .collect();
            let payload: Vec<u8> = u16s.iter().flat_map(|v| v.to_le_bytes()).collect();
            let values: Vec<f64> = u16s.iter().map(|&v| f64::from(v)).collect();
            agree(&reduce(&payload, Dtype::U16, ny, nx, &s), &reference(&values, ny, nx, &s))?;
            let f32s: Vec<f32> = words
                .iter()
                .map(|&w| match w % 16 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => -0.0,
                    _ => (w >> 8) as f32 / 64.0 - 100.0,
                })
                .collect();
            let payload: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
            let values: Vec<f64> = f32s.iter().map(|&v| f64::from(v)).collect();
            agree(&reduce(&payload, Dtype::F32, ny, nx, &s), &reference(&values, ny, nx, &s))?;
        }
    }

    proptest! {
        // Runs of equal values and slow ramps in rows wider than f32's histogram blocks,
        // so that blocks lie in one bin, straddle bins, or hold a NaN or an infinity.
        #[test]
        fn smooth_f32_frames_agree_with_the_reference(
            (ny, nx, words) in (1u32..4, 64u32..300).prop_flat_map(|(ny, nx)| {
                (Just(ny), Just(nx), proptest::collection::vec(any::<u32>(), (ny * nx) as usize))
            }),
            run in 1usize..200,
            s in settings(),
        ) {
            let s = Settings { roi: s.roi.map(|r| Roi { nx: r.nx * 16, ..r }), ..s };
            let f32s: Vec<f32> = words
                .iter()
                .enumerate()
                .map(|(i, &w)| match w % 256 {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    _ => (i / run) as f32 * 0.75 - 20.0,
                })
                .collect();
            let payload: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
            let values: Vec<f64> = f32s.iter().map(|&v| f64::from(v)).collect();
            agree(&reduce(&payload, Dtype::F32, ny, nx, &s), &reference(&values, ny, nx, &s))?;
        }
    }

    #[test]
    fn f32_values_far_from_zero_keep_their_spread() {
        // Σv² − (Σv)²/n would cancel most digits of the spread; each row starts with an
        // outlier, the farthest its first value can be from its mean.
        let (ny, nx) = (8u32, 256u32);
        let f32s: Vec<f32> = (0..ny * nx)
            .map(|i| match i % nx {
                0 => 1.0e7 + 1000.0,
                x => 1.0e7 + ((x * 7919) % 9) as f32,
            })
            .collect();
        let payload: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
        let values: Vec<f64> = f32s.iter().map(|&v| f64::from(v)).collect();
        let s = Settings {
            bins: 7,
            ..Default::default()
        };
        agree(
            &reduce(&payload, Dtype::F32, ny, nx, &s),
            &reference(&values, ny, nx, &s),
        )
        .unwrap();
    }

    #[test]
    fn the_f32_threshold_splits_f32s_as_the_f64_one_does() {
        let ts = [
            0.0,
            -0.0,
            0.1,
            -0.1,
            1000.0,
            1e-50,
            -1e-50,
            1e39,
            -1e39,
            16777217.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for t in ts {
            let below = f32_below(t);
            let near = (-3i32..=3).map(|d| f32::from_bits(below.to_bits().wrapping_add_signed(d)));
            for v in near.chain([0.0, -0.0, f32::MAX, f32::MIN, f32::INFINITY]) {
                assert_eq!(v > below, f64::from(v) > t, "v {v}, t {t}");
            }
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
