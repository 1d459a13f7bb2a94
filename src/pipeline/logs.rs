//! What worker processes write to stderr. Each worker's stderr is a pipe that a thread
//! of the supervisor drains as fast as it is written, so a worker never waits on it; the
//! lines go on to the supervisor's stderr (the terminal, or the journal under systemd)
//! through one bounded queue, and the last line of each worker is kept for `status`.
//! When the supervisor's stderr cannot keep up, lines are dropped rather than held, and
//! the count of dropped lines is written when it can.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Lines queued for the supervisor's stderr at most; more are counted and dropped.
const QUEUE: usize = 4096;
/// The longest line kept whole; the rest of a longer one is cut.
const MAX_LINE: usize = 4096;

/// The last line a worker wrote, and how many lines it wrote (a new count means a new
/// line to show).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LastLine {
    pub text: String,
    pub lines: u64,
}

/// Forwards the workers' lines to the supervisor's stderr.
pub struct Logs {
    queue: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl Logs {
    /// Starts the thread that writes queued lines to this process's stderr.
    pub fn start() -> std::io::Result<Logs> {
        let (queue, lines) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("worker-logs".into())
            .spawn(move || write_out(&lines, &counted))?;
        Ok(Logs { queue, dropped })
    }

    /// Drains `pipe` (a worker's stderr) on a thread of its own until the worker and
    /// everything it started have closed it, keeping its last line in `last`.
    pub fn drain(&self, pipe: impl Read + Send + 'static, last: Arc<Mutex<LastLine>>) {
        let queue = self.queue.clone();
        let dropped = self.dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("worker-stderr".into())
            .spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader
                        .by_ref()
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut line)
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    keep(&last, &line);
                    match queue.try_send(line.clone()) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            dropped.fetch_add(1, Relaxed);
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("streamd run: cannot read a worker's stderr ({e}); its messages are lost");
        }
    }
}

/// Records `line` as the worker's last, unless it says nothing about the worker.
fn keep(last: &Mutex<LastLine>, line: &[u8]) {
    let text = String::from_utf8_lossy(line).trim().to_string();
    // A panic's last line only says how to get a backtrace; the line before it is the
    // panic's message.
    if text.is_empty() || text.starts_with("note: run with `RUST_BACKTRACE") {
        return;
    }
    if let Ok(mut last) = last.lock() {
        last.text = text;
        last.lines += 1;
    }
}

fn write_out(lines: &Receiver<Vec<u8>>, dropped: &AtomicU64) {
    let mut shown_dropped = 0;
    for line in lines {
        let mut err = std::io::stderr().lock();
        let now_dropped = dropped.load(Relaxed);
        if now_dropped > shown_dropped {
            let _ = writeln!(
                err,
                "streamd run: {} line(s) of worker output were not shown: stderr could not keep up",
                now_dropped - shown_dropped
            );
            shown_dropped = now_dropped;
        }
        let _ = err.write_all(&line);
        if !line.ends_with(b"\n") {
            let _ = err.write_all(b"\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_skips_the_backtrace_note_and_blank_lines() {
        let last = Arc::new(Mutex::new(LastLine::default()));
        let logs = Logs::start().unwrap();
        let text = "streamd worker 1: frame 3: bad\nthread 'main' panicked at x.rs:1:1:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n";
        logs.drain(std::io::Cursor::new(text.as_bytes().to_vec()), last.clone());
        let started = std::time::Instant::now();
        while last.lock().unwrap().lines < 3 {
            assert!(started.elapsed() < std::time::Duration::from_secs(60));
            std::thread::yield_now();
        }
        assert_eq!(
            *last.lock().unwrap(),
            LastLine {
                text: "boom".into(),
                lines: 3
            }
        );
    }
}
