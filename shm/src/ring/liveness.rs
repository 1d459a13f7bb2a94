//! Is a process that registered in a segment still the same, living process?
//!
//! A pid alone is not enough: pids are reused. Every registration stores the pid and
//! the kernel's start time of that process (field 22 of `/proc/PID/stat`, in clock
//! ticks since boot); a process is alive when `/proc/PID/stat` exists, shows the same
//! start time and is not a zombie.

use std::fs;

/// Identity of a process as stored in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessId {
    /// The calling process.
    pub fn current() -> ProcessId {
        let pid = std::process::id();
        let start_time = read_stat(pid).map(|(_, start)| start).unwrap_or(0);
        ProcessId { pid, start_time }
    }

    /// True while the registered process runs (zombies count as dead: they hold nothing).
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        match read_stat(self.pid) {
            Some((state, start)) => state != 'Z' && state != 'X' && start == self.start_time,
            None => false,
        }
    }
}

/// Returns (state, start time) from /proc/PID/stat.
fn read_stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After ')' the fields are numbered from 3; start time is field 22.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        let me = ProcessId::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
    }

    #[test]
    fn reused_pid_is_not_the_same_process() {
        let me = ProcessId::current();
        let impostor = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId {
            pid: child.id(),
            start_time: read_stat(child.id()).map_or(0, |s| s.1),
        };
        child.wait().unwrap();
        assert!(!id.is_alive());
    }
}
