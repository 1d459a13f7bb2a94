//! The DECTRIS Stream V2 codec: CBOR messages (RFC 8949) as the public specification
//! (`dectris/documentation`, `stream_v2/README.md`) defines them — `start`, `image`,
//! `end` — with pixels as RFC 8746 typed arrays in a multi-dimensional array (tag 40),
//! optionally compressed under the DECTRIS compression tag 56500 (`bslz4`, `lz4`).
//!
//! A codec only, no sockets: [`decode`] borrows from the received bytes and
//! [`Array::write_into`] puts the pixels straight into their destination (a ring slot),
//! decompressing and byte-swapping there; [`encode`] builds messages for the `zmq` sink.
//! The transports are `sources/zmq.rs` (PULL) and `processors/zmq_push.rs` (PUSH).

mod compression;
mod decode;
pub mod encode;

pub use compression::Algorithm;
pub use decode::{decode, user_values, Array, Data, End, Image, Message, Start};

/// Why a message was refused: one sentence, and the kind it is counted under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end in the middle of a CBOR item.
    #[error("the message is truncated ({0})")]
    Truncated(String),
    /// The bytes are not well-formed CBOR, or not the shape Stream V2 gives a message.
    #[error("the message is not valid Stream V2 CBOR: {0}")]
    Malformed(String),
    /// Well-formed, but something streamd does not take (a pixel type, a compression).
    #[error("{0}")]
    Unsupported(String),
    /// Well-formed, but inconsistent (sizes that disagree, corrupt compressed data).
    #[error("{0}")]
    Invalid(String),
}

impl DecodeError {
    /// The counter a refused message is counted in.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Truncated(_) => "truncated",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::Unsupported(_) => "unsupported",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}

impl From<minicbor::decode::Error> for DecodeError {
    fn from(e: minicbor::decode::Error) -> Self {
        if e.is_end_of_input() {
            DecodeError::Truncated(e.to_string())
        } else {
            DecodeError::Malformed(e.to_string())
        }
    }
}

/// Nanoseconds since the Unix epoch of an RFC 3339 date-time (`2024-05-01T12:00:00.5Z`,
/// `...+02:00`), as Stream V2's `DateTime` carries; `None` when it is not one.
pub fn parse_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let digits = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        let frac = text.get(at..at + digits.min(9))?;
        nanos = frac.parse::<i64>().ok()? * 10i64.pow(9 - frac.len() as u32);
        at += digits;
    }
    let offset_s = match b.get(at)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let (h, m) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            let s = h * 3600 + m * 60;
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

/// An RFC 3339 UTC date-time with microseconds for `ns` since the Unix epoch.
pub fn format_date(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = (ns / 1000) % 1_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rest / 3600,
        (rest / 60) % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_and_format_as_rfc3339() {
        let t = 1_700_000_000_123_456_000;
        assert_eq!(format_date(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(parse_date(&format_date(t)), Some(t));
        assert_eq!(parse_date("2023-11-14T23:13:20.123456+01:00"), Some(t));
        assert_eq!(parse_date("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_date("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("2023-13-14T22:13:20Z"), None);
    }
}
