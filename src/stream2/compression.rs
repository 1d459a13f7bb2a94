//! The DECTRIS compression tag 56500 (`cbor/dectris-compression-tag.md`): a byte string
//! compressed with `bslz4` (bitshuffle + LZ4, the HDF5 filter 32008 framing) or `lz4`
//! (the HDF5 LZ4 filter 32004 framing), decompressed straight into the destination.

use super::DecodeError;
use crate::writers::bitshuffle;

/// A compression algorithm the tag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    BsLz4,
    Lz4,
}

impl Algorithm {
    pub fn parse(name: &str) -> Result<Algorithm, DecodeError> {
        match name {
            "bslz4" => Ok(Algorithm::BsLz4),
            "lz4" => Ok(Algorithm::Lz4),
            other => Err(DecodeError::Unsupported(format!(
                "compression '{}' is not supported (streamd takes bslz4 and lz4)",
                crate::units::one_line(other)
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::BsLz4 => "bslz4",
            Algorithm::Lz4 => "lz4",
        }
    }
}

/// The uncompressed length both framings state first (u64, big-endian).
pub fn original_len(data: &[u8]) -> Result<u64, DecodeError> {
    // Both framings start with a 12-byte header: u64 length, u32 block size.
    match data.get(..12) {
        Some(h) => Ok(u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))),
        None => Err(DecodeError::Invalid(
            "compressed data shorter than its 12-byte header".into(),
        )),
    }
}

/// Decompresses `data` into `out`, which must be exactly the uncompressed length.
pub fn decompress_into(
    algorithm: Algorithm,
    elem_size: usize,
    data: &[u8],
    out: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    match algorithm {
        Algorithm::BsLz4 => {
            bitshuffle::decompress_into(data, elem_size, out, scratch).map_err(DecodeError::Invalid)
        }
        Algorithm::Lz4 => lz4_hdf5_into(data, out),
    }
}

/// The HDF5 LZ4 filter's framing: u64 BE total, u32 BE block size, then per block a u32
/// BE compressed length and the LZ4 block; a block whose compressed length equals its
/// plain length is stored as it is.
fn lz4_hdf5_into(data: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    let corrupt = |what: &str| DecodeError::Invalid(format!("lz4 data are corrupt: {what}"));
    let total = original_len(data)? as usize;
    if total != out.len() {
        return Err(DecodeError::Invalid(format!(
            "lz4 data decompress to {total} bytes where {} were expected",
            out.len()
        )));
    }
    let block = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
    if block == 0 && total > 0 {
        return Err(corrupt("its block size is 0"));
    }
    let mut at = 12;
    let mut done = 0;
    while done < total {
        let n = block.min(total - done);
        let len_bytes = data.get(at..at + 4).ok_or_else(|| corrupt("truncated"))?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let packed = data
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| corrupt("truncated"))?;
        let dest = &mut out[done..done + n];
        if len == n {
            dest.copy_from_slice(packed);
        } else {
            let got = lz4_flex::block::decompress_into(packed, dest)
                .map_err(|e| corrupt(&e.to_string()))?;
            if got != n {
                return Err(corrupt("a block decompressed to the wrong size"));
            }
        }
        at += 4 + len;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The HDF5 LZ4 framing, as the filter writes it (for golden messages).
    pub fn lz4_hdf5(input: &[u8], block: usize) -> Vec<u8> {
        let mut out = (input.len() as u64).to_be_bytes().to_vec();
        out.extend_from_slice(&(block as u32).to_be_bytes());
        for chunk in input.chunks(block) {
            let packed = lz4_flex::block::compress(chunk);
            let body = if packed.len() >= chunk.len() {
                chunk.to_vec()
            } else {
                packed
            };
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
        }
        out
    }

    #[test]
    fn lz4_frames_decompress_in_place() {
        let input: Vec<u8> = (0..100_000u32).map(|i| (i / 300) as u8).collect();
        let framed = lz4_hdf5(&input, 8192);
        let mut out = vec![0u8; input.len()];
        decompress_into(Algorithm::Lz4, 0, &framed, &mut out, &mut Vec::new()).unwrap();
        assert_eq!(out, input);
        let mut short = vec![0u8; 10];
        assert!(decompress_into(Algorithm::Lz4, 0, &framed, &mut short, &mut Vec::new()).is_err());
        let cut = &framed[..framed.len() / 2];
        assert!(matches!(
            decompress_into(Algorithm::Lz4, 0, cut, &mut out, &mut Vec::new()),
            Err(DecodeError::Invalid(_))
        ));
    }
}
