//! `stitch`: a collector that reassembles the tiles made by `split` into whole frames.
//!
//! Tiles may come from one ring shared by several workers or from a list of rings, in
//! any order. Frames being assembled wait in a cache of at most `cache` frames; they
//! leave in frame-id order. A complete frame leaves as soon as every lower id has left;
//! the lowest frame leaves anyway when the cache overflows or it has waited
//! `timeout_ms` since its first tile (the reorder window). A frame that leaves without
//! all its tiles is counted `incomplete` and, with `incomplete = "mark"` (the default),
//! published with its missing area set to `fill` (default: the dtype's largest value,
//! NaN for floats) and the attribute `missing_tiles`; with `incomplete = "drop"` it is not
//! published. Tiles of a frame that already left are counted `late_tiles`; a tile that
//! arrives twice (re-delivered after a worker crash) is counted `duplicate_tiles` once
//! and ignored; ids that never showed a tile are counted `skipped_ids`.

use super::split::TILE_KEYS;
use super::{
    number, positive_integer, unknown_key, ArgValue, InputFrames, Outputs, ProcessError, Processor,
    Refused,
};
use crate::ring::{AttrValue, AttributeArea, Dtype, Frame, FrameMeta};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Where a tile belongs (its `split` attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TilePos {
    row: u32,
    col: u32,
    rows: u32,
    cols: u32,
    y: u32,
    x: u32,
    frame_ny: u32,
    frame_nx: u32,
}

impl TilePos {
    fn of(frame: &Frame<'_>) -> Result<TilePos, ProcessError> {
        let mut v = [None; 8];
        for record in frame.attributes() {
            let (key, value) = record?;
            if let Some(i) = TILE_KEYS.iter().position(|k| *k == key) {
                if let AttrValue::I64(n) = value {
                    v[i] = u32::try_from(n).ok();
                }
            }
        }
        let get = |i: usize| {
            v[i].ok_or_else(|| {
                format!(
                    "frame {} is not a tile: attribute {} is missing (stitch takes the output of split)",
                    frame.header().frame_id,
                    TILE_KEYS[i]
                )
            })
        };
        Ok(TilePos {
            row: get(0)?,
            col: get(1)?,
            rows: get(2)?,
            cols: get(3)?,
            y: get(4)?,
            x: get(5)?,
            frame_ny: get(6)?,
            frame_nx: get(7)?,
        })
    }
}

/// A frame being assembled.
struct Pending {
    timestamp_ns: u64,
    dtype: Dtype,
    ny: u32,
    nx: u32,
    cols: u32,
    got: Vec<bool>,
    missing: usize,
    /// Rectangles received: (y, x, h, w).
    areas: Vec<(u32, u32, u32, u32)>,
    /// The frame's bytes: `pixels`, or the output slot port 0 holds (`in_slot`), where
    /// the tiles go straight so the frame needs no copy when it leaves.
    pixels: Vec<u8>,
    in_slot: bool,
    bytes: usize,
    attributes: AttributeArea,
    since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Incomplete {
    Mark,
    Drop,
}

pub struct Stitch {
    cache: usize,
    timeout: Duration,
    incomplete_policy: Incomplete,
    fill: Option<f64>,
    pending: BTreeMap<u64, Pending>,
    /// The lowest id that may still leave; `None` before the first frame left.
    next: Option<u64>,
    spare: Vec<Vec<u8>>,
    stitched: u64,
    incomplete: u64,
    late_tiles: u64,
    duplicate_tiles: u64,
    skipped_ids: u64,
    /// The latest frame id each input brought, for backpressure ([`Processor::wants`]).
    latest: Vec<Option<u64>>,
}

impl Default for Stitch {
    fn default() -> Self {
        Stitch {
            cache: 16,
            timeout: Duration::from_secs(1),
            incomplete_policy: Incomplete::Mark,
            fill: None,
            pending: BTreeMap::new(),
            next: None,
            spare: Vec::new(),
            stitched: 0,
            incomplete: 0,
            late_tiles: 0,
            duplicate_tiles: 0,
            skipped_ids: 0,
            latest: Vec::new(),
        }
    }
}

impl Processor for Stitch {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        match key {
            "cache" => self.cache = positive_integer(key, value)? as usize,
            "timeout_ms" => self.timeout = Duration::from_millis(positive_integer(key, value)?),
            "incomplete" => {
                self.incomplete_policy = match value.as_str() {
                    Some("mark") => Incomplete::Mark,
                    Some("drop") => Incomplete::Drop,
                    _ => {
                        return Err(
                            format!("incomplete must be \"mark\" or \"drop\", got {value}").into(),
                        )
                    }
                }
            }
            "fill" => {
                self.fill = Some(number(key, value).or_else(|e| match value.as_str() {
                    Some("nan") => Ok(f64::NAN),
                    _ => Err(e),
                })?)
            }
            _ => {
                return Err(unknown_key(
                    "stitch",
                    key,
                    &["cache", "timeout_ms", "incomplete", "fill"],
                )
                .into())
            }
        }
        Ok(())
    }

    /// Backpressure: with the cache nearly full, an input ahead of another waits, so the
    /// one behind brings the tiles that complete the oldest frames instead of the cache
    /// overflowing (which would push frames out incomplete).
    fn wants(&self, input: usize) -> bool {
        if self.pending.len() + 1 < self.cache {
            return true;
        }
        // `None` sorts first: an input that brought nothing yet is the furthest behind.
        let behind = self.latest.iter().copied().min().flatten();
        self.latest.get(input).copied().flatten() <= behind
    }

    fn start(&mut self, ctx: &super::StageContext) -> Result<(), ProcessError> {
        // Every input counts from the start, the ones that brought nothing yet included.
        self.latest = vec![None; ctx.inputs];
        Ok(())
    }

    fn process(
        &mut self,
        input: usize,
        frame: &Frame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let header = frame.header();
        let id = header.frame_id;
        if self.latest.len() <= input {
            self.latest.resize(input + 1, None);
        }
        self.latest[input] = self.latest[input].max(Some(id));
        let tile = TilePos::of(frame)?;
        if self.next.is_some_and(|next| id < next) {
            self.late_tiles += 1;
            return Ok(());
        }
        let &[h, w] = &header.dims[..] else {
            return Err(format!("tile of frame {id} has dims {:?}, not 2-D", header.dims).into());
        };
        let fits = tile.row < tile.rows
            && tile.col < tile.cols
            && tile.rows <= tile.frame_ny
            && tile.cols <= tile.frame_nx
            && u64::from(tile.y) + u64::from(h) <= u64::from(tile.frame_ny)
            && u64::from(tile.x) + u64::from(w) <= u64::from(tile.frame_nx);
        if !fits {
            return Err(format!("tile {tile:?} of frame {id} lies outside its frame").into());
        }
        if !self.pending.contains_key(&id) {
            let bytes = tile.frame_ny as usize * tile.frame_nx as usize * header.dtype.size();
            // The frame that leaves next is assembled in an output slot: one at a time,
            // the lowest id (frames leave in id order). The others wait in buffers.
            let next_to_leave = self.pending.keys().next().is_none_or(|&low| id < low);
            let in_slot = next_to_leave
                && !out.is_held(0)
                && bytes as u64 <= out.capacity(0)
                && out.hold(0)?;
            let attributes = match frame_attributes(frame) {
                Ok(attributes) => attributes,
                Err(e) => {
                    // No frame is assembled in the slot it took.
                    if in_slot {
                        out.release_held(0);
                    }
                    return Err(e);
                }
            };
            let mut pixels = Vec::new();
            if !in_slot {
                pixels = self.spare.pop().unwrap_or_default();
                pixels.resize(bytes, 0);
            }
            let count = tile.rows as usize * tile.cols as usize;
            self.pending.insert(
                id,
                Pending {
                    timestamp_ns: header.timestamp_ns,
                    dtype: header.dtype,
                    ny: tile.frame_ny,
                    nx: tile.frame_nx,
                    cols: tile.cols,
                    got: vec![false; count],
                    missing: count,
                    areas: Vec::with_capacity(count),
                    pixels,
                    in_slot,
                    bytes,
                    attributes,
                    since: Instant::now(),
                },
            );
        }
        let p = self.pending.get_mut(&id).expect("inserted above");
        if (p.dtype, p.ny, p.nx, p.cols, p.got.len())
            != (
                header.dtype,
                tile.frame_ny,
                tile.frame_nx,
                tile.cols,
                tile.rows as usize * tile.cols as usize,
            )
        {
            return Err(format!(
                "tile {tile:?} of frame {id} disagrees with the frame's earlier tiles"
            )
            .into());
        }
        let index = tile.row as usize * tile.cols as usize + tile.col as usize;
        if p.got[index] {
            self.duplicate_tiles += 1;
            return Ok(());
        }
        let size = header.dtype.size();
        let (row_bytes, tile_row_bytes) = (p.nx as usize * size, w as usize * size);
        let mut slot = if p.in_slot { out.held(0) } else { None };
        let pixels = match slot.as_mut() {
            Some(slot) => &mut slot.payload_mut()[..p.bytes],
            None if p.in_slot => return Err("the output slot being assembled was lost".into()),
            None => &mut p.pixels[..],
        };
        let x0 = tile.x as usize * size;
        let destinations = pixels[tile.y as usize * row_bytes..]
            .chunks_mut(row_bytes)
            .map(|row| &mut row[x0..x0 + tile_row_bytes]);
        let sources = frame
            .payload()
            .chunks_exact(tile_row_bytes.max(1))
            .take(h as usize);
        crate::ring::stream_rows(destinations.zip(sources));
        drop(slot);
        p.got[index] = true;
        p.missing -= 1;
        p.areas.push((tile.y, tile.x, h, w));
        self.release(out, false)
    }

    /// Whole frames: as large as the source's unless the tiles are larger (a ring with
    /// its own `frame` or `slot_bytes` overrides this for frames that changed size).
    fn output_bytes(&self, input: &InputFrames) -> u64 {
        input.bytes.max(input.source_bytes)
    }

    fn poll(&mut self, out: &mut Outputs) -> Result<(), ProcessError> {
        self.release(out, false)
    }

    fn stop(&mut self, out: &mut Outputs) -> Result<(), ProcessError> {
        self.release(out, true)
    }

    fn gauges(&self) -> &'static [&'static str] {
        &["cached"]
    }

    fn counters(&self) -> Vec<(String, u64)> {
        [
            ("stitched", self.stitched),
            ("incomplete", self.incomplete),
            ("late_tiles", self.late_tiles),
            ("duplicate_tiles", self.duplicate_tiles),
            ("skipped_ids", self.skipped_ids),
            ("cached", self.pending.len() as u64),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into()
    }
}

impl Stitch {
    /// Lets frames leave in id order: complete ones whose predecessors left, and the
    /// lowest one when the window overflows or times out (every one with `all`).
    fn release(&mut self, out: &mut Outputs, all: bool) -> Result<(), ProcessError> {
        let overflow = |s: &Self| s.pending.len() > s.cache;
        while let Some((&id, p)) = self.pending.first_key_value() {
            let in_turn = self.next.is_none_or(|next| next == id);
            let forced = all || overflow(self) || p.since.elapsed() >= self.timeout;
            if !(forced || (in_turn && p.missing == 0)) {
                return Ok(());
            }
            let mut p = self.pending.remove(&id).expect("first entry");
            if let Some(next) = self.next {
                self.skipped_ids += id - next;
            }
            self.next = Some(id + 1);
            let result = self.emit(id, &mut p, out);
            if p.pixels.capacity() > 0 && self.spare.len() <= self.cache {
                self.spare.push(std::mem::take(&mut p.pixels));
            }
            result?;
        }
        Ok(())
    }

    fn emit(&mut self, id: u64, p: &mut Pending, out: &mut Outputs) -> Result<(), ProcessError> {
        if !p.in_slot && out.is_held(0) {
            // A frame assembled in a buffer leaves before the one in the slot (a lower id
            // came late): the slot's frame moves to a buffer, the slot is given up.
            self.demote(out);
        }
        let missing_tiles = p.missing as i64;
        if p.missing == 0 {
            self.stitched += 1;
        } else {
            self.incomplete += 1;
            if self.incomplete_policy == Incomplete::Drop {
                if p.in_slot {
                    out.release_held(0);
                }
                return Ok(());
            }
        }
        let extra: &[(&str, AttrValue<'_>)] = if missing_tiles == 0 {
            &[]
        } else {
            &[("missing_tiles", AttrValue::I64(missing_tiles))]
        };
        let dims = [p.ny, p.nx];
        let meta = FrameMeta {
            frame_id: id,
            timestamp_ns: p.timestamp_ns,
            dtype: p.dtype,
            dims: &dims,
            flags: 0,
        };
        if p.in_slot {
            let Some(mut slot) = out.held(0) else {
                return Err(
                    format!("frame {id}: the output slot it was assembled in was lost").into(),
                );
            };
            if missing_tiles > 0 {
                mark_missing(
                    p.dtype,
                    p.nx,
                    &p.areas,
                    &mut slot.payload_mut()[..p.bytes],
                    self.fill,
                );
            }
            let attributes = slot
                .copy_attributes(p.attributes.as_bytes())
                .and_then(|()| {
                    extra
                        .iter()
                        .try_for_each(|(key, value)| slot.push_attr(key, value.clone()))
                });
            if let Err(e) = attributes {
                // The frame cannot leave: the slot is given up, not kept held.
                drop(slot);
                out.release_held(0);
                return Err(e.into());
            }
            return Ok(slot.publish(&meta)?);
        }
        if missing_tiles > 0 {
            mark_missing(p.dtype, p.nx, &p.areas, &mut p.pixels, self.fill);
        }
        if out.is_empty() {
            return Ok(());
        }
        Ok(out.send(0, &meta, &p.pixels, p.attributes.as_bytes(), extra)?)
    }

    /// Moves the frame assembled in the held output slot into a buffer.
    fn demote(&mut self, out: &mut Outputs) {
        if let Some(p) = self.pending.values_mut().find(|p| p.in_slot) {
            let mut pixels = self.spare.pop().unwrap_or_default();
            pixels.clear();
            if let Some(mut slot) = out.held(0) {
                pixels.extend_from_slice(&slot.payload_mut()[..p.bytes]);
            }
            pixels.resize(p.bytes, 0);
            p.pixels = pixels;
            p.in_slot = false;
        }
        out.release_held(0);
    }
}

/// A tile's attributes without the tile keys: the whole frame's.
fn frame_attributes(tile: &Frame<'_>) -> Result<AttributeArea, ProcessError> {
    Ok(AttributeArea::filtered(tile.raw_attributes()?, |k| {
        !TILE_KEYS.contains(&k)
    })?)
}

/// Sets every pixel no tile covered to `fill` (default: the dtype's largest value, NaN
/// for floats).
fn mark_missing(
    dtype: Dtype,
    nx: u32,
    areas: &[(u32, u32, u32, u32)],
    pixels: &mut [u8],
    fill: Option<f64>,
) {
    let nx = nx as usize;
    let ny = pixels.len() / (nx * dtype.size()).max(1);
    let mut covered = vec![false; ny * nx];
    for &(y, x, h, w) in areas {
        for row in y as usize..(y + h) as usize {
            covered[row * nx + x as usize..row * nx + (x + w) as usize].fill(true);
        }
    }
    let value: Vec<u8> = match dtype {
        Dtype::U8 => vec![fill.map_or(u8::MAX, |f| f as u8)],
        Dtype::I8 => fill.map_or(i8::MAX, |f| f as i8).to_le_bytes().to_vec(),
        Dtype::U16 => fill.map_or(u16::MAX, |f| f as u16).to_le_bytes().to_vec(),
        Dtype::I16 => fill.map_or(i16::MAX, |f| f as i16).to_le_bytes().to_vec(),
        Dtype::U32 => fill.map_or(u32::MAX, |f| f as u32).to_le_bytes().to_vec(),
        Dtype::I32 => fill.map_or(i32::MAX, |f| f as i32).to_le_bytes().to_vec(),
        Dtype::U64 => fill.map_or(u64::MAX, |f| f as u64).to_le_bytes().to_vec(),
        Dtype::I64 => fill.map_or(i64::MAX, |f| f as i64).to_le_bytes().to_vec(),
        Dtype::F32 => (fill.unwrap_or(f64::NAN) as f32).to_le_bytes().to_vec(),
        Dtype::F64 => fill.unwrap_or(f64::NAN).to_le_bytes().to_vec(),
    };
    for (pixel, _) in pixels
        .chunks_exact_mut(value.len())
        .zip(&covered)
        .filter(|(_, c)| !**c)
    {
        pixel.copy_from_slice(&value);
    }
}

#[cfg(test)]
mod tests {
    use super::super::split::Split;
    use super::*;
    use crate::ring::{
        Consumer, ConsumerOptions, Dims, FrameHeader, FullPolicy, Producer, RingOptions,
    };
    use std::time::Duration;

    /// A frame as published: header, pixels, attribute area.
    type Owned = (FrameHeader, Vec<u8>, Vec<u8>);

    fn ring(tag: &str, slots: u32) -> (Producer, Consumer) {
        let name = format!("t{}-stitch-{tag}", std::process::id());
        let (producer, _) = Producer::create(&RingOptions {
            name: name.clone(),
            slots,
            slot_bytes: 4096,
            full_policy: FullPolicy::Block,
        })
        .unwrap();
        let consumer = Consumer::attach(&name, &ConsumerOptions::default()).unwrap();
        (producer, consumer)
    }

    fn drain(consumer: &mut Consumer) -> Vec<Owned> {
        let mut got = Vec::new();
        while let Some(f) = consumer.recv_timeout(Duration::ZERO).unwrap() {
            let raw = f.raw_attributes().unwrap().to_vec();
            got.push((f.header().clone(), f.payload().to_vec(), raw));
        }
        got
    }

    fn publish(out: &mut Outputs, (header, pixels, attributes): &Owned) {
        let meta = header.meta();
        out.send(0, &meta, pixels, attributes, &[]).unwrap();
    }

    /// 7 × 5 u16 frames whose pixels are `1000 * id + index`.
    fn frame(id: u64) -> Owned {
        let pixels: Vec<u8> = (0..35u16)
            .flat_map(|i| (1000 * id as u16 + i).to_le_bytes())
            .collect();
        let header = FrameHeader {
            frame_id: id,
            timestamp_ns: 77 + id,
            dtype: Dtype::U16,
            dims: Dims::new(&[7, 5]).unwrap(),
            payload_len: 70,
            flags: 0,
        };
        (header, pixels, Vec::new())
    }

    /// Tiles of frames 0..6 cut by `split` into a 3 × 2 grid, in split's order.
    fn tiles(tag: &str) -> Vec<Owned> {
        let (frames_p, mut frames_c) = ring(&format!("{tag}-f"), 16);
        let (tiles_p, mut tiles_c) = ring(&format!("{tag}-t"), 64);
        let mut frames_out = Outputs::new(vec![frames_p]);
        for id in 0..6 {
            publish(&mut frames_out, &frame(id));
        }
        let mut split = Split::default();
        split
            .configure("grid", &toml::Value::Array(vec![3.into(), 2.into()]))
            .unwrap();
        let mut tiles_out = Outputs::new(vec![tiles_p]);
        while let Some(f) = frames_c.recv_timeout(Duration::ZERO).unwrap() {
            split.process(0, &f, &mut tiles_out).unwrap();
        }
        drain(&mut tiles_c)
    }

    /// Feeds `tiles` to a stitcher; returns what it published.
    fn stitch(tag: &str, stitcher: &mut Stitch, tiles: &[Owned]) -> Vec<Owned> {
        let (in_p, mut in_c) = ring(&format!("{tag}-i"), 64);
        let (out_p, mut out_c) = ring(&format!("{tag}-o"), 16);
        let mut feed = Outputs::new(vec![in_p]);
        let mut out = Outputs::new(vec![out_p]);
        for tile in tiles {
            publish(&mut feed, tile);
            let f = in_c
                .recv_timeout(Duration::ZERO)
                .unwrap()
                .expect("just published");
            stitcher.process(0, &f, &mut out).unwrap();
        }
        stitcher.stop(&mut out).unwrap();
        drain(&mut out_c)
    }

    #[test]
    fn shuffled_tiles_come_back_as_whole_frames_in_order() {
        let mut tiles = tiles("shuffle");
        assert_eq!(tiles.len(), 36);
        fastrand::Rng::with_seed(7).shuffle(&mut tiles);
        // One tile arrives twice (a re-delivery after a crash).
        let again = tiles[3].clone();
        tiles.insert(20, again);
        let mut stitcher = Stitch::default();
        let whole = stitch("shuffle", &mut stitcher, &tiles);
        assert_eq!(whole.len(), 6);
        for (id, (header, pixels, attributes)) in whole.into_iter().enumerate() {
            let (want_header, want_pixels, _) = frame(id as u64);
            assert_eq!((header, pixels), (want_header, want_pixels), "frame {id}");
            assert!(attributes.is_empty(), "tile attributes removed");
        }
        assert_eq!(
            (
                stitcher.stitched,
                stitcher.duplicate_tiles,
                stitcher.incomplete
            ),
            (6, 1, 0)
        );
    }

    #[test]
    fn a_missing_tile_is_marked_and_a_late_one_counted() {
        let mut tiles = tiles("missing");
        // Frame 2 loses its tile at row 1, column 0 (rows 2-3, columns 0-1 of the frame):
        // split publishes frame f's tiles row by row, so it is tile 2 of frame 2.
        let lost_tile = tiles.remove(2 * 6 + 2);
        // With a cache of two frames, frame 2 is pushed out incomplete; its lost tile
        // turns up at the end, too late.
        tiles.push(lost_tile);
        let mut stitcher = Stitch::default();
        stitcher.configure("cache", &2.into()).unwrap();
        stitcher.configure("fill", &9.into()).unwrap();
        let whole = stitch("missing", &mut stitcher, &tiles);
        assert_eq!(
            whole.iter().map(|w| w.0.frame_id).collect::<Vec<_>>(),
            (0..6).collect::<Vec<_>>()
        );
        let (_, pixels, attributes) = &whole[2];
        let (_, want, _) = frame(2);
        for i in 0..35 {
            let (y, x) = (i / 5, i % 5);
            let missing = (2..4).contains(&y) && (0..2).contains(&x);
            let got = &pixels[2 * i..2 * i + 2];
            if missing {
                assert_eq!(got, 9u16.to_le_bytes(), "pixel {i} marked");
            } else {
                assert_eq!(got, &want[2 * i..2 * i + 2], "pixel {i} kept");
            }
        }
        let marks: Vec<_> = crate::ring::attributes(attributes)
            .filter_map(Result::ok)
            .collect();
        assert_eq!(marks, vec![("missing_tiles", AttrValue::I64(1))]);
        assert_eq!(
            (stitcher.stitched, stitcher.incomplete, stitcher.late_tiles),
            (5, 1, 1)
        );
    }
}
