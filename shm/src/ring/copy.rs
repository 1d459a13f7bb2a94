//! Copies into slot memory with non-temporal stores: a frame written into a slot is read
//! by another process later, usually on another core, so caching it here only evicts
//! the writer's own data and costs a read-for-ownership of every line.

/// Copies `src` into `dst` (equal lengths) bypassing the cache where the CPU allows.
pub fn copy_to_slot(dst: &mut [u8], src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        // Small copies: the cache is where the reader will find them soonest.
        if dst.len() < 64 * 1024 {
            dst.copy_from_slice(src);
            return;
        }
    }
    stream_rows([(dst, src)]);
}

/// [`copy_to_slot`] without its size rule, for the pieces of a large frame: copies each
/// `(dst, src)` pair (equal lengths) with streaming stores, as the rows of a tile. One fence at the end orders them all before the caller's publish; a fence per
/// row would wait for each row to reach memory.
pub fn stream_rows<'a>(rows: impl IntoIterator<Item = (&'a mut [u8], &'a [u8])>) {
    let mut rows = rows.into_iter().peekable();
    while let Some((dst, src)) = rows.next() {
        assert_eq!(dst.len(), src.len(), "stream_rows: lengths differ");
        // The hardware prefetcher stops at each 4 KiB page, and the rows of a tile cut
        // from a frame are pages apart: fetch the next row while this one is copied,
        // unless it simply follows this one.
        let ahead = match rows.peek() {
            Some((_, next)) if !std::ptr::eq(next.as_ptr(), src.as_ptr_range().end) => next,
            _ => &[][..],
        };
        stream_unfenced(dst, src, ahead);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is baseline; the fence orders the streaming stores before any later
    // store (the publish that hands the slot over is a Release store).
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// The copy of [`stream_rows`], whose caller fences, prefetching `ahead` alongside.
fn stream_unfenced(dst: &mut [u8], src: &[u8], ahead: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_loadu_si128, _mm_prefetch, _mm_stream_si128, _MM_HINT_T0,
        };
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        dst[..head].copy_from_slice(&src[..head]);
        let body = (dst.len() - head) / 16 * 16;
        let (d, s) = (dst[head..].as_mut_ptr(), src[head..].as_ptr());
        // Whole lines alongside a line of `ahead` each, then the rest.
        let fetched = body.min(ahead.len().next_multiple_of(64)) / 64 * 64;
        /// Copies the 16 bytes at `s + i` to `d + i` with a streaming store.
        ///
        /// # Safety
        ///
        /// Both 16-byte ranges are in bounds and `d + i` is 16-byte aligned.
        unsafe fn copy16(d: *mut u8, s: *const u8, i: usize) {
            // SAFETY: the caller's promise; SSE2 is baseline on x86_64.
            unsafe {
                let v = _mm_loadu_si128(s.add(i) as *const __m128i);
                _mm_stream_si128(d.add(i) as *mut __m128i, v);
            }
        }
        for line in (0..fetched).step_by(64) {
            // SAFETY: `line` is a multiple of 64 below `ahead.len()` rounded up to 64,
            // hence below `ahead.len()`: the address is within `ahead`; a prefetch only
            // hints and never faults; SSE is baseline on x86_64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.as_ptr().add(line) as *const i8) };
            for i in (line..line + 64).step_by(16) {
                // SAFETY: `i + 16 <= fetched <= body <= len - head`, and `d` is
                // 16-byte aligned (head aligned it), as is every `i`.
                unsafe { copy16(d, s, i) };
            }
        }
        for i in (fetched..body).step_by(16) {
            // SAFETY: `i + 16 <= body <= len - head`; `d + i` is 16-byte aligned.
            unsafe { copy16(d, s, i) };
        }
        let done = head + body;
        dst[done..].copy_from_slice(&src[done..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ahead;
        dst.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`stream_rows`] in three rows, the middle one at an odd offset.
    fn streamed(dst: &mut [u8], src: &[u8]) {
        let len = dst.len();
        let (a, rest) = dst.split_at_mut(len / 3);
        let (b, c) = rest.split_at_mut(len / 3);
        let (sa, srest) = src.split_at(len / 3);
        let (sb, sc) = srest.split_at(len / 3);
        stream_rows([(a, sa), (b, sb), (c, sc)]);
    }

    #[test]
    fn rows_apart_are_copied_whole_whatever_their_lengths() {
        // Source rows 1000 bytes apart, as a tile's rows lie in its frame; each next row
        // shorter or longer than the one before, so the prefetch stops short of the
        // copy, runs to its end, or past it.
        let src: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let lengths = [600usize, 130, 999, 64, 1, 700, 0, 333];
        let mut dst = vec![0u8; lengths.iter().sum::<usize>() + 7];
        let mut rows = Vec::new();
        let mut rest = &mut dst[7..];
        for (r, &len) in lengths.iter().enumerate() {
            let (row, tail) = rest.split_at_mut(len);
            rest = tail;
            rows.push((row, &src[3 + r * 1000..3 + r * 1000 + len]));
        }
        stream_rows(rows);
        let mut at = 7;
        for (r, &len) in lengths.iter().enumerate() {
            assert_eq!(&dst[at..at + len], &src[3 + r * 1000..][..len], "row {r}");
            at += len;
        }
        assert!(dst[..7].iter().all(|&b| b == 0));
    }

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
            for copy in [copy_to_slot, streamed] {
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
