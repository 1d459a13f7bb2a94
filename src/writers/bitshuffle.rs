//! Bitshuffle + LZ4 in the layout of HDF5 filter 32008 (the bitshuffle project's
//! `bshuf_h5filter`, what hdf5plugin, DIALS and Dectris detectors read):
//!
//! ```text
//! u64 BE  uncompressed bytes
//! u32 BE  block size in bytes (elements per block × element size)
//! per block:  u32 BE compressed length, LZ4 block of the bit-transposed elements
//! tail:       the last (elements mod 8) elements, copied as they are
//! ```
//!
//! A block holds `8192 / element size` elements (the reference's default, rounded down
//! to a multiple of 8); the last block holds what remains, rounded down to a multiple
//! of 8. Within a block of n elements, bit k of byte j of element i goes to bit i mod 8
//! of output byte (8j + k)·n/8 + i/8.

/// The HDF5 filter id registered for bitshuffle.
pub const FILTER_ID: u32 = 32008;
/// `cd_values[4]` value that selects LZ4 in the filter's parameters.
pub const LZ4: u32 = 2;

const TARGET_BLOCK_BYTES: usize = 8192;
const MIN_BLOCK: usize = 128;
const HEADER: usize = 12;

/// Elements per block for `elem_size`-byte elements (the reference's default).
pub fn block_elements(elem_size: usize) -> usize {
    ((TARGET_BLOCK_BYTES / elem_size) / 8 * 8).max(MIN_BLOCK)
}

/// Largest output of [`compress`] for `len` input bytes.
pub fn max_compressed_len(len: usize, elem_size: usize) -> usize {
    let block_bytes = block_elements(elem_size) * elem_size;
    let blocks = len.div_ceil(block_bytes);
    HEADER + blocks * (4 + lz4_flex::block::get_maximum_output_size(block_bytes)) + 8 * elem_size
}

/// Transposes an 8×8 bit matrix held one row per byte (the reference's TRANS_BIT_8X8).
#[inline(always)]
fn transpose8(mut x: u64) -> u64 {
    let mut t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x = x ^ t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x = x ^ t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// Bit-transposes `n` elements (n a multiple of 8) of `input` into `out`: 32 elements
/// at a time with AVX2 where the CPU has it, the rest 8 at a time with an 8×8 bit
/// transpose.
fn shuffle_block(input: &[u8], out: &mut [u8], elem_size: usize) {
    let n = input.len() / elem_size;
    let row = n / 8;
    let wide = avx2::shuffle(input, out, elem_size, row);
    for (g, group) in input.chunks_exact(8 * elem_size).enumerate().skip(wide / 8) {
        for j in 0..elem_size {
            let mut x = 0u64;
            for m in 0..8 {
                x |= (group[m * elem_size + j] as u64) << (8 * m);
            }
            let y = transpose8(x);
            for k in 0..8 {
                out[(8 * j + k) * row + g] = (y >> (8 * k)) as u8;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// Shuffles the first elements of a block, 32 at a time, when the CPU has AVX2;
    /// returns how many elements it did (a multiple of 32, or 0 without AVX2).
    pub fn shuffle(input: &[u8], out: &mut [u8], elem_size: usize, row: usize) -> usize {
        static HAS_AVX2: OnceLock<bool> = OnceLock::new();
        if !*HAS_AVX2.get_or_init(|| is_x86_feature_detected!("avx2")) {
            return 0;
        }
        let chunks = input.len() / elem_size / 32;
        // SAFETY: the CPU has AVX2 (checked above), the only requirement of a
        // #[target_feature(enable = "avx2")] function.
        unsafe { shuffle_chunks(input, out, elem_size, row, chunks) };
        32 * chunks
    }

    /// Inverse of [`shuffle`]: the first elements of a block, 32 at a time, when the
    /// CPU has AVX2; returns how many elements it did (a multiple of 32, or 0).
    pub fn unshuffle(input: &[u8], out: &mut [u8], elem_size: usize, row: usize) -> usize {
        static HAS_AVX2: OnceLock<bool> = OnceLock::new();
        // Elements wider than 8 bytes (none a ring holds) take the scalar path.
        if elem_size > 8 || !*HAS_AVX2.get_or_init(|| is_x86_feature_detected!("avx2")) {
            return 0;
        }
        let chunks = input.len() / elem_size / 32;
        // SAFETY: the CPU has AVX2 (checked above), the only requirement of a
        // #[target_feature(enable = "avx2")] function.
        unsafe { unshuffle_chunks(input, out, elem_size, row, chunks) };
        32 * chunks
    }

    /// Chunk c holds elements 32c..32c+32; bit plane 8j + k gives four bytes of it, bit
    /// m of which is bit k of byte j of element m. Each plane's 32 bits are spread one
    /// to a byte (broadcast, each byte picks its mask byte, compare with its bit), and
    /// the eight planes OR-ed into byte j of the 32 elements; two-byte elements are
    /// interleaved from their two bytes' registers, wider ones scattered.
    #[target_feature(enable = "avx2")]
    fn unshuffle_chunks(input: &[u8], out: &mut [u8], elem_size: usize, row: usize, chunks: usize) {
        let pick = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        for c in 0..chunks {
            let mut bytes = [_mm256_setzero_si256(); 2];
            let mut wide = [[0u8; 32]; 8];
            for j in 0..elem_size {
                let mut acc = _mm256_setzero_si256();
                for k in 0..8 {
                    let at = (8 * j + k) * row + 4 * c;
                    let mask = u32::from_le_bytes(input[at..at + 4].try_into().expect("4 bytes"));
                    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(mask as i32), pick);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
                    acc = _mm256_or_si256(acc, _mm256_and_si256(set, _mm256_set1_epi8(1 << k)));
                }
                match elem_size {
                    1 | 2 => bytes[j] = acc,
                    _ => wide[j] = bytemuck::cast(acc),
                }
            }
            let dest = &mut out[32 * c * elem_size..32 * (c + 1) * elem_size];
            match elem_size {
                1 => dest.copy_from_slice(&bytemuck::cast::<__m256i, [u8; 32]>(bytes[0])),
                2 => {
                    // unpack interleaves within 128-bit lanes; the permutes put lanes
                    // back in element order.
                    let lo = _mm256_unpacklo_epi8(bytes[0], bytes[1]);
                    let hi = _mm256_unpackhi_epi8(bytes[0], bytes[1]);
                    let first = _mm256_permute2x128_si256(lo, hi, 0x20);
                    let second = _mm256_permute2x128_si256(lo, hi, 0x31);
                    dest[..32].copy_from_slice(&bytemuck::cast::<__m256i, [u8; 32]>(first));
                    dest[32..].copy_from_slice(&bytemuck::cast::<__m256i, [u8; 32]>(second));
                }
                _ => {
                    for (m, element) in dest.chunks_exact_mut(elem_size).enumerate() {
                        for (j, byte) in element.iter_mut().enumerate() {
                            *byte = wide[j][m];
                        }
                    }
                }
            }
        }
    }

    fn load(bytes: &[u8]) -> __m256i {
        bytemuck::cast::<[u8; 32], __m256i>(bytes.try_into().expect("32 bytes"))
    }

    /// Chunk c holds elements 32c..32c+32. For each byte j of an element: byte j of
    /// the 32 elements of a chunk in one register (u16 elements are split into low and
    /// high bytes by packing; wider ones gathered), then bit k of all 32 with one
    /// movemask, top bit first, shifting each byte left between masks: four bytes of
    /// bit plane 8j + k.
    #[target_feature(enable = "avx2")]
    fn shuffle_chunks(input: &[u8], out: &mut [u8], elem_size: usize, row: usize, chunks: usize) {
        for j in 0..elem_size {
            let mut rows = out[8 * j * row..8 * (j + 1) * row].chunks_exact_mut(row);
            let mut planes: [&mut [u8]; 8] =
                std::array::from_fn(|_| &mut rows.next().expect("8 planes")[..4 * chunks]);
            for c in 0..chunks {
                let elements = &input[32 * c * elem_size..32 * (c + 1) * elem_size];
                let mut v = match elem_size {
                    1 => load(elements),
                    2 => {
                        let (a, b) = (load(&elements[..32]), load(&elements[32..]));
                        let packed = if j == 0 {
                            let low_byte = _mm256_set1_epi16(0x00FF);
                            let (a, b) =
                                (_mm256_and_si256(a, low_byte), _mm256_and_si256(b, low_byte));
                            _mm256_packus_epi16(a, b)
                        } else {
                            _mm256_packus_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(b, 8))
                        };
                        // packus interleaves its inputs per 128-bit lane; the permute
                        // puts the 32 bytes back in element order.
                        _mm256_permute4x64_epi64(packed, 0b11_01_10_00)
                    }
                    _ => {
                        let mut bytes = [0u8; 32];
                        for (m, b) in bytes.iter_mut().enumerate() {
                            *b = elements[m * elem_size + j];
                        }
                        load(&bytes)
                    }
                };
                for plane in planes.iter_mut().rev() {
                    let mask = _mm256_movemask_epi8(v) as u32;
                    plane[4 * c..4 * c + 4].copy_from_slice(&mask.to_le_bytes());
                    v = _mm256_add_epi8(v, v);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    pub fn shuffle(_input: &[u8], _out: &mut [u8], _elem_size: usize, _row: usize) -> usize {
        0
    }

    pub fn unshuffle(_input: &[u8], _out: &mut [u8], _elem_size: usize, _row: usize) -> usize {
        0
    }
}

/// Inverse of [`shuffle_block`].
fn unshuffle_block(input: &[u8], out: &mut [u8], elem_size: usize) {
    let n = input.len() / elem_size;
    let row = n / 8;
    let wide = avx2::unshuffle(input, out, elem_size, row);
    for (g, group) in out
        .chunks_exact_mut(8 * elem_size)
        .enumerate()
        .skip(wide / 8)
    {
        for j in 0..elem_size {
            let mut y = 0u64;
            for k in 0..8 {
                y |= (input[(8 * j + k) * row + g] as u64) << (8 * k);
            }
            let x = transpose8(y);
            for m in 0..8 {
                group[m * elem_size + j] = (x >> (8 * m)) as u8;
            }
        }
    }
}

/// Compresses `input` (whole elements of `elem_size` bytes) into `out`, which must hold
/// [`max_compressed_len`] bytes; returns the compressed length.
pub fn compress(input: &[u8], elem_size: usize, out: &mut [u8], scratch: &mut Vec<u8>) -> usize {
    assert_eq!(input.len() % elem_size, 0, "whole elements");
    let block = block_elements(elem_size);
    out[..8].copy_from_slice(&(input.len() as u64).to_be_bytes());
    out[8..12].copy_from_slice(&((block * elem_size) as u32).to_be_bytes());
    let mut at = HEADER;
    let elements = input.len() / elem_size;
    let shuffled_elements = elements / 8 * 8;
    scratch.resize(block * elem_size, 0);
    let mut start = 0;
    while start < shuffled_elements {
        let count = block.min(shuffled_elements - start);
        let bytes = &input[start * elem_size..(start + count) * elem_size];
        let shuffled = &mut scratch[..bytes.len()];
        shuffle_block(bytes, shuffled, elem_size);
        let len = lz4_flex::block::compress_into(shuffled, &mut out[at + 4..])
            .expect("output sized by max_compressed_len");
        out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
        at += 4 + len;
        start += count;
    }
    let tail = &input[shuffled_elements * elem_size..];
    out[at..at + tail.len()].copy_from_slice(tail);
    at + tail.len()
}

/// Decompresses a 32008 chunk of `elem_size`-byte elements.
pub fn decompress(input: &[u8], elem_size: usize) -> Result<Vec<u8>, String> {
    let total = original_len(input)?;
    let mut out = vec![0u8; total];
    decompress_into(input, elem_size, &mut out, &mut Vec::new())?;
    Ok(out)
}

/// The uncompressed length a 32008 chunk states in its header.
pub fn original_len(input: &[u8]) -> Result<usize, String> {
    match input.get(..8) {
        Some(b) => Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")) as usize),
        None => Err(corrupt("shorter than its header")),
    }
}

fn corrupt(what: &str) -> String {
    format!("bitshuffle-LZ4 chunk is corrupt: {what}")
}

/// Decompresses a 32008 chunk straight into `out`, which must be exactly as long as
/// the chunk says it was (a ring slot's frame bytes); `scratch` holds one block.
pub fn decompress_into(
    input: &[u8],
    elem_size: usize,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<(), String> {
    if input.len() < HEADER {
        return Err(corrupt("shorter than its header"));
    }
    let total = original_len(input)?;
    let block_bytes = u32::from_be_bytes(input[8..12].try_into().expect("4 bytes")) as usize;
    if elem_size == 0 || total % elem_size != 0 || block_bytes % (8 * elem_size) != 0 {
        return Err(corrupt("sizes are not whole elements"));
    }
    if block_bytes == 0 && total >= 8 * elem_size {
        return Err(corrupt("its block size is 0"));
    }
    if total != out.len() {
        return Err(format!(
            "bitshuffle-LZ4 data decompress to {total} bytes where {} were expected",
            out.len()
        ));
    }
    let block = block_bytes / elem_size;
    let elements = total / elem_size;
    let shuffled_elements = elements / 8 * 8;
    // A block is never longer than the data (a hostile header cannot make it allocate).
    scratch.resize(block_bytes.min(total), 0);
    let mut at = HEADER;
    let mut start = 0;
    while start < shuffled_elements {
        let count = block.min(shuffled_elements - start);
        let len_bytes = input.get(at..at + 4).ok_or_else(|| corrupt("truncated"))?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let packed = input
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| corrupt("truncated"))?;
        let shuffled = &mut scratch[..count * elem_size];
        let got = lz4_flex::block::decompress_into(packed, shuffled)
            .map_err(|e| corrupt(&e.to_string()))?;
        if got != shuffled.len() {
            return Err(corrupt("a block decompressed to the wrong size"));
        }
        unshuffle_block(
            shuffled,
            &mut out[start * elem_size..(start + count) * elem_size],
            elem_size,
        );
        at += 4 + len;
        start += count;
    }
    let tail = (elements - shuffled_elements) * elem_size;
    let rest = input
        .get(at..at + tail)
        .ok_or_else(|| corrupt("truncated"))?;
    out[shuffled_elements * elem_size..].copy_from_slice(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The layout as the module documentation states it, one bit at a time.
    fn shuffle_by_definition(input: &[u8], elem_size: usize) -> Vec<u8> {
        let n = input.len() / elem_size;
        let mut out = vec![0u8; input.len()];
        for i in 0..n {
            for j in 0..elem_size {
                for k in 0..8 {
                    let bit = (input[i * elem_size + j] >> k) & 1;
                    out[(8 * j + k) * (n / 8) + i / 8] |= bit << (i % 8);
                }
            }
        }
        out
    }

    #[test]
    fn block_shuffle_matches_the_definition() {
        for elem_size in [1, 2, 4, 8] {
            let input: Vec<u8> = (0..64 * elem_size).map(|i| (i * 37 % 256) as u8).collect();
            let mut out = vec![0u8; input.len()];
            shuffle_block(&input, &mut out, elem_size);
            assert_eq!(out, shuffle_by_definition(&input, elem_size));
        }
    }

    #[test]
    fn header_and_block_size_follow_the_reference() {
        let input = vec![1u8; 2 * 10_000];
        let mut out = vec![0u8; max_compressed_len(input.len(), 2)];
        let mut scratch = Vec::new();
        compress(&input, 2, &mut out, &mut scratch);
        assert_eq!(u64::from_be_bytes(out[..8].try_into().unwrap()), 20_000);
        assert_eq!(u32::from_be_bytes(out[8..12].try_into().unwrap()), 8192);
        assert_eq!(block_elements(1), 8192);
        assert_eq!(block_elements(4), 2048);
    }

    proptest! {
        #[test]
        fn round_trips(elem_size in prop::sample::select(vec![1usize, 2, 4, 8]),
                       elements in 0usize..12_000,
                       seed in any::<u64>()) {
            let mut rng = fastrand::Rng::with_seed(seed);
            // Mostly smooth data with noise, like detector frames.
            let input: Vec<u8> = (0..elements * elem_size)
                .map(|i| if rng.u8(..) < 32 { rng.u8(..) } else { (i / 97) as u8 })
                .collect();
            let mut out = vec![0u8; max_compressed_len(input.len(), elem_size)];
            let mut scratch = Vec::new();
            let len = compress(&input, elem_size, &mut out, &mut scratch);
            prop_assert_eq!(decompress(&out[..len], elem_size).unwrap(), input);
        }
    }
}
