//! Test patterns a producer writes and a consumer can verify (spec §10).
//!
//! `ramp`: pixel `i` (row-major index) of the frame with id `f` holds `(f + i) mod 2^b`
//! for an integer type of `b` bits (a signed type holds those bits, two's complement),
//! `((f + i) mod 2^24) as f32` for f32 and `((f + i) mod 2^53) as f64` for f64 — exact
//! in each precision. Values are stored little-endian.

use crate::ring::{copy_to_slot, Dtype};

/// Bytes generated or compared per step; small enough to stay in L1/L2.
const CHUNK_PIXELS: usize = 16 * 1024;

/// Writes the ramp of frame `frame_id` into `out` (whole pixels of `dtype`).
pub fn fill_ramp(out: &mut [u8], dtype: Dtype, frame_id: u64) {
    fill_ramp_from(out, dtype, frame_id, 0);
}

/// Writes pixels `first..` of the ramp of `frame_id` into `out`.
fn fill_ramp_from(out: &mut [u8], dtype: Dtype, frame_id: u64, first: u64) {
    let base = frame_id.wrapping_add(first);
    // A signed integer type holds the bits of the unsigned ramp of its width.
    match dtype {
        Dtype::U8 | Dtype::I8 => {
            let b = base as u8;
            for (i, px) in out.iter_mut().enumerate() {
                *px = b.wrapping_add(i as u8);
            }
        }
        Dtype::U16 | Dtype::I16 => {
            let b = base as u16;
            for (i, px) in out.chunks_exact_mut(2).enumerate() {
                px.copy_from_slice(&b.wrapping_add(i as u16).to_le_bytes());
            }
        }
        Dtype::U32 | Dtype::I32 => {
            let b = base as u32;
            for (i, px) in out.chunks_exact_mut(4).enumerate() {
                px.copy_from_slice(&b.wrapping_add(i as u32).to_le_bytes());
            }
        }
        Dtype::U64 | Dtype::I64 => {
            for (i, px) in out.chunks_exact_mut(8).enumerate() {
                px.copy_from_slice(&base.wrapping_add(i as u64).to_le_bytes());
            }
        }
        Dtype::F32 => {
            let b = (base & 0xFF_FFFF) as u32;
            for (i, px) in out.chunks_exact_mut(4).enumerate() {
                let v = (b.wrapping_add(i as u32) & 0xFF_FFFF) as f32;
                px.copy_from_slice(&v.to_le_bytes());
            }
        }
        Dtype::F64 => {
            const MASK: u64 = (1 << 53) - 1;
            for (i, px) in out.chunks_exact_mut(8).enumerate() {
                let v = (base.wrapping_add(i as u64) & MASK) as f64;
                px.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Compares `data` with the ramp of `frame_id`. Returns the index of the first pixel
/// that differs, or `None` when the frame is exact.
pub fn verify_ramp(data: &[u8], dtype: Dtype, frame_id: u64, scratch: &mut Vec<u8>) -> Option<u64> {
    let px = dtype.size();
    let chunk = CHUNK_PIXELS * px;
    scratch.resize(chunk, 0);
    for (n, got) in data.chunks(chunk).enumerate() {
        let first = (n * CHUNK_PIXELS) as u64;
        let expected = &mut scratch[..got.len()];
        fill_ramp_from(expected, dtype, frame_id, first);
        if got != expected {
            let at = got
                .iter()
                .zip(expected.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Some(first + (at / px) as u64);
        }
    }
    None
}

/// The ramp of one dtype, as [`fill_ramp`] defines it, written at memory speed where it
/// can be: a ramp of 8 or 16 bits repeats every 2^8 or 2^16 pixels, so a frame is one
/// precomputed window copied over and over with streaming stores, one write per byte
/// and no arithmetic. Wider types are computed pixel by pixel.
pub struct Ramp {
    dtype: Dtype,
    /// For a repeating ramp: `WINDOW_PIXELS` plus one period of the ramp of frame 0, so
    /// the window of any frame starts at its id modulo the period.
    table: Vec<u8>,
}

/// Pixels per copied window: a whole number of periods of both repeating widths, and at
/// least the 64 KiB from which [`copy_to_slot`] streams.
const WINDOW_PIXELS: usize = 1 << 16;

impl Ramp {
    pub fn new(dtype: Dtype) -> Ramp {
        let table = match ramp_period(dtype) {
            Some(period) => {
                let mut table = vec![0u8; (WINDOW_PIXELS + period) * dtype.size()];
                fill_ramp(&mut table, dtype, 0);
                table
            }
            None => Vec::new(),
        };
        Ramp { dtype, table }
    }

    /// Writes the ramp of frame `frame_id` into `out` (whole pixels).
    pub fn fill(&self, out: &mut [u8], frame_id: u64) {
        let Some(period) = ramp_period(self.dtype) else {
            return fill_ramp(out, self.dtype, frame_id);
        };
        let px = self.dtype.size();
        // Pixel i of the frame holds (frame_id + i) mod period, and every window starts
        // a whole number of periods into the frame.
        let start = (frame_id % period as u64) as usize * px;
        let window = &self.table[start..start + WINDOW_PIXELS * px];
        for chunk in out.chunks_mut(window.len()) {
            copy_to_slot(chunk, &window[..chunk.len()]);
        }
    }
}

/// The period in pixels of a ramp that repeats within [`WINDOW_PIXELS`].
fn ramp_period(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::U8 | Dtype::I8 => Some(1 << 8),
        Dtype::U16 | Dtype::I16 => Some(1 << 16),
        _ => None,
    }
}

/// Where the pixels of each frame come from: a pattern or a replayed file.
pub enum FrameContent {
    Ramp(Ramp),
    Random(RandomPool),
    Npy(NpyStack),
    Tiff(TiffSeries),
}

impl FrameContent {
    /// Writes frame `frame_id` into `out` (exactly one frame's bytes).
    pub fn fill(&self, out: &mut [u8], frame_id: u64) {
        match self {
            FrameContent::Ramp(ramp) => ramp.fill(out, frame_id),
            FrameContent::Random(pool) => pool.fill(out, frame_id),
            FrameContent::Npy(stack) => stack.fill(out, frame_id),
            FrameContent::Tiff(series) => series.fill(out, frame_id),
        }
    }
}

/// A pool of random bytes from which frames are cut at shifting offsets, so `random`
/// frames cost one copy each and still differ from frame to frame.
pub struct RandomPool {
    bytes: Vec<u8>,
}

/// Extra bytes in the pool beyond one frame, giving 4096 distinct starting points.
const POOL_SLACK: usize = 4096 * 16;

impl RandomPool {
    pub fn new(frame_bytes: usize, seed: u64) -> RandomPool {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut bytes = vec![0u8; frame_bytes + POOL_SLACK];
        rng.fill(&mut bytes);
        RandomPool { bytes }
    }

    /// Copies the random frame for `frame_id` into `out`.
    pub fn fill(&self, out: &mut [u8], frame_id: u64) {
        let offset = (frame_id as usize % 4096) * 16;
        copy_to_slot(out, &self.bytes[offset..offset + out.len()]);
    }
}

/// The dtype of a `.npy` header's `descr` (the text after `'descr':`).
fn npy_dtype(descr: &str) -> Option<Dtype> {
    let code = descr.strip_prefix('\'')?.split('\'').next()?;
    Some(match code {
        "|u1" | "<u1" => Dtype::U8,
        "|i1" | "<i1" => Dtype::I8,
        "<u2" => Dtype::U16,
        "<i2" => Dtype::I16,
        "<u4" => Dtype::U32,
        "<i4" => Dtype::I32,
        "<u8" => Dtype::U64,
        "<i8" => Dtype::I64,
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        _ => return None,
    })
}

/// Frames replayed from a NumPy `.npy` file: a C-order array of shape (frames, ny, nx)
/// or (ny, nx), of any [`Dtype`], little-endian. Frame id `k` gets frame
/// `k mod frames`.
#[derive(Debug)]
pub struct NpyStack {
    pub dtype: Dtype,
    pub ny: u32,
    pub nx: u32,
    frames: usize,
    data: Vec<u8>,
}

impl NpyStack {
    /// Reads a whole `.npy` file; errors name the file and what is wrong with it.
    pub fn open(path: &std::path::Path) -> Result<NpyStack, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
        NpyStack::parse(&bytes).map_err(|what| {
            format!(
                "{} is not a usable .npy frame stack: {what}",
                path.display()
            )
        })
    }

    fn parse(bytes: &[u8]) -> Result<NpyStack, String> {
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err("missing the NUMPY magic".into());
        }
        let (header_len, start) = match bytes[6] {
            1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
            2 | 3 if bytes.len() >= 12 => (
                u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
                12,
            ),
            v => return Err(format!("unsupported format version {v}")),
        };
        let header = bytes
            .get(start..start + header_len)
            .ok_or("truncated header")?;
        let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
        let field = |key: &str| -> Result<&str, String> {
            let at = header
                .find(&format!("'{key}'"))
                .ok_or(format!("no '{key}' in the header"))?;
            Ok(header[at + key.len() + 2..]
                .trim_start()
                .trim_start_matches(':')
                .trim_start())
        };
        let descr = field("descr")?;
        let dtype = npy_dtype(descr).ok_or_else(|| {
            format!(
                "dtype {} is not one of u8, u16, u32, u64, i8, i16, i32, i64, f32, f64 (little-endian)",
                descr.split(',').next().unwrap_or("?")
            )
        })?;
        if !field("fortran_order")?.starts_with("False") {
            return Err("Fortran order; save it in C order (numpy.ascontiguousarray)".into());
        }
        let shape = field("shape")?;
        let inner = shape
            .strip_prefix('(')
            .and_then(|s| s.split(')').next())
            .ok_or("unreadable shape")?;
        let dims: Vec<usize> = inner
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.parse().map_err(|_| format!("unreadable shape ({inner})")))
            .collect::<Result<_, _>>()?;
        let (frames, ny, nx) = match dims[..] {
            [ny, nx] => (1, ny, nx),
            [frames, ny, nx] => (frames, ny, nx),
            _ => {
                return Err(format!(
                    "shape ({inner}) is not (frames, ny, nx) or (ny, nx)"
                ))
            }
        };
        let frame_bytes = ny * nx * dtype.size();
        let data = bytes[start + header_len..].to_vec();
        if frames == 0 || frame_bytes == 0 || data.len() != frames * frame_bytes {
            return Err(format!("{} data bytes for shape ({inner})", data.len()));
        }
        let to_u32 = |v: usize| u32::try_from(v).map_err(|_| format!("dimension {v} is too large"));
        Ok(NpyStack {
            dtype,
            ny: to_u32(ny)?,
            nx: to_u32(nx)?,
            frames,
            data,
        })
    }

    /// Copies the frame for `frame_id` into `out` (exactly one frame long).
    pub fn fill(&self, out: &mut [u8], frame_id: u64) {
        let at = (frame_id % self.frames as u64) as usize * out.len();
        copy_to_slot(out, &self.data[at..at + out.len()]);
    }

    /// Frames in the stack.
    pub fn frames(&self) -> usize {
        self.frames
    }
}

/// Frames replayed from a series of single-image grey TIFF files (u8, u16, u32 or f32),
/// named by a pattern such as `scan/frame_*.tif`, in name order. All files must share
/// one shape and sample type.
pub struct TiffSeries {
    pub dtype: Dtype,
    pub ny: u32,
    pub nx: u32,
    paths: Vec<std::path::PathBuf>,
    data: Vec<u8>,
}

impl TiffSeries {
    /// Reads every file matching `pattern` (`*` matches within the file name).
    pub fn open(pattern: &std::path::Path) -> Result<TiffSeries, String> {
        let paths = expand_pattern(pattern)?;
        if paths.is_empty() {
            return Err(format!("no file matches {}", pattern.display()));
        }
        TiffSeries::from_paths(&paths)
    }

    /// Reads the files `paths`, in that order.
    pub fn from_paths(paths: &[std::path::PathBuf]) -> Result<TiffSeries, String> {
        let mut series: Option<TiffSeries> = None;
        for path in paths {
            let (nx, ny, dtype, bytes) = read_tiff(path)?;
            let s = series.get_or_insert_with(|| TiffSeries {
                dtype,
                ny,
                nx,
                paths: paths.to_vec(),
                data: Vec::new(),
            });
            if (s.nx, s.ny, s.dtype) != (nx, ny, dtype) {
                return Err(format!(
                    "{} is {nx}x{ny} {} but the series started with {}x{} {}; replay files of one shape",
                    path.display(),
                    dtype.name(),
                    s.nx,
                    s.ny,
                    s.dtype.name()
                ));
            }
            s.data.extend_from_slice(&bytes);
        }
        series.ok_or_else(|| "a TIFF series needs at least one file".to_string())
    }

    pub fn frames(&self) -> usize {
        self.paths.len()
    }

    pub fn paths(&self) -> &[std::path::PathBuf] {
        &self.paths
    }

    /// Copies frame `frame_id` (cycling through the series) into `out`.
    pub fn fill(&self, out: &mut [u8], frame_id: u64) {
        let at = (frame_id % self.paths.len() as u64) as usize * out.len();
        copy_to_slot(out, &self.data[at..at + out.len()]);
    }
}

/// Files whose names match the last component of `pattern` (`*` = any run of
/// characters), sorted by name.
fn expand_pattern(pattern: &std::path::Path) -> Result<Vec<std::path::PathBuf>, String> {
    let dir = pattern
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} does not name files", pattern.display()))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("could not list {}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard_match(name, n))
        })
        .map(|e| e.path())
        .collect();
    paths.sort();
    Ok(paths)
}

fn wildcard_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| wildcard_match(rest, &tail[i..]))
        }
    }
}

/// Pixels as little-endian bytes (the ring's byte order).
fn le_bytes<T: bytemuck::Pod>(pixels: &[T]) -> Vec<u8> {
    let mut bytes = bytemuck::cast_slice::<T, u8>(pixels).to_vec();
    if cfg!(target_endian = "big") {
        for px in bytes.chunks_exact_mut(std::mem::size_of::<T>()) {
            px.reverse();
        }
    }
    bytes
}

fn read_tiff(path: &std::path::Path) -> Result<(u32, u32, Dtype, Vec<u8>), String> {
    use tiff::decoder::{Decoder, DecodingResult};
    let fail = |e: &dyn std::fmt::Display| format!("could not read TIFF {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut decoder = Decoder::new(std::io::BufReader::new(file)).map_err(|e| fail(&e))?;
    let (nx, ny) = decoder.dimensions().map_err(|e| fail(&e))?;
    let (dtype, bytes) = match decoder.read_image().map_err(|e| fail(&e))? {
        DecodingResult::U8(v) => (Dtype::U8, v),
        DecodingResult::U16(v) => (Dtype::U16, le_bytes(&v)),
        DecodingResult::U32(v) => (Dtype::U32, le_bytes(&v)),
        DecodingResult::U64(v) => (Dtype::U64, le_bytes(&v)),
        DecodingResult::I8(v) => (Dtype::I8, le_bytes(&v)),
        DecodingResult::I16(v) => (Dtype::I16, le_bytes(&v)),
        DecodingResult::I32(v) => (Dtype::I32, le_bytes(&v)),
        DecodingResult::I64(v) => (Dtype::I64, le_bytes(&v)),
        DecodingResult::F32(v) => (Dtype::F32, le_bytes(&v)),
        DecodingResult::F64(v) => (Dtype::F64, le_bytes(&v)),
        _ => return Err(fail(&"samples are not 8- to 64-bit integers or floats")),
    };
    if bytes.len() as u64 != u64::from(nx) * u64::from(ny) * dtype.size() as u64 {
        return Err(fail(&"only single-channel (grey) images can be replayed"));
    }
    Ok((nx, ny, dtype, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_file_names() {
        assert!(wildcard_match("frame_*.tif", "frame_0001.tif"));
        assert!(!wildcard_match("frame_*.tif", "frame_0001.tiff"));
        assert!(wildcard_match("*", "x"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
    }

    #[test]
    fn a_tiff_series_replays_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for i in [2u16, 0, 1] {
            let file = std::fs::File::create(dir.path().join(format!("f_{i}.tif"))).unwrap();
            let mut enc = tiff::encoder::TiffEncoder::new(file).unwrap();
            enc.write_image::<tiff::encoder::colortype::Gray16>(3, 2, &[i; 6])
                .unwrap();
        }
        let s = TiffSeries::open(&dir.path().join("f_*.tif")).unwrap();
        assert_eq!((s.nx, s.ny, s.dtype, s.frames()), (3, 2, Dtype::U16, 3));
        let mut out = [0u8; 12];
        s.fill(&mut out, 1);
        assert_eq!(out, [1, 0].repeat(6)[..]);
    }

    #[test]
    fn ramp_matches_the_spec_formula() {
        let mut out = vec![0u8; 8];
        fill_ramp(&mut out, Dtype::U16, 65534);
        assert_eq!(out, [0xFE, 0xFF, 0xFF, 0xFF, 0, 0, 1, 0]);
        let mut out = vec![0u8; 3];
        fill_ramp(&mut out, Dtype::U8, 254);
        assert_eq!(out, [254, 255, 0]);
        let mut out = vec![0u8; 8];
        fill_ramp(&mut out, Dtype::F32, (1 << 24) - 1);
        assert_eq!(
            f32::from_le_bytes(out[..4].try_into().unwrap()),
            16_777_215.0
        );
        assert_eq!(f32::from_le_bytes(out[4..].try_into().unwrap()), 0.0);
        let mut out = vec![0u8; 4];
        fill_ramp(&mut out, Dtype::U32, u64::from(u32::MAX));
        assert_eq!(u32::from_le_bytes(out.try_into().unwrap()), u32::MAX);
        let mut out = vec![0u8; 2];
        fill_ramp(&mut out, Dtype::I8, 127);
        assert_eq!(
            out.iter().map(|&b| b as i8).collect::<Vec<_>>(),
            [127, -128]
        );
        let mut out = vec![0u8; 16];
        fill_ramp(&mut out, Dtype::F64, (1 << 53) - 1);
        assert_eq!(
            f64::from_le_bytes(out[..8].try_into().unwrap()),
            9_007_199_254_740_991.0
        );
        assert_eq!(f64::from_le_bytes(out[8..].try_into().unwrap()), 0.0);
        let mut out = vec![0u8; 8];
        fill_ramp(&mut out, Dtype::I64, u64::MAX);
        assert_eq!(i64::from_le_bytes(out.try_into().unwrap()), -1);
    }

    #[test]
    fn the_windowed_ramp_is_the_ramp_for_every_dtype_and_phase() {
        for dtype in Dtype::ALL {
            let ramp = Ramp::new(dtype);
            // Frames shorter than, equal to and longer than a window, ending mid-window.
            for pixels in [3, WINDOW_PIXELS, 3 * WINDOW_PIXELS + 1001] {
                for frame_id in [0, 1, 255, 256, 65_535, 65_537, u64::MAX] {
                    let mut expected = vec![0u8; pixels * dtype.size()];
                    fill_ramp(&mut expected, dtype, frame_id);
                    let mut got = vec![0xAAu8; expected.len()];
                    ramp.fill(&mut got, frame_id);
                    assert!(got == expected, "{dtype:?} {pixels} px, frame {frame_id}");
                }
            }
        }
    }

    #[test]
    fn verify_finds_the_first_wrong_pixel_across_chunks() {
        for dtype in Dtype::ALL {
            let pixels = CHUNK_PIXELS * 2 + 17;
            let mut frame = vec![0u8; pixels * dtype.size()];
            fill_ramp(&mut frame, dtype, 42);
            let mut scratch = Vec::new();
            assert_eq!(verify_ramp(&frame, dtype, 42, &mut scratch), None);
            assert_eq!(verify_ramp(&frame, dtype, 43, &mut scratch), Some(0));
            let bad = CHUNK_PIXELS + 5;
            frame[bad * dtype.size()] ^= 0x01;
            assert_eq!(
                verify_ramp(&frame, dtype, 42, &mut scratch),
                Some(bad as u64)
            );
        }
    }

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn npy_stacks_replay_their_frames() {
        let data: Vec<u8> = (0..12).collect();
        let stack = NpyStack::parse(&npy("<u2", "(3, 1, 2)", &data)).unwrap();
        assert_eq!(
            (stack.dtype, stack.ny, stack.nx, stack.frames),
            (Dtype::U16, 1, 2, 3)
        );
        let mut frame = vec![0u8; 4];
        stack.fill(&mut frame, 4);
        assert_eq!(frame, [4, 5, 6, 7]);
        let single = NpyStack::parse(&npy("|u1", "(2, 3)", &data[..6])).unwrap();
        assert_eq!((single.frames, single.ny, single.nx), (1, 2, 3));
    }

    #[test]
    fn npy_problems_are_named() {
        let data = vec![0u8; 8];
        assert!(NpyStack::parse(b"not numpy").unwrap_err().contains("magic"));
        assert!(NpyStack::parse(&npy(">u2", "(1, 1)", &data))
            .unwrap_err()
            .contains("dtype '>u2'"));
        assert!(NpyStack::parse(&npy("<u2", "(2, 2, 2)", &data))
            .unwrap_err()
            .contains("8 data bytes"));
        assert!(NpyStack::parse(&npy("<u2", "(2,)", &data[..4]))
            .unwrap_err()
            .contains("is not (frames, ny, nx)"));
    }

    #[test]
    fn random_frames_differ_between_ids() {
        let pool = RandomPool::new(4096, 1);
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        pool.fill(&mut a, 0);
        pool.fill(&mut b, 1);
        assert_ne!(a, b);
    }
}
