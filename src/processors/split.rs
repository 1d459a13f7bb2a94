//! `split`: cuts each 2-D frame into tiles, PvaPy's split example as a stage.
//!
//! Give either `tile = [ny, nx]` (tiles of that size from the top-left corner; the last
//! row and column of tiles take what is left, so edge tiles may be smaller) or
//! `grid = [rows, cols]` (the frame cut into rows × cols tiles whose boundaries fall at
//! `floor(i * ny / rows)`: tile sizes differ by at most one pixel). Each tile keeps the
//! frame's id and timestamp in its header and the frame's attributes, and adds
//! `tile_row`, `tile_col`, `tile_rows`, `tile_cols` (grid position and size), `tile_y`,
//! `tile_x` (offset of its first pixel) and `frame_ny`, `frame_nx` (the original shape).
//! Tile `i` (row-major) goes to output port `i % outputs`; its pixels are copied once,
//! straight from the input slot into the output slot.

use super::{
    image_shape, integer_list, unknown_key, ArgValue, InputFrames, Outputs, ProcessError,
    Processor, Refused, Wiring,
};
use crate::ring::{AttrValue, Frame, FrameMeta};

/// Tile attribute keys, in the order they are written.
pub const TILE_KEYS: [&str; 8] = [
    "tile_row",
    "tile_col",
    "tile_rows",
    "tile_cols",
    "tile_y",
    "tile_x",
    "frame_ny",
    "frame_nx",
];

/// How a frame is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Tile { ny: u32, nx: u32 },
    Grid { rows: u32, cols: u32 },
}

/// (start, length) of each band of one axis.
pub type Bands = Vec<(u32, u32)>;

/// One axis of the cut: `size` pixels cut into bands of `cut_len` pixels, or into
/// `cut_len` bands when `by_count`.
pub fn bands(cut_len: u32, size: u32, by_count: bool) -> Bands {
    if by_count {
        let count = u64::from(cut_len);
        (0..count)
            .map(|i| {
                let start = i * u64::from(size) / count;
                let end = (i + 1) * u64::from(size) / count;
                (start as u32, (end - start) as u32)
            })
            .collect()
    } else {
        (0..size.div_ceil(cut_len))
            .map(|i| (i * cut_len, cut_len.min(size - i * cut_len)))
            .collect()
    }
}

/// The length of the longest band.
fn longest(bands: &Bands) -> u64 {
    bands
        .iter()
        .map(|&(_, len)| u64::from(len))
        .max()
        .unwrap_or(0)
}

impl Cut {
    /// Row bands and column bands of a `ny` × `nx` frame.
    pub fn layout(self, ny: u32, nx: u32) -> Result<(Bands, Bands), String> {
        match self {
            Cut::Tile { ny: ty, nx: tx } => Ok((bands(ty, ny, false), bands(tx, nx, false))),
            Cut::Grid { rows, cols } if rows > ny || cols > nx => Err(format!(
                "grid {rows}x{cols} is finer than the {ny}x{nx} frame"
            )),
            Cut::Grid { rows, cols } => Ok((bands(rows, ny, true), bands(cols, nx, true))),
        }
    }
}

#[derive(Default)]
pub struct Split {
    cut: Option<Cut>,
    tiles: u64,
}

impl Processor for Split {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        let positive = |list: Vec<u64>| -> Result<(u32, u32), String> {
            match list[..] {
                [a, b]
                    if a >= 1 && b >= 1 && a <= u64::from(u32::MAX) && b <= u64::from(u32::MAX) =>
                {
                    Ok((a as u32, b as u32))
                }
                _ => Err(format!("{key} needs two positive sizes, got {value}")),
            }
        };
        let cut = match key {
            "tile" => {
                let (ny, nx) = positive(integer_list(key, value, 2)?)?;
                Cut::Tile { ny, nx }
            }
            "grid" => {
                let (rows, cols) = positive(integer_list(key, value, 2)?)?;
                Cut::Grid { rows, cols }
            }
            _ => return Err(unknown_key("split", key, &["tile", "grid"]).into()),
        };
        self.cut = Some(cut);
        Ok(())
    }

    fn check_wiring(&self, wiring: &Wiring) -> Result<(), Refused> {
        if self.cut.is_none() {
            return Err("split needs tile = [ny, nx] or grid = [rows, cols]".into());
        }
        if wiring.outputs == 0 {
            return Err("split needs an output ring for its tiles".into());
        }
        if let (Some(cut), Some((ny, nx))) = (self.cut, wiring.frame) {
            let fits = match cut {
                Cut::Tile { ny: ty, nx: tx } => ty <= ny && tx <= nx,
                Cut::Grid { rows, cols } => rows <= ny && cols <= nx,
            };
            if !fits {
                let what = match cut {
                    Cut::Tile { ny, nx } => format!("tile [{ny}, {nx}] is larger"),
                    Cut::Grid { rows, cols } => format!("grid [{rows}, {cols}] is finer"),
                };
                return Err(format!(
                    "{what} than the source's {ny}x{nx} (ny x nx) frames; give at most [{ny}, {nx}]"
                )
                .into());
            }
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
        let (ny, nx) = image_shape("split", header)?;
        let cut = self.cut.ok_or("split has no tile or grid")?;
        if out.is_empty() {
            return Err("split has no output ring".into());
        }
        let (rows, cols) = cut.layout(ny, nx)?;
        let size = header.dtype.size();
        let (tile_h, tile_w) = (longest(&rows), longest(&cols));
        let largest = tile_h * tile_w * size as u64;
        if let Some(port) = (0..out.len()).find(|&p| out.capacity(p) < largest) {
            return Err(format!(
                "frame {}'s {tile_h}x{tile_w} tiles ({largest} bytes) do not fit ring '{}', whose slots hold {} bytes; give that ring a larger slot_bytes or cut smaller tiles",
                header.frame_id, out.ring_name(port), out.capacity(port)
            )
            .into());
        }
        let row_bytes = nx as usize * size;
        let payload = frame.payload();
        let attributes = frame.raw_attributes()?;
        for (r, &(y0, h)) in rows.iter().enumerate() {
            for (c, &(x0, w)) in cols.iter().enumerate() {
                let index = r * cols.len() + c;
                let port = index % out.len();
                let Some(mut slot) = out.claim(port)? else {
                    continue;
                };
                let tile_row_bytes = w as usize * size;
                let tile = &mut slot.payload_mut()[..h as usize * tile_row_bytes];
                let sources = payload[y0 as usize * row_bytes..]
                    .chunks(row_bytes)
                    .map(|row| &row[x0 as usize * size..][..tile_row_bytes]);
                crate::ring::stream_rows(tile.chunks_exact_mut(tile_row_bytes).zip(sources));
                slot.copy_attributes(attributes)?;
                let values = [r, c, rows.len(), cols.len()]
                    .map(|v| v as u64)
                    .into_iter()
                    .chain([y0, x0, ny, nx].map(u64::from));
                for (key, value) in TILE_KEYS.iter().zip(values) {
                    slot.push_attr(key, AttrValue::I64(value as i64))?;
                }
                let dims = [h, w];
                let meta = FrameMeta {
                    frame_id: header.frame_id,
                    timestamp_ns: header.timestamp_ns,
                    dtype: header.dtype,
                    dims: &dims,
                    flags: 0,
                };
                slot.publish(&meta)?;
                self.tiles += 1;
            }
        }
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![("tiles".into(), self.tiles)]
    }

    fn output_bytes(&self, input: &InputFrames) -> u64 {
        match (self.cut, input.shape) {
            (Some(cut), Some((ny, nx, pixel))) => match cut.layout(ny, nx) {
                Ok((rows, cols)) => longest(&rows) * longest(&cols) * pixel,
                Err(_) => input.bytes,
            },
            // The shape is not known here, only that a tile is never larger than its
            // frame, nor than its pixels of the widest dtype (8 bytes).
            (Some(Cut::Tile { ny, nx }), None) => {
                input.bytes.min(u64::from(ny) * u64::from(nx) * 8)
            }
            _ => input.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(bands: &[(u32, u32)], size: u32) -> bool {
        let mut next = 0;
        for &(start, len) in bands {
            if start != next || len == 0 {
                return false;
            }
            next += len;
        }
        next == size
    }

    #[test]
    fn tile_sizes_leave_smaller_edge_tiles() {
        assert_eq!(bands(4, 10, false), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(bands(5, 10, false), vec![(0, 5), (5, 5)]);
        assert_eq!(bands(16, 10, false), vec![(0, 10)]);
    }

    #[test]
    fn grids_spread_the_remainder() {
        assert_eq!(bands(4, 10, true), vec![(0, 2), (2, 3), (5, 2), (7, 3)]);
        assert_eq!(bands(3, 9, true), vec![(0, 3), (3, 3), (6, 3)]);
        assert!(Cut::Grid { rows: 4, cols: 1 }.layout(3, 8).is_err());
    }

    #[test]
    fn tile_rings_are_sized_by_the_largest_tile_where_the_frame_is_known() {
        let split = |key: &str, value: [i64; 2]| {
            let mut s = Split::default();
            s.configure(key, &toml::Value::from(value.to_vec()))
                .unwrap();
            s
        };
        let frames = |shape| InputFrames {
            bytes: 3840 * 2160 * 2,
            source_bytes: 3840 * 2160 * 2,
            shape,
        };
        let source = frames(Some((2160, 3840, 2)));
        assert_eq!(split("grid", [2, 2]).output_bytes(&source), 1080 * 1920 * 2);
        // Uneven grids: the longest band of each axis (3840 / 7: bands of 548 and 549).
        assert_eq!(split("grid", [5, 7]).output_bytes(&source), 432 * 549 * 2);
        assert_eq!(
            split("tile", [1000, 1000]).output_bytes(&source),
            1000 * 1000 * 2
        );
        // Frames not straight from the source: a tile of the widest pixels, at most the frame.
        let unknown = frames(None);
        assert_eq!(
            split("tile", [100, 100]).output_bytes(&unknown),
            100 * 100 * 8
        );
        assert_eq!(split("grid", [2, 2]).output_bytes(&unknown), unknown.bytes);
    }

    proptest::proptest! {
        #[test]
        fn bands_partition_the_axis(cut in 1u32..40, size in 1u32..200, by_count: bool) {
            proptest::prop_assume!(!by_count || cut <= size);
            let b = bands(cut, size, by_count);
            proptest::prop_assert!(covers(&b, size));
            if by_count {
                let (lo, hi) = b.iter().fold((u32::MAX, 0), |(lo, hi), &(_, l)| (lo.min(l), hi.max(l)));
                proptest::prop_assert!(hi - lo <= 1);
                proptest::prop_assert_eq!(b.len() as u32, cut);
            }
        }
    }
}
