//! Sleeping and waking across processes: a shared (not process-private) futex.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a consumer waits for the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitMode {
    /// Sleep on the ring's futex; costs a wake-up syscall per idle period.
    #[default]
    Futex,
    /// Busy-poll for the lowest latency; burns the core.
    Spin,
}

/// Sleeps while `word` still holds `expected`, for at most `timeout`.
/// Spurious and early returns are fine: every caller re-checks its condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live, 4-byte aligned u32 inside a mapping shared by the waiting
    // processes; FUTEX_WAIT only reads it and `ts` outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every process sleeping on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}
