//! The process's edge to the operating system outside the rings: the wall clock,
//! signals (stopping on SIGINT/SIGTERM, signalling a child, dying with the parent), and
//! the file-creation mask. A leaf: it imports nothing of the crate, so every other part
//! may use it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Nanoseconds since the Unix epoch (frame timestamps).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A raised flag on SIGINT or SIGTERM, so loops can stop cleanly and still report.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registration only fails for forbidden signals, which these are not.
        let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
    }
    flag
}

/// Sends signal `sig` to child `pid`, which the caller has not reaped yet.
pub fn signal_child(pid: u32, sig: i32) {
    // SAFETY: kill(2) touches no memory of ours; the caller has not reaped the child, so
    // the pid still names it.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Asks the kernel to SIGKILL this process when its parent dies, so no worker outlives
/// a supervisor that was killed; false if the parent (`parent`) is already gone.
pub fn die_with_parent(parent: u32) -> bool {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() } as u32;
    set && ppid == parent
}

/// Ignores SIGXFSZ, so a write past the file-size limit (ulimit -f) fails with EFBIG,
/// which a writer counts and reports, instead of killing the worker.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Runs `f` with the file-creation mask `mask`, so files it creates never exist with
/// wider permissions (a control socket is created 0600 without a window).
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask only swaps the process's mask; called from the supervisor's main
    // thread before any thread that creates files starts.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let out = f();
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    out
}

/// Bytes free for an unprivileged user in the file system holding `path` (`/dev/shm`).
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` room for one statvfs, which
    // the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it wrote the whole struct.
    let stats = unsafe { stats.assume_init() };
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}
