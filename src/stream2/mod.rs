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

#[cfg(test)]
use crate::series::UserValue;
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
    crate::units::utc_date_time(ns, 6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::fill_ramp;
    use crate::ring::Dtype;
    use proptest::prelude::*;

    /// Golden messages written from the specification by `fixtures/stream2/make_golden.py`.
    fn golden(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/stream2/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn image(bytes: &[u8]) -> Image<'_> {
        match decode(bytes).unwrap() {
            Message::Image(image) => image,
            other => panic!("not an image: {other:?}"),
        }
    }

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

    #[test]
    fn every_pixel_type_and_byte_order_and_compression_lands_as_the_little_endian_ramp() {
        for (name, id, dtype) in [
            ("image_u8.cbor", 0, Dtype::U8),
            ("image_u16_le.cbor", 1, Dtype::U16),
            ("image_u16_be_bslz4.cbor", 2, Dtype::U16),
            ("image_u32_be.cbor", 3, Dtype::U32),
            ("image_u32_le_lz4.cbor", 4, Dtype::U32),
            ("image_f32_le_bslz4.cbor", 5, Dtype::F32),
            ("image_f32_be.cbor", 6, Dtype::F32),
        ] {
            let bytes = golden(name);
            let image = image(&bytes);
            assert_eq!(image.image_id, id, "{name}");
            assert_eq!(image.series_id, Some(3));
            assert_eq!(image.start_time, Some((id * 10, 10_000)));
            assert_eq!(image.real_time, Some((9, 10_000)));
            assert_eq!(
                image.series_date.and_then(parse_date),
                parse_date("2024-05-01T12:00:00.25Z")
            );
            let (channel, array) = image.data[0];
            assert_eq!(channel, "threshold_1");
            assert_eq!((array.ny, array.nx, array.dtype), (5, 7, dtype), "{name}");
            // Into a dirty buffer, as a reused ring slot is.
            let mut out = vec![0xAB; array.len()];
            array.write_into(&mut out, &mut Vec::new()).unwrap();
            let mut expected = vec![0; array.len()];
            fill_ramp(&mut expected, dtype, id);
            assert_eq!(out, expected, "{name}");
            let user = user_values(image.user_data.unwrap());
            assert!(user.contains(&("shot".into(), UserValue::Int(id as i64))));
            assert!(user.contains(&("motor.x".into(), UserValue::Float(1.5))));
            assert!(user.contains(&("tags".into(), UserValue::Text("[1, \"a\"]".into()))));
        }
    }

    #[test]
    fn a_start_message_gives_the_series_description() {
        let bytes = golden("start.cbor");
        let Message::Start(start) = decode(&bytes).unwrap() else {
            panic!("not a start message")
        };
        let s = &start.series;
        assert_eq!(s.series_id, Some(3));
        assert_eq!(s.series_unique_id.as_deref(), Some("golden"));
        assert_eq!((s.beam_center_x, s.beam_center_y), (Some(3.5), Some(2.25)));
        assert_eq!((s.pixel_size_x, s.pixel_size_y), (Some(75e-6), Some(75e-6)));
        assert_eq!(s.detector_translation, Some([0.01, -0.02, 0.15]));
        assert_eq!(s.sensor_material.as_deref(), Some("Si"));
        assert_eq!(s.sensor_thickness, Some(450e-6));
        assert_eq!(s.saturation_value, Some(65_000));
        assert_eq!((s.count_time, s.frame_time), (Some(0.0009), Some(0.001)));
        assert_eq!(s.number_of_images, Some(4));
        assert_eq!(s.incident_wavelength, Some(1.0));
        assert_eq!(s.detector_serial_number.as_deref(), Some("E-08-0123"));
        let omega = s.goniometer.iter().find(|a| a.name == "omega").unwrap();
        assert_eq!((omega.start, omega.increment), (15.0, 0.1));
        assert_eq!(s.goniometer.len(), 5);
        assert_eq!(start.channels, ["threshold_1", "threshold_2"]);
        assert_eq!(start.thresholds[1], ("threshold_2".into(), 9000.0));
        assert!(s.user.contains(&("run".into(), UserValue::Int(7))));
        assert!(s.arm_date.as_deref().and_then(parse_date).is_some());
    }

    #[test]
    fn an_end_message_names_its_series() {
        let bytes = golden("end.cbor");
        let Message::End(end) = decode(&bytes).unwrap() else {
            panic!("not an end message")
        };
        assert_eq!(
            (end.series_id, end.series_unique_id),
            (Some(3), Some("golden"))
        );
    }

    #[test]
    fn a_cut_message_is_refused_at_every_length_without_a_panic() {
        for name in [
            "start.cbor",
            "image_u16_be_bslz4.cbor",
            "image_u32_le_lz4.cbor",
        ] {
            let bytes = golden(name);
            for len in 0..bytes.len() {
                let cut = &bytes[..len];
                match decode(cut) {
                    Err(DecodeError::Truncated(_) | DecodeError::Malformed(_)) => {}
                    Err(e) => panic!("{name} cut at {len}: {e:?}"),
                    Ok(Message::Image(image)) => {
                        // Cut inside the compressed data only: the sizes disagree.
                        let array = image.data[0].1;
                        let mut out = vec![0; array.len()];
                        assert!(array.write_into(&mut out, &mut Vec::new()).is_err());
                    }
                    Ok(other) => panic!("{name} cut at {len} decoded as {other:?}"),
                }
            }
        }
    }

    #[test]
    fn what_streamd_does_not_take_is_refused_with_its_reason() {
        let ok = golden("image_u16_le.cbor");
        // Tag 69 (uint16 LE) → 77 (int16 LE): the byte after 0xd8 is the tag number.
        let at = ok.windows(2).position(|w| w == [0xd8, 69]).unwrap();
        let mut int16 = ok.clone();
        int16[at + 1] = 77;
        let e = decode(&int16).unwrap_err();
        assert_eq!(e.kind(), "unsupported");
        assert!(e.to_string().contains("int16 (tag 77)"), "{e}");
        // Tag 40 → 1040 does not fit one byte; tag 40 → 41 (not a multi-dim array).
        let at = ok.windows(2).position(|w| w == [0xd8, 40]).unwrap();
        let mut other = ok.clone();
        other[at + 1] = 41;
        assert_eq!(decode(&other).unwrap_err().kind(), "malformed");
        // Dimensions that disagree with the bytes: [5, 7] → [5, 8].
        let at = ok.windows(3).position(|w| w == [0x82, 5, 7]).unwrap();
        let mut dims = ok.clone();
        dims[at + 2] = 8;
        let e = decode(&dims).unwrap_err();
        assert_eq!(e.kind(), "invalid");
        assert!(e.to_string().contains("holds 70 bytes"), "{e}");
        assert_eq!(decode(b"\x01").unwrap_err().kind(), "malformed");
        assert_eq!(decode(b"").unwrap_err().kind(), "truncated");
        // Corrupt compressed data: flip bytes inside the LZ4 blocks.
        let mut bad = golden("image_u16_be_bslz4.cbor");
        let n = bad.len();
        for b in &mut bad[n - 40..n - 4] {
            *b ^= 0x5a;
        }
        if let Ok(Message::Image(image)) = decode(&bad) {
            let array = image.data[0].1;
            let mut out = vec![0; array.len()];
            let e = array.write_into(&mut out, &mut Vec::new()).unwrap_err();
            assert_eq!(e.kind(), "invalid");
        }
    }

    #[test]
    fn what_the_sink_encodes_decodes_back() {
        let series = crate::series::Series {
            series_id: Some(9),
            beam_center_x: Some(1.5),
            detector_translation: Some([0.0, 0.0, 0.3]),
            goniometer: vec![crate::series::Axis {
                name: "omega".into(),
                start: 1.0,
                increment: 0.5,
            }],
            user: vec![("a".into(), UserValue::Text("b".into()))],
            ..Default::default()
        };
        let start = encode::start(&series, "threshold_1", (4, 8), Dtype::U16);
        let Message::Start(back) = decode(&start).unwrap() else {
            panic!("start")
        };
        assert_eq!(back.series.beam_center_x, Some(1.5));
        assert_eq!(back.series.goniometer, series.goniometer);
        assert_eq!(back.series.user, series.user);
        assert_eq!(back.channels, ["threshold_1"]);
        let mut pixels = vec![0u8; 4 * 8 * 2];
        fill_ramp(&mut pixels, Dtype::U16, 11);
        let mut compressed = vec![0; crate::writers::bitshuffle::max_compressed_len(64, 2)];
        let len =
            crate::writers::bitshuffle::compress(&pixels, 2, &mut compressed, &mut Vec::new());
        let user = [("x".to_string(), UserValue::Float(2.5))];
        for data in [
            encode::Pixels::Plain(&pixels),
            encode::Pixels::BsLz4(&compressed[..len]),
        ] {
            let header = encode::ImageHeader {
                series_id: 9,
                series_unique_id: "u",
                image_id: 11,
                series_date: "2024-05-01T12:00:00.000000Z",
                start_ns: 1_500_000_000,
                stop_ns: None,
                real_ns: Some(1000),
                user: &user,
                channel: "threshold_1",
                ny: 4,
                nx: 8,
                dtype: Dtype::U16,
            };
            let mut message = Vec::new();
            encode::image(&header, data, &mut message);
            let image = image(&message);
            assert_eq!(image.image_id, 11);
            assert_eq!(image.start_time, Some((1_500_000_000, 1_000_000_000)));
            let mut out = vec![0; 64];
            image.data[0]
                .1
                .write_into(&mut out, &mut Vec::new())
                .unwrap();
            assert_eq!(out, pixels);
            assert_eq!(user_values(image.user_data.unwrap()), user);
        }
        let end = encode::end(9, "u");
        assert!(matches!(
            decode(&end),
            Ok(Message::End(End {
                series_id: Some(9),
                ..
            }))
        ));
    }

    proptest! {
        /// Hostile bytes: any input is a message or a refusal, never a panic; and so are
        /// golden messages with a byte changed.
        #[test]
        fn no_input_makes_the_decoder_panic(bytes in prop::collection::vec(any::<u8>(), 0..512),
                                            at in any::<usize>(), value in any::<u8>()) {
            let _ = decode(&bytes);
            let mut changed = golden("image_u16_be_bslz4.cbor");
            let i = at % changed.len();
            changed[i] = value;
            if let Ok(Message::Image(image)) = decode(&changed) {
                for (_, array) in image.data {
                    let mut out = vec![0; array.len().min(1 << 20)];
                    if out.len() == array.len() {
                        let _ = array.write_into(&mut out, &mut Vec::new());
                    }
                }
            }
        }
    }
}
