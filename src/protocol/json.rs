//! JSON encoding of record bytes into frames: escaped strings with fast paths, base64, and
//! `encoding=json`'s check that embedded JSON is strict.

use base64::Engine;

use super::consume::Encoding;

/// Whether any byte needs JSON escaping (`<0x20`, `"`, `\\`) or, with `ascii`, is not ASCII.
/// Branch-free over 32-byte blocks so the compiler vectorises it; this runs for every value.
fn special(bytes: &[u8], ascii: bool) -> bool {
    let hit = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\') | (ascii & (b >= 0x80));
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |acc, &b| acc | hit(b)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| hit(b))
}

fn write_quoted(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    buf.extend_from_slice(bytes);
    buf.push(b'"');
}

pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Hot path: most keys and values need no escaping and are copied as they are.
    if !special(s.as_bytes(), false) {
        write_quoted(buf, s.as_bytes());
        return;
    }
    // serde_json's string escaping matches JavaScript's JSON.stringify for valid UTF-8.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Decimal digits without going through `fmt` (this runs for every record).
pub(crate) fn write_int(buf: &mut Vec<u8>, v: i64) {
    let mut digits = [0u8; 20];
    buf.extend_from_slice(super::decimal(v, &mut digits));
}

/// Text encoding: valid UTF-8 as is (checked with the fast validator), otherwise lossily.
fn write_text(buf: &mut Vec<u8>, bytes: &[u8]) {
    // Plain ASCII needs neither UTF-8 validation nor escaping.
    if !special(bytes, true) {
        write_quoted(buf, bytes);
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => write_str(buf, s),
        Err(_) => write_str(buf, &String::from_utf8_lossy(bytes)),
    }
}

pub(crate) fn write_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>, enc: Encoding) {
    let Some(bytes) = bytes else {
        buf.extend_from_slice(b"null");
        return;
    };
    match enc {
        Encoding::Text => write_text(buf, bytes),
        Encoding::Json => {
            if embeddable_json(bytes) {
                // Strict JSON is embedded as-is, minus surrounding whitespace.
                buf.extend_from_slice(bytes.trim_ascii());
            } else {
                write_text(buf, bytes);
            }
        }
        Encoding::Base64 => {
            buf.push(b'"');
            let start = buf.len();
            let n = base64::encoded_len(bytes.len(), true).unwrap_or(0);
            buf.resize(start + n, 0);
            let _ =
                base64::engine::general_purpose::STANDARD.encode_slice(bytes, &mut buf[start..]);
            buf.push(b'"');
        }
    }
}

/// Deepest nesting of arrays and objects a value may have to be embedded by `encoding=json`.
/// The frame adds up to five levels around it, and strict parsers stop at 128 (serde_json).
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether `bytes` may be embedded verbatim in a frame: UTF-8 JSON that strict parsers accept.
/// `IgnoredAny` is not enough: it skips strings without checking their UTF-8 or their `\u`
/// escapes (a lone surrogate such as `"\ud800"` passes), skips numbers without checking their
/// range (`1e400`) and has no depth limit, and each of those makes the whole frame unparsable.
fn embeddable_json(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(Strict(MAX_JSON_DEPTH), &mut de).is_ok()
        && de.end().is_ok()
}

/// Walks a JSON value with `deserialize_any`, so serde_json validates every string (escapes
/// decoded, surrogates paired) and number (finite), allowing `.0` more levels of nesting.
/// Borrowed strings are visited without copying.
#[derive(Clone, Copy)]
struct Strict(usize);

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

impl Strict {
    fn deeper<E: serde::de::Error>(self) -> Result<Strict, E> {
        match self.0 {
            0 => Err(E::custom("nested too deeply")),
            n => Ok(Strict(n - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::consume::{BatchWriter, Format, RecordView};
    use proptest::prelude::*;

    /// Whether a JSON text holds a `\u` escape of a surrogate that is not part of a pair. Walks
    /// escapes properly, so `\\ud800` (an escaped backslash, then text) is not one.
    fn has_lone_surrogate_escape(json: &str) -> bool {
        let b = json.as_bytes();
        let hex = |i: usize| {
            b.get(i..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u16::from_str_radix(h, 16).ok())
        };
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'\\' {
                i += 1;
                continue;
            }
            if b.get(i + 1) != Some(&b'u') {
                i += 2;
                continue;
            }
            let Some(n) = hex(i + 2) else { return true };
            match n {
                0xD800..=0xDBFF => {
                    let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                        .then(|| hex(i + 8))
                        .flatten();
                    match low {
                        Some(0xDC00..=0xDFFF) => i += 12,
                        _ => return true,
                    }
                }
                0xDC00..=0xDFFF => return true,
                _ => i += 6,
            }
        }
        false
    }

    fn frame(format: Format, key: &[u8], value: &[u8], headers: &[(String, Vec<u8>)]) -> String {
        let hs: Vec<(&str, Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
            .collect();
        let r = RecordView {
            topic: "t",
            partition: 0,
            offset: 1,
            timestamp: None,
            key: Some(key),
            headers: &hs,
            value: Some(value),
        };
        let mut w = BatchWriter::new(format);
        w.push(1, &r);
        w.push(2, &r);
        w.finish()
    }

    fn assert_strict(f: &str) {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(f) {
            panic!("frame does not parse strictly ({e}): {f}");
        }
        assert!(!has_lone_surrogate_escape(f), "lone surrogate escape: {f}");
    }

    const FORMATS: [Format; 4] = [
        Format::Seed,
        Format::V1(Encoding::Text),
        Format::V1(Encoding::Json),
        Format::V1(Encoding::Base64),
    ];

    #[test]
    fn the_scanner_finds_lone_surrogates_only() {
        assert!(has_lone_surrogate_escape(r#""\ud800""#));
        assert!(has_lone_surrogate_escape(r#""\udc00\ud800""#));
        assert!(has_lone_surrogate_escape(r#""\ud800\u0041""#));
        assert!(!has_lone_surrogate_escape(r#""\ud83d\ude00""#));
        assert!(!has_lone_surrogate_escape(r#""\\ud800""#));
        assert!(!has_lone_surrogate_escape(r#""\u00e9 \n""#));
    }

    #[test]
    fn json_that_strict_parsers_refuse_is_sent_as_text() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        let cases: &[&[u8]] = &[
            br#""\ud800""#,
            br#"{"a":"\udfff"}"#,
            br#"["\ud800\u0041"]"#,
            br#"{"\ud800":1}"#,
            b"\"\xff\xfe\"",
            b"[\"ok\", \"\xc3\"]",
            b"{\"\xed\xa0\x80\":1}",
            b"1e400",
            b"[-1e999]",
            b"123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345",
            deep.as_bytes(),
        ];
        for bytes in cases {
            assert!(
                !embeddable_json(bytes),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            let f = frame(
                Format::V1(Encoding::Json),
                bytes,
                bytes,
                &[("h".into(), bytes.to_vec())],
            );
            assert_strict(&f);
            let v: serde_json::Value = serde_json::from_str(&f).unwrap();
            // Sent as the text form: a JSON string (lossy for invalid UTF-8).
            let text = String::from_utf8_lossy(bytes);
            assert_eq!(
                v["records"][0]["value"],
                serde_json::Value::from(text.as_ref())
            );
            assert_eq!(
                v["records"][0]["key"],
                serde_json::Value::from(text.as_ref())
            );
            assert_eq!(
                v["records"][0]["headers"][0]["value"],
                serde_json::Value::from(text.as_ref())
            );
        }
    }

    #[test]
    fn strict_json_is_still_embedded_verbatim() {
        let at_limit = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        let cases: &[&[u8]] = &[
            br#""\ud83d\ude00""#,
            br#"{"a": [1, 2.5e10, -0, true, null, "x\"y"]}"#,
            "\"é\"".as_bytes(),
            b"1e308",
            b"18446744073709551616",
            b" \t[1]\r\n",
            at_limit.as_bytes(),
        ];
        for bytes in cases {
            assert!(embeddable_json(bytes), "{}", String::from_utf8_lossy(bytes));
            let f = frame(Format::V1(Encoding::Json), b"k", bytes, &[]);
            assert_strict(&f);
            let raw = std::str::from_utf8(bytes.trim_ascii()).unwrap();
            assert!(f.contains(&format!("\"value\":{raw}}}")), "{f}");
        }
    }

    /// Fragments that make JSON-looking bytes likely: escapes, surrogates, numbers at the edge of
    /// f64, nesting, invalid UTF-8.
    fn jsonish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\"".to_vec()),
            Just(b"\\ud800".to_vec()),
            Just(b"\\udc00".to_vec()),
            Just(b"\\ud83d\\ude00".to_vec()),
            Just(b"\\u0041".to_vec()),
            Just(b"\\\\".to_vec()),
            Just(b"\\n".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b"{\"k\":".to_vec()),
            Just(b"}".to_vec()),
            Just(b",".to_vec()),
            Just(b"1e400".to_vec()),
            Just(b"-0.5e-400".to_vec()),
            Just(b"12".to_vec()),
            Just(b"null".to_vec()),
            Just(vec![0xff]),
            Just(vec![0xed, 0xa0, 0x80]),
            Just(vec![0xc3]),
            Just("é".as_bytes().to_vec()),
            Just(vec![0x01]),
            Just(b" ".to_vec()),
            "[a-z]{0,3}".prop_map(String::into_bytes),
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat()),
            // A string with one fragment inside: valid JSON syntax around the odd bit.
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(|v| {
                let mut s = b"[\"".to_vec();
                s.extend(v);
                s.extend_from_slice(b"\"]");
                s
            }),
            (1usize..140).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn any_bytes_make_a_strict_frame_in_every_format(
            key in jsonish(),
            value in jsonish(),
            headers in proptest::collection::vec((any::<String>(), jsonish()), 0..3),
        ) {
            for format in FORMATS {
                assert_strict(&frame(format, &key, &value, &headers));
            }
        }
    }

    #[test]
    fn string_and_integer_fast_paths_match_serde_json_and_display() {
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}x",
            "tab\t",
            "é ünï",
            "\u{7f}",
        ] {
            let mut b = Vec::new();
            write_str(&mut b, s);
            assert_eq!(b, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        // Longer than one 32-byte block, with the special byte in a later block.
        let long = "x".repeat(70);
        for s in [
            long.clone(),
            format!("{long}\"{long}"),
            format!("{long}é{long}"),
            format!("{}\n", "y".repeat(64)),
        ] {
            let mut b = Vec::new();
            write_text(&mut b, s.as_bytes());
            assert_eq!(b, serde_json::to_vec(&s).unwrap(), "{s:?}");
            let mut b = Vec::new();
            write_str(&mut b, &s);
            assert_eq!(b, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
        for v in [0, 7, -1, 10, i64::MIN, i64::MAX, 1_234_567_890] {
            let mut b = Vec::new();
            write_int(&mut b, v);
            assert_eq!(String::from_utf8(b).unwrap(), v.to_string());
        }
        let mut b = Vec::new();
        write_text(&mut b, b"ok\xff");
        assert_eq!(b, "\"ok\u{fffd}\"".as_bytes());
    }
}
