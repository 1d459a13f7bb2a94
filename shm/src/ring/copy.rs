//! Copies into slot memory with non-temporal stores: a frame written into a slot is read
//! by another process later, usually on another core, so caching it here only evicts
//! the writer's own data and costs a read-for-ownership of every line.

/// Copies `src` into `dst` (equal lengths) bypassing the cache where the CPU allows.
pub fn copy_to_slot(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_to_slot: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        // Small copies: the cache is where the reader will find them soonest.
        if dst.len() < 64 * 1024 {
            dst.copy_from_slice(src);
            return;
        }
    }
    stream_copy(dst, src);
}

/// [`copy_to_slot`] without its size rule: for one piece of a large frame (a tile row).
pub fn stream_copy(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "stream_copy: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        dst[..head].copy_from_slice(&src[..head]);
        let body = (dst.len() - head) / 16 * 16;
        let (d, s) = (dst[head..].as_mut_ptr(), src[head..].as_ptr());
        for i in (0..body).step_by(16) {
            // SAFETY: `i + 16 <= body <= len - head`, so both 16-byte accesses are in
            // bounds; `d + i` is 16-byte aligned (head aligned it); SSE2 is baseline on
            // x86_64.
            unsafe {
                let v = _mm_loadu_si128(s.add(i) as *const __m128i);
                _mm_stream_si128(d.add(i) as *mut __m128i, v);
            }
        }
        // SAFETY: SSE2 is baseline; the fence orders the streaming stores before any
        // later store (the publish that hands the slot over is a Release store).
        unsafe { _mm_sfence() };
        let done = head + body;
        dst[done..].copy_from_slice(&src[done..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_match_at_every_alignment_and_length() {
        let src: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (offset, len) in [
            (0, 0),
            (1, 15),
            (3, 100),
            (5, 70_000),
            (16, 65_536),
            (7, 199_990),
        ] {
            for copy in [copy_to_slot, stream_copy] {
                let mut dst = vec![0u8; 200_016];
                copy(&mut dst[offset..offset + len], &src[..len]);
                assert_eq!(&dst[offset..offset + len], &src[..len], "{offset} {len}");
                assert!(dst[..offset]
                    .iter()
                    .chain(&dst[offset + len..])
                    .all(|&b| b == 0));
            }
        }
    }
}
