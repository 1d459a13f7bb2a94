//! Numbers and names at the edge: every duration, rate and count that comes from a
//! command line or a file is parsed here into a type that cannot hold an invalid value,
//! with the limits stated in the message; every name echoed in a message is quoted,
//! escaped and cut here. A leaf module: it imports nothing of the crate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest duration anything accepts: one year. Far beyond any run or timeout, and
/// small enough that `Instant::now() + d` can never overflow.
pub const MAX_SECONDS: f64 = 31_536_000.0;
/// The slowest frame rate accepted (besides 0, "as fast as possible"): one frame in
/// 1000 s.
pub const MIN_FPS: f64 = 0.001;
/// The fastest frame rate accepted.
pub const MAX_FPS: f64 = 10_000_000.0;
/// Longest name shown in full in a message; longer ones are cut with `…`.
pub const SHOWN_NAME: usize = 48;

/// A number of seconds from 0 to [`MAX_SECONDS`], finite.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Seconds(f64);

impl Seconds {
    /// `value` seconds, or a sentence saying why not (naming `what`, e.g. `--runtime`).
    pub fn new(value: f64, what: &str) -> Result<Seconds, String> {
        if value.is_finite() && (0.0..=MAX_SECONDS).contains(&value) {
            Ok(Seconds(value))
        } else {
            Err(format!(
                "{what} {} is not a duration; give 0 to {MAX_SECONDS} seconds (a year)",
                show_number(value)
            ))
        }
    }

    /// Like [`new`](Self::new), but 0 is refused too.
    pub fn positive(value: f64, what: &str) -> Result<Seconds, String> {
        match Seconds::new(value, what) {
            Ok(s) if value > 0.0 => Ok(s),
            _ => Err(format!(
                "{what} {} is not a duration; give more than 0 and at most {MAX_SECONDS} seconds (a year)",
                show_number(value)
            )),
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }

    pub fn duration(self) -> Duration {
        // Finite, non-negative and at most a year: from_secs_f64 cannot panic.
        Duration::from_secs_f64(self.0)
    }
}

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{} is not a number of seconds", quote(s)))?;
        Seconds::new(value, "the value")
    }
}

/// A command-line value parser for durations that must be more than 0 (`--runtime`).
pub fn positive_seconds(s: &str) -> Result<Seconds, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{} is not a number of seconds", quote(s)))?;
    Seconds::positive(value, "the value")
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A frame rate: 0 (as fast as possible) or from [`MIN_FPS`] to [`MAX_FPS`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Rate(f64);

impl Rate {
    pub fn new(value: f64, what: &str) -> Result<Rate, String> {
        if value == 0.0 || (value.is_finite() && (MIN_FPS..=MAX_FPS).contains(&value)) {
            Ok(Rate(value))
        } else {
            Err(format!(
                "{what} {} is not a frame rate; give 0 (as fast as possible) or {MIN_FPS} to {MAX_FPS} frames per second",
                show_number(value)
            ))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// Time between frames; `None` for "as fast as possible". At most 1000 s.
    pub fn interval(self) -> Option<Duration> {
        (self.0 > 0.0).then(|| Duration::from_secs_f64(1.0 / self.0))
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{} is not a number of frames per second", quote(s)))?;
        Rate::new(value, "the rate")
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `start + n * interval`, saturating at about a year ahead instead of overflowing.
pub fn nth_tick(interval: Duration, n: u64) -> Duration {
    let nanos = interval.as_nanos().saturating_mul(u128::from(n));
    let cap = (MAX_SECONDS as u128) * 1_000_000_000 * 2;
    let nanos = nanos.min(cap) as u64;
    Duration::from_nanos(nanos)
}

/// A number as the user wrote it, short: `1e300`, `NaN`, `-1`.
fn show_number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.abs() >= 1e9 || (value != 0.0 && value.abs() < 1e-6) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// `name` quoted for a message: control characters and quotes escaped, cut to
/// [`SHOWN_NAME`] characters with `…`, so a message stays one readable line.
pub fn quote(name: &str) -> String {
    let mut out = String::from("'");
    for (shown, c) in name.chars().enumerate() {
        if shown == SHOWN_NAME {
            out.push('…');
            break;
        }
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A message made one line: every control character (newlines included) escaped.
/// The last line of defence before a message reaches the user.
pub fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.trim_end_matches(['\n', '\r']).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An error and its causes as one sentence, `error: cause: cause` (what `{:#}` shows
/// for the binary's `anyhow` errors), for an edge that reports a library error itself
/// (the Python package).
pub fn sentence(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// `ns` since the Unix epoch as an ISO 8601 / RFC 3339 UTC date-time with `digits`
/// (at most 9) digits of the second: `2023-11-14T22:13:20.123Z` for 3.
pub fn utc_date_time(ns: u64, digits: u32) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let digits = digits.min(9);
    let fraction = (ns % 1_000_000_000) / 10u64.pow(9 - digits);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:0width$}Z",
        rest / 3600,
        (rest / 60) % 60,
        rest % 60,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_hold_only_what_fits() {
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e300, MAX_SECONDS * 2.0] {
            let e = Seconds::new(bad, "--runtime").unwrap_err();
            assert!(e.starts_with("--runtime "), "{e}");
            assert!(e.contains("give 0 to 31536000 seconds"), "{e}");
        }
        assert_eq!(Seconds::new(0.0, "x").unwrap().duration(), Duration::ZERO);
        assert!(Seconds::positive(0.0, "x").is_err());
        assert_eq!(
            "2.5".parse::<Seconds>().unwrap().duration(),
            Duration::from_millis(2500)
        );
        assert!("nan".parse::<Seconds>().is_err());
        assert!("inf".parse::<Seconds>().is_err());
    }

    #[test]
    fn rates_hold_only_what_has_an_interval() {
        for bad in [1e-300, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert!(Rate::new(bad, "--fps").is_err(), "{bad}");
        }
        assert_eq!(Rate::new(0.0, "x").unwrap().interval(), None);
        assert_eq!(
            Rate::new(MIN_FPS, "x").unwrap().interval(),
            Some(Duration::from_secs(1000))
        );
        assert!(nth_tick(Duration::from_secs(1000), u64::MAX) < Duration::from_secs(1 << 26));
    }

    #[test]
    fn names_are_escaped_and_cut() {
        assert_eq!(quote("a\nb"), "'a\\nb'");
        let long = "x".repeat(1000);
        let q = quote(&long);
        assert_eq!(q.chars().count(), SHOWN_NAME + 3);
        assert_eq!(one_line("a\nb\r\n"), "a\\nb");
    }
}
