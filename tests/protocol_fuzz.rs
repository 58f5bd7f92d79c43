//! Randomised input for the pure wire protocol: nothing a client sends may panic the parsers.
//!
//! A cheap stand-in for a fuzzer that runs in every `cargo test`: seeded, so a failure reproduces.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_proxy::protocol::{consume, produce};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Fragments that steer random input towards the parsers' interesting paths.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "type",
    "ack",
    "batch",
    "topic",
    "partition",
    "offset",
    "value",
    "key",
    "headers",
    "id",
    "encoding",
    "base64",
    "json",
    "text",
    "null",
    "-1",
    "0",
    "18446744073709551616",
    "1e999",
    "\\u0000",
    "\u{fffd}",
    "é",
    " ",
    "true",
];

fn random_text(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..24);
    let mut s = String::new();
    for _ in 0..n {
        if rng.random_bool(0.8) {
            s.push_str(PIECES[rng.random_range(0..PIECES.len())]);
        } else {
            s.push(char::from(rng.random_range(0x20u8..0x7f)));
        }
    }
    s
}

fn random_query(rng: &mut StdRng) -> HashMap<String, String> {
    const KEYS: &[&str] = &[
        "topic",
        "group",
        "partition",
        "from",
        "offset",
        "timestamp",
        "commit",
        "encoding",
        "window",
        "key",
        "format",
        "consumerGroup",
        "x",
    ];
    let mut q = HashMap::new();
    for _ in 0..rng.random_range(0..6) {
        q.insert(
            KEYS[rng.random_range(0..KEYS.len())].to_string(),
            random_text(rng),
        );
    }
    q
}

#[test]
fn consume_parsers_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x6b61666b61);
    for _ in 0..20_000 {
        let _ = consume::parse_client_frame(&random_text(&mut rng));
        let q = random_query(&mut rng);
        let _ = consume::parse_v1(&q);
        let _ = consume::parse_seed(&q, None);
    }
}

#[test]
fn produce_decoder_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x70726f64);
    let mut decoded = 0;
    for _ in 0..5_000 {
        let mut q = random_query(&mut rng);
        let _ = produce::parse_http("t", &q);
        // Mostly valid parameters, so the frames below reach the decoder.
        q.insert("topic".into(), "t".into());
        q.remove("x");
        if rng.random_bool(0.7) {
            q.retain(|k, _| k == "topic");
        }
        let Ok(req) = produce::parse_ws(&q) else {
            continue;
        };
        decoded += 1;
        let mut d = produce::Decoder::new(&req);
        for _ in 0..8 {
            let text = random_text(&mut rng);
            let _ = d.text(Bytes::from(text.clone()));
            let mut raw = text.into_bytes();
            if rng.random_bool(0.3) {
                raw.push(rng.random());
            }
            let _ = d.binary(Bytes::from(raw.clone()));
            let _ = d.http_body(Bytes::from(raw), rng.random_bool(0.5));
        }
    }
    assert!(decoded > 3_000, "only {decoded} decoders exercised");
}
