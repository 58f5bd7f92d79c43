//! Property tests for every wire parser and encoder: no input panics, valid requests round-trip.
//!
//! Each parser gets three kinds of input: arbitrary strings or bytes; near-valid input (the right
//! names with wrong types, huge numbers, unicode, percent-encodings); and valid requests built by a
//! generator, which must parse to exactly what was generated. Everything refused is refused with
//! `bad_request`; the decoders answer every record exactly once, numbered consecutively; every
//! frame the encoders write parses as strict JSON and says what was put in.
//!
//! Case counts are small by default so `cargo test` stays quick; `PROPTEST_CASES=N` sets them all
//! (`make props-long` runs them for ten minutes and more; README "Testing"). A failing case is
//! printed with its seed and kept in `tests/protocol_props.proptest-regressions`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use base64::Engine;
use bytes::Bytes;
use kafka_proxy::protocol::consume::{
    self, Assignment, BatchWriter, ClientFrame, CommitMode, ConsumeRequest, Encoding, Format,
    RecordView, StartAt, MAX_PARTITIONS, MAX_TOPICS,
};
use kafka_proxy::protocol::produce::{
    self, Answers, Decoded, Decoder, FrameFormat, ProduceRequest, Record,
};
use kafka_proxy::protocol::{parse_query, sse, tail, validate_topic, ErrorCode, ProtocolError};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

/// `PROPTEST_CASES` when set (the long run), else `default` (sized for CI).
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // `cargo test` runs in the package root; the file is kept next to this one.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/protocol_props.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Many small decisions (spelling, order, whitespace) from one generated seed: the case stays
/// small to print and reproduces exactly.
struct Choices(u64);

impl Choices {
    fn new(seed: u64) -> Self {
        Choices(seed | 1)
    }

    /// A number in `0..n`.
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next(n) == 0
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.next(i as u64 + 1) as usize);
        }
    }

    /// Insignificant JSON whitespace.
    fn ws(&mut self) -> &'static str {
        ["", "", " ", "\n", "\t ", "\r\n  "][self.next(6) as usize]
    }

    /// `s` with spaces around it, for parameters the parsers trim.
    fn pad(&mut self, s: &str) -> String {
        let sp = ["", "", " ", "  "];
        format!(
            "{}{s}{}",
            sp[self.next(4) as usize],
            sp[self.next(4) as usize]
        )
    }

    /// A non-negative number as a client may spell it: leading zeros, spaces around.
    fn num(&mut self, n: impl std::fmt::Display) -> String {
        let zeros = ["", "", "0", "00"][self.next(4) as usize];
        self.pad(&format!("{zeros}{n}"))
    }
}

/// Every refusal of the pure parsers is a `bad_request` with a message (the documented code for
/// malformed input; `too_large` is the transport's, and `internal_error` is never right here).
fn assert_bad_request(e: &ProtocolError, input: &dyn std::fmt::Debug) {
    assert_eq!(e.code, ErrorCode::BadRequest, "{input:?}: {e}");
    assert!(!e.message.is_empty(), "{input:?}: empty message");
}

// ---------------------------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------------------------

/// Form-encodes `s` as some client might: each character literal where that is unambiguous or
/// percent-encoded (upper or lower hex), a space as `+` or `%20`.
fn form_encode(s: &str, in_name: bool, c: &mut Choices) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        let reserved = matches!(ch, '&' | '+' | '%') || (in_name && ch == '=');
        if ch == ' ' && c.one_in(2) {
            out.push('+');
        } else if !reserved && ch != ' ' && !c.one_in(3) {
            out.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                if c.one_in(2) {
                    let _ = write!(out, "%{b:02X}");
                } else {
                    let _ = write!(out, "%{b:02x}");
                }
            }
        }
    }
    out
}

/// A raw query string for `params` in a shuffled order, with empty pieces the parser skips.
fn to_query(params: &[(String, String)], c: &mut Choices) -> String {
    let mut pieces: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            let name = form_encode(k, true, c);
            if v.is_empty() && !k.is_empty() && c.one_in(2) {
                name
            } else {
                format!("{name}={}", form_encode(v, false, c))
            }
        })
        .collect();
    c.shuffle(&mut pieces);
    let mut out = String::new();
    if c.one_in(4) {
        out.push('&');
    }
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            out.push_str(if c.one_in(4) { "&&" } else { "&" });
        }
        out.push_str(p);
    }
    if c.one_in(4) {
        out.push('&');
    }
    out
}

/// The map a handler sees for `params`: through a raw query string and `parse_query`.
fn through_query(params: &[(String, String)], seed: u64) -> HashMap<String, String> {
    let raw = to_query(params, &mut Choices::new(seed));
    match parse_query(&raw) {
        Ok(q) => q,
        Err(e) => panic!("{raw:?} from {params:?}: {e}"),
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9 ,:+%&=._~-]{0,12}",
        "[%0-9a-fA-F+&=]{0,16}",
        "\\PC{0,8}",
    ]
}

/// Input near the query syntax: separators, escapes (valid, truncated, of invalid UTF-8), unicode.
fn query_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        select(vec![
            "&",
            "=",
            "+",
            "%",
            "%2",
            "%20",
            "%26",
            "%3D",
            "%3d",
            "%C3%A9",
            "%FF",
            "%ED%A0%80",
            "%zz",
            "topic",
            "group",
            "%74opic",
            "é",
            "\u{0}",
            " ",
        ])
        .prop_map(str::to_string),
        "[a-z0-9]{0,4}",
    ];
    prop_oneof![any::<String>(), vec(piece, 0..16).prop_map(|v| v.concat())]
}

proptest! {
    #![proptest_config(config(512))]

    /// Any map of distinct names, however encoded, parses back to exactly itself.
    #[test]
    fn query_round_trips(params in btree_map(text(), text(), 0..8), seed: u64) {
        let list: Vec<_> = params.clone().into_iter().collect();
        let raw = to_query(&list, &mut Choices::new(seed));
        let got = parse_query(&raw);
        prop_assert_eq!(got, Ok(params.into_iter().collect::<HashMap<_, _>>()), "{:?}", raw);
    }

    /// A name given twice, in any spelling and with any values, is refused and named.
    #[test]
    fn query_refuses_any_repeated_name(
        params in btree_map(text(), text(), 1..6),
        pick: prop::sample::Index,
        again in text(),
        seed: u64,
    ) {
        let mut list: Vec<_> = params.into_iter().collect();
        let name = list[pick.index(list.len())].0.clone();
        list.push((name.clone(), again));
        let raw = to_query(&list, &mut Choices::new(seed));
        let e = parse_query(&raw).unwrap_err();
        assert_bad_request(&e, &raw);
        prop_assert!(e.message.contains("more than once"), "{}", e.message);
        prop_assert!(e.message.contains(&format!("{name:?}")), "{} {:?}", e.message, name);
    }

    /// Any string: a map or `bad_request`; a map read back from its own encoding is the same map.
    #[test]
    fn query_never_panics_and_is_stable(raw in query_like(), seed: u64) {
        match parse_query(&raw) {
            Ok(q) => {
                let list: Vec<_> = q.clone().into_iter().collect();
                prop_assert_eq!(through_query(&list, seed), q);
            }
            Err(e) => assert_bad_request(&e, &raw),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Consume parameters: seed and v1
// ---------------------------------------------------------------------------------------------

fn valid_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9._-]{1,24}",
        1 => "[a-zA-Z0-9._-]{200,249}",
    ]
    .prop_filter("Kafka refuses . and ..", |t| t != "." && t != "..")
}

fn invalid_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(".".to_string()),
        Just("..".to_string()),
        "[a-z]{250,260}",
        "[a-z]{1,4}[ /#%:é\u{0}*][a-z]{1,4}",
    ]
}

/// A group name as the parser keeps it: trimmed, 1-255 bytes, no control characters.
fn valid_group() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9._ -]{1,30}", "[^\\p{Cc}]{1,40}", "g{255}"]
        .prop_map(|g| g.trim().to_string())
        .prop_filter("non-empty, at most 255 bytes", |g| {
            !g.is_empty() && g.len() <= 255
        })
}

fn p(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// What a valid request may be, as invariants that hold for every accepted request.
fn check_consume_invariants(r: &ConsumeRequest) {
    assert!(
        !r.topics.is_empty() && r.topics.len() <= MAX_TOPICS,
        "{r:?}"
    );
    for (i, t) in r.topics.iter().enumerate() {
        assert!(validate_topic(t).is_ok(), "{r:?}");
        assert!(!r.topics[..i].contains(t), "topic twice: {r:?}");
    }
    if let Some(g) = &r.group {
        assert!(!g.is_empty() && g.len() <= 255 && !g.chars().any(char::is_control));
        assert_eq!(g.trim(), g, "{r:?}");
    }
    match &r.assignment {
        Assignment::Group => assert!(r.group.is_some(), "{r:?}"),
        Assignment::Partitions(ps) => {
            assert_eq!(r.topics.len(), 1, "{r:?}");
            assert!(!ps.is_empty() && ps.len() <= MAX_PARTITIONS, "{r:?}");
            let distinct: BTreeSet<_> = ps.iter().collect();
            assert_eq!(distinct.len(), ps.len(), "partition twice: {r:?}");
            assert!(ps.iter().all(|p| *p >= 0), "{r:?}");
        }
    }
    match &r.start {
        StartAt::Committed => assert!(r.group.is_some(), "{r:?}"),
        StartAt::Offset(o) | StartAt::Timestamp(o) => assert!(*o >= 0, "{r:?}"),
        StartAt::Offsets(per) => {
            assert!(!per.is_empty() && per.len() <= MAX_PARTITIONS, "{r:?}");
            let distinct: BTreeSet<_> = per.iter().map(|(p, _)| p).collect();
            assert_eq!(
                distinct.len(),
                per.len(),
                "partition twice in offset: {r:?}"
            );
            assert!(per.iter().all(|(p, o)| *p >= 0 && *o >= 0), "{r:?}");
        }
        StartAt::Earliest | StartAt::Latest => {}
    }
    if r.commit != CommitMode::None {
        assert!(r.group.is_some(), "{r:?}");
    }
    assert!(r.window >= 1 && r.window <= consume::MAX_WINDOW, "{r:?}");
}

/// Values near what the parameters take: keywords, numbers at and past the type limits, lists,
/// lists with repeats or past the limits, unicode.
fn near_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec![
            "earliest", "latest", "committed", "auto", "ack", "none", "text", "json", "base64",
            "raw", "each", "batch", "hex", "", " ", "0", "1", "7", "-1", "+3", "007", " 5 ",
            "2147483647", "2147483648", "9223372036854775807", "9223372036854775808",
            "18446744073709551616", "1e3", "1.0", "0:5", "0:5,1:6", "0:5,0:6", "0:", ":5", "0:5,7",
            "a,b", "a,a", "a, b", "t", "t,u", "..", ".", "0,1,2", "0,0", "0,,1", "é", "\u{0}",
            "g\u{1}", "100000", "100001", "1000000", "1000001",
        ])
        .prop_map(str::to_string),
        2 => any::<String>(),
        2 => "[0-9:, +-]{0,12}",
        2 => "[a-z.,_ -]{0,12}",
        1 => (1usize..1100).prop_map(|n| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")),
        1 => (1usize..120).prop_map(|n| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",")),
    ]
}

fn near_query(keys: &'static [&'static str]) -> impl Strategy<Value = HashMap<String, String>> {
    btree_map(
        prop_oneof![8 => select(keys), 1 => Just("bogus"), 1 => Just("")].prop_map(str::to_string),
        near_value(),
        0..7,
    )
    .prop_map(|m| m.into_iter().collect())
}

const SEED_KEYS: &[&str] = &["topic", "consumerGroup", "partition", "offset", "group"];
const V1_KEYS: &[&str] = &[
    "topic",
    "group",
    "partition",
    "from",
    "offset",
    "timestamp",
    "commit",
    "encoding",
    "window",
];

proptest! {
    #![proptest_config(config(512))]

    /// A valid seed request, however spelled in the query string, parses to what it says.
    #[test]
    fn seed_round_trips(
        topic in valid_topic(),
        group in valid_group(),
        partition in option::of(0..=i32::MAX),
        offset in option::of(0..=i64::MAX),
        default_partition in option::of(0..=i32::MAX),
        seed: u64,
    ) {
        let mut c = Choices::new(seed);
        let mut params = vec![p("topic", c.pad(&topic)), p("consumerGroup", c.pad(&group))];
        if let Some(n) = partition {
            params.push(p("partition", c.num(n)));
        }
        if let Some(n) = offset {
            params.push(p("offset", c.num(n)));
        }
        let q = through_query(&params, seed);
        let want = ConsumeRequest {
            topics: vec![topic],
            group: Some(group),
            assignment: match partition.or(default_partition) {
                Some(p) => Assignment::Partitions(vec![p]),
                None => Assignment::Group,
            },
            start: offset.map_or(StartAt::Committed, StartAt::Offset),
            commit: CommitMode::Auto,
            format: Format::Seed,
            window: consume::DEFAULT_WINDOW,
        };
        prop_assert_eq!(consume::parse_seed(&q, default_partition), Ok(want));
    }

    /// A seed request with one field broken is refused with `bad_request`.
    #[test]
    fn seed_refuses_each_broken_field(
        topic in valid_topic(),
        group in valid_group(),
        bad_topic in invalid_topic(),
        which in 0u8..10,
        seed: u64,
    ) {
        let mut q: BTreeMap<String, String> =
            [p("topic", topic), p("consumerGroup", group), p("offset", "3")].into();
        match which {
            0 => { q.remove("topic"); }
            1 => { q.insert("topic".into(), bad_topic); }
            2 => { q.insert("consumerGroup".into(), "  ".into()); }
            3 => { q.insert("consumerGroup".into(), "g\u{7}".into()); }
            4 => { q.insert("consumerGroup".into(), "g".repeat(256)); }
            5 => { q.insert("partition".into(), "-1".into()); }
            6 => { q.insert("partition".into(), "2147483648".into()); }
            7 => { q.insert("offset".into(), "-1".into()); }
            8 => { q.insert("offset".into(), "9223372036854775808".into()); }
            _ => { q.insert(["partition", "offset"][(seed % 2) as usize].into(), "1.0".into()); }
        }
        let list: Vec<_> = q.into_iter().collect();
        let q = through_query(&list, seed);
        let e = consume::parse_seed(&q, None).unwrap_err();
        assert_bad_request(&e, &list);
    }

    /// Any parameters: `bad_request`, or a request that keeps every documented invariant.
    #[test]
    fn seed_never_panics(q in near_query(SEED_KEYS), default_partition in option::of(any::<i32>())) {
        match consume::parse_seed(&q, default_partition.filter(|p| *p >= 0)) {
            Ok(r) => {
                check_consume_invariants(&r);
                prop_assert_eq!(r.topics.len(), 1);
                prop_assert!(r.group.is_some());
                prop_assert_eq!(r.format, Format::Seed);
            }
            Err(e) => assert_bad_request(&e, &q),
        }
    }
}

/// A generated valid `/v1/consume` request: its parameters and what they mean.
#[derive(Debug, Clone)]
struct V1Case {
    params: Vec<(String, String)>,
    want: ConsumeRequest,
}

#[allow(clippy::too_many_arguments)]
fn build_v1(
    topics: BTreeSet<String>,
    group: Option<String>,
    parts: Option<BTreeSet<i32>>,
    start: u8,
    n: i64,
    per: BTreeMap<i32, i64>,
    commit: Option<u8>,
    encoding: Option<u8>,
    window: Option<usize>,
    seed: u64,
) -> V1Case {
    let mut c = Choices::new(seed);
    let mut topics: Vec<String> = topics.into_iter().collect();
    c.shuffle(&mut topics);
    let mut parts: Option<Vec<i32>> = parts.map(|s| {
        let mut v: Vec<i32> = s.into_iter().collect();
        c.shuffle(&mut v);
        v
    });
    // Without a group the request must name partitions; partitions take a single topic.
    if group.is_none() && parts.is_none() {
        parts = Some(vec![c.next(4) as i32]);
    }
    if parts.is_some() {
        topics.truncate(1);
    }
    let mut params = Vec::new();
    let list: Vec<String> = topics.iter().map(|t| c.pad(t)).collect();
    params.push(p("topic", list.join(",")));
    match &group {
        Some(g) => params.push(p("group", c.pad(g))),
        // A blank group is no group.
        None if c.one_in(3) => params.push(p("group", c.pad(""))),
        None => {}
    }
    if let Some(ps) = &parts {
        let list: Vec<String> = ps.iter().map(|n| c.num(n)).collect();
        params.push(p("partition", list.join(",")));
    }
    // Without a group there is nothing committed to start from.
    let start = if group.is_none() && matches!(start, 0 | 3) {
        1
    } else {
        start
    };
    let start = match start {
        0 => StartAt::Committed,
        1 => {
            params.push(p("from", "earliest"));
            StartAt::Earliest
        }
        2 => {
            params.push(p("from", "latest"));
            StartAt::Latest
        }
        3 => {
            params.push(p("from", "committed"));
            StartAt::Committed
        }
        4 => {
            params.push(p("offset", c.num(n)));
            StartAt::Offset(n)
        }
        5 => {
            let mut pairs: Vec<(i32, i64)> = per.into_iter().collect();
            c.shuffle(&mut pairs);
            let text: Vec<String> = pairs
                .iter()
                .map(|(pt, o)| format!("{}:{}", c.num(pt), c.num(o)))
                .collect();
            params.push(p("offset", text.join(",")));
            StartAt::Offsets(pairs)
        }
        _ => {
            params.push(p("timestamp", c.num(n)));
            StartAt::Timestamp(n)
        }
    };
    let commit = match (commit, group.is_some()) {
        (Some(0), true) => {
            params.push(p("commit", "auto"));
            CommitMode::Auto
        }
        (Some(1), true) => {
            params.push(p("commit", "ack"));
            CommitMode::Ack
        }
        (Some(_), _) => {
            params.push(p("commit", "none"));
            CommitMode::None
        }
        (None, true) => CommitMode::Auto,
        (None, false) => CommitMode::None,
    };
    let encoding = match encoding {
        None => Encoding::Text,
        Some(i) => {
            let (name, e) = [
                ("text", Encoding::Text),
                ("json", Encoding::Json),
                ("base64", Encoding::Base64),
            ][usize::from(i)];
            params.push(p("encoding", name));
            e
        }
    };
    if let Some(w) = window {
        params.push(p("window", c.num(w)));
    }
    V1Case {
        params,
        want: ConsumeRequest {
            topics,
            group,
            assignment: parts.map_or(Assignment::Group, Assignment::Partitions),
            start,
            commit,
            format: Format::V1(encoding),
            window: window.unwrap_or(consume::DEFAULT_WINDOW),
        },
    }
}

fn v1_case() -> impl Strategy<Value = V1Case> {
    (
        (
            btree_set(valid_topic(), 1..5),
            option::of(valid_group()),
            option::of(btree_set(0..=i32::MAX, 1..6)),
            0u8..7,
            0..=i64::MAX,
        ),
        (
            btree_map(0..=i32::MAX, 0..=i64::MAX, 1..6),
            option::of(0u8..3),
            option::of(0u8..3),
            option::of(1..=consume::MAX_WINDOW),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((topics, group, parts, start, n), (per, commit, enc, window, seed))| {
                build_v1(
                    topics, group, parts, start, n, per, commit, enc, window, seed,
                )
            },
        )
}

/// One way to break a valid `/v1/consume` request, whatever else it says.
fn break_v1(which: u8, q: &mut BTreeMap<String, String>, bad_topic: String) {
    fn put(q: &mut BTreeMap<String, String>, k: &str, v: &str) {
        q.insert(k.to_string(), v.to_string());
    }
    let mut set = |k: &str, v: &str| put(q, k, v);
    match which {
        0 => set("bogus", "1"),
        1 => set("topic", "a,b,a"),
        2 => set(
            "topic",
            &(0..=MAX_TOPICS)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        3 => set("topic", &format!("ok,{bad_topic}")),
        4 => set("partition", "1,1"),
        5 => set(
            "partition",
            &(0..=MAX_PARTITIONS as i32)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        6 => {
            set("topic", "a,b");
            set("partition", "0");
        }
        7 => set("partition", "-1"),
        8 => set("partition", "2147483648"),
        9 => {
            set("from", "earliest");
            set("timestamp", "5");
        }
        10 => set("from", "soon"),
        11 => set("commit", "maybe"),
        12 => {
            q.remove("group");
            q.insert("partition".into(), "0".into());
            q.insert("commit".into(), "ack".into());
        }
        13 => {
            q.remove("group");
            q.remove("partition");
        }
        14 => {
            for k in ["group", "from", "offset", "timestamp"] {
                q.remove(k);
            }
            q.insert("partition".into(), "0".into());
        }
        15 => set("encoding", "hex"),
        16 => set("window", "0"),
        17 => set("window", "1000001"),
        18 => set("offset", "0:5,7"),
        19 => set("offset", "3:5,1:1,3:6"),
        20 => set("offset", "-1"),
        21 => set("offset", "9223372036854775808"),
        22 => set("timestamp", "-5"),
        23 => set("group", "a\u{1}b"),
        24 => set("group", &"g".repeat(256)),
        _ => set(
            "offset",
            &(0..=MAX_PARTITIONS)
                .map(|i| format!("{i}:0"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// Found by `v1_refuses_each_broken_rule`: `offset=P:N,P:M` was accepted and the second offset
/// silently ignored, though docs/PROTOCOL.md refuses a partition named twice.
#[test]
fn v1_refuses_an_offset_list_naming_a_partition_twice() {
    for offset in ["3:5,1:1,3:6", "0:1,0:1", " 2 :1, 2:9"] {
        let q = through_query(&[p("topic", "t"), p("group", "g"), p("offset", offset)], 7);
        let e = consume::parse_v1(&q).unwrap_err();
        assert_bad_request(&e, &offset);
        assert!(e.message.contains("twice"), "{offset}: {}", e.message);
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// A valid `/v1/consume` request, however spelled, parses to exactly what it says.
    #[test]
    fn v1_round_trips(case in v1_case(), seed: u64) {
        let q = through_query(&case.params, seed);
        prop_assert_eq!(consume::parse_v1(&q), Ok(case.want));
    }

    /// A valid request with one thing broken is refused with `bad_request`.
    #[test]
    fn v1_refuses_each_broken_rule(
        case in v1_case(),
        which in 0u8..26,
        bad_topic in invalid_topic(),
        seed: u64,
    ) {
        let mut q: BTreeMap<String, String> = case.params.into_iter().collect();
        break_v1(which, &mut q, bad_topic);
        let list: Vec<_> = q.into_iter().collect();
        let q = through_query(&list, seed);
        match consume::parse_v1(&q) {
            Ok(r) => prop_assert!(false, "accepted {:?} as {:?}", list, r),
            Err(e) => assert_bad_request(&e, &list),
        }
    }

    /// Any parameters: `bad_request`, or a request that keeps every documented invariant.
    #[test]
    fn v1_never_panics(q in near_query(V1_KEYS)) {
        match consume::parse_v1(&q) {
            Ok(r) => check_consume_invariants(&r),
            Err(e) => assert_bad_request(&e, &q),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Consume control frames
// ---------------------------------------------------------------------------------------------

/// A JSON value as written in a frame, with what a strict reader makes of it.
#[derive(Debug, Clone)]
enum Jv {
    Null,
    Bool(bool),
    Int(i128),
    /// A number with a fraction or exponent: never an integer to serde.
    Float(&'static str),
    /// A number past any float (`1e999`): the whole frame is invalid JSON.
    OutOfRange,
    Str(String),
    Array,
    Object,
}

impl Jv {
    fn text(&self) -> String {
        match self {
            Jv::Null => "null".into(),
            Jv::Bool(b) => b.to_string(),
            Jv::Int(n) => n.to_string(),
            Jv::Float(f) => f.to_string(),
            Jv::OutOfRange => "1e999".into(),
            Jv::Str(s) => serde_json::to_string(s).unwrap(),
            Jv::Array => "[1,\"a\"]".into(),
            Jv::Object => "{\"a\":1}".into(),
        }
    }

    /// Absent when null, the number when it fits `T`, else an error (`Err(())`).
    fn int<T: TryFrom<i128>>(&self) -> Result<Option<T>, ()> {
        match self {
            Jv::Null => Ok(None),
            Jv::Int(n) => T::try_from(*n).map(Some).map_err(|_| ()),
            _ => Err(()),
        }
    }

    fn string(&self) -> Result<Option<String>, ()> {
        match self {
            Jv::Null => Ok(None),
            Jv::Str(s) => Ok(Some(s.clone())),
            _ => Err(()),
        }
    }
}

fn jv() -> impl Strategy<Value = Jv> {
    let ints = prop_oneof![
        0i128..10,
        -3i128..0,
        select(vec![
            i128::from(i32::MAX),
            i128::from(i32::MAX) + 1,
            i128::from(i32::MIN),
            i128::from(i64::MAX),
            i128::from(i64::MAX) + 1,
            i128::from(i64::MIN),
            i128::from(i64::MIN) - 1,
            i128::from(u64::MAX),
            i128::from(u64::MAX) + 1,
            10i128.pow(30),
        ]),
        any::<i64>().prop_map(i128::from),
    ];
    prop_oneof![
        1 => Just(Jv::Null),
        1 => any::<bool>().prop_map(Jv::Bool),
        6 => ints.prop_map(Jv::Int),
        1 => select(vec!["1.0", "1.5", "-0.0", "1e2", "2.5E-3", "1e300"]).prop_map(Jv::Float),
        1 => Just(Jv::OutOfRange),
        4 => prop_oneof![
            3 => Just("ack".to_string()),
            1 => select(vec!["t", "Ack", "ack ", "records", "", "é\"\\\n"]).prop_map(str::to_string),
            1 => any::<String>(),
        ]
        .prop_map(Jv::Str),
        1 => Just(Jv::Array),
        1 => Just(Jv::Object),
    ]
}

/// A control frame object: fields (possibly repeated or unknown) with values of any type.
fn control_fields() -> impl Strategy<Value = Vec<(&'static str, Jv)>> {
    let name = select(vec![
        "type",
        "type",
        "type",
        "batch",
        "batch",
        "topic",
        "topic",
        "partition",
        "partition",
        "offset",
        "offset",
        "extra",
        "Type",
    ]);
    vec((name, jv()), 0..6)
}

/// What docs/PROTOCOL.md says a control frame means; `Err(())` for anything it does not allow.
fn control_model(fields: &[(&str, Jv)]) -> Result<ClientFrame, ()> {
    let names: BTreeSet<&str> = fields.iter().map(|(k, _)| *k).collect();
    if names.len() != fields.len()
        || fields.iter().any(|(_, v)| matches!(v, Jv::OutOfRange))
        || !names.is_subset(&["type", "batch", "topic", "partition", "offset"].into())
    {
        return Err(());
    }
    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
    match get("type") {
        Some(Jv::Str(t)) if t == "ack" => {}
        _ => return Err(()),
    }
    let batch = get("batch").map_or(Ok(None), Jv::int::<u64>)?;
    let topic = get("topic").map_or(Ok(None), Jv::string)?;
    let partition = get("partition").map_or(Ok(None), Jv::int::<i32>)?;
    let offset = get("offset").map_or(Ok(None), Jv::int::<i64>)?;
    match (batch, topic, partition, offset) {
        (Some(b), None, None, None) => Ok(ClientFrame::AckBatch(b)),
        (None, Some(topic), Some(partition), Some(offset)) if partition >= 0 && offset >= 0 => {
            Ok(ClientFrame::AckOffset {
                topic,
                partition,
                offset,
            })
        }
        _ => Err(()),
    }
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        any::<u64>().prop_map(ClientFrame::AckBatch),
        (any::<String>(), 0..=i32::MAX, 0..=i64::MAX).prop_map(|(topic, partition, offset)| {
            ClientFrame::AckOffset {
                topic,
                partition,
                offset,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    /// Every ack a client may send, in any field order and spacing, parses to itself.
    #[test]
    fn control_frames_round_trip(frame in client_frame(), seed: u64) {
        let mut c = Choices::new(seed);
        let mut fields = vec![("type", "\"ack\"".to_string())];
        match &frame {
            ClientFrame::AckBatch(b) => fields.push(("batch", b.to_string())),
            ClientFrame::AckOffset { topic, partition, offset } => {
                fields.push(("topic", serde_json::to_string(topic).unwrap()));
                fields.push(("partition", partition.to_string()));
                fields.push(("offset", offset.to_string()));
            }
        }
        c.shuffle(&mut fields);
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}\"{k}\"{}:{}{v}{}", c.ws(), c.ws(), c.ws(), c.ws()))
            .collect();
        let text = format!("{}{{{}}}{}", c.ws(), body.join(","), c.ws());
        prop_assert_eq!(consume::parse_client_frame(&text), Ok(frame));
    }

    /// Objects with the right names and values of every type, at and past the integer limits:
    /// the parser accepts exactly what the documented model accepts, with the same meaning.
    #[test]
    fn control_frames_match_the_model(fields in control_fields(), seed: u64) {
        let mut c = Choices::new(seed);
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}\"{k}\":{}{}", c.ws(), c.ws(), v.text()))
            .collect();
        let text = format!("{{{}}}", body.join(","));
        match (consume::parse_client_frame(&text), control_model(&fields)) {
            (Ok(got), Ok(want)) => prop_assert_eq!(got, want, "{}", text),
            (Err(e), Err(())) => assert_bad_request(&e, &text),
            (got, want) => prop_assert!(false, "{}: parser {:?}, model {:?}", text, got, want),
        }
    }

    /// Any text: a frame or `bad_request`, never a panic.
    #[test]
    fn control_frames_never_panic(text in prop_oneof![any::<String>(), json_like()]) {
        if let Err(e) = consume::parse_client_frame(&text) {
            assert_bad_request(&e, &text);
        }
    }
}

/// Text made of JSON fragments, the names the parsers look for, odd numbers and unicode.
fn json_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        select(vec![
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "\"type\"",
            "\"ack\"",
            "\"batch\"",
            "\"topic\"",
            "\"partition\"",
            "\"offset\"",
            "\"value\"",
            "\"key\"",
            "\"headers\"",
            "\"id\"",
            "\"encoding\"",
            "\"base64\"",
            "\"json\"",
            "\"text\"",
            "null",
            "-1",
            "0",
            "1.5",
            "18446744073709551616",
            "1e999",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\u{fffd}",
            "é",
            " ",
            "true",
            "\"AP8=\"",
            "\"%%\"",
        ])
        .prop_map(str::to_string),
        "[a-z0-9]{0,3}",
    ];
    vec(piece, 0..24).prop_map(|v| v.concat())
}

// ---------------------------------------------------------------------------------------------
// Tail and produce parameters
// ---------------------------------------------------------------------------------------------

fn encoding() -> impl Strategy<Value = Encoding> {
    select(vec![Encoding::Text, Encoding::Json, Encoding::Base64])
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Text => "text",
        Encoding::Json => "json",
        Encoding::Base64 => "base64",
    }
}

fn format_name(f: FrameFormat) -> &'static str {
    match f {
        FrameFormat::Auto => "auto",
        FrameFormat::Raw => "raw",
        FrameFormat::Json => "json",
    }
}

const TAIL_KEYS: &[&str] = &["topic", "encoding"];
const PRODUCE_KEYS: &[&str] = &[
    "topic",
    "key",
    "partition",
    "encoding",
    "format",
    "answers",
    "window",
];

fn check_produce_invariants(r: &ProduceRequest) {
    assert!(validate_topic(&r.topic).is_ok(), "{r:?}");
    assert!(r.partition.is_none_or(|p| p >= 0), "{r:?}");
    assert!(r.window >= 1 && r.window <= produce::MAX_WINDOW, "{r:?}");
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn tail_round_trips(topic in valid_topic(), enc in option::of(encoding()), seed: u64) {
        let mut c = Choices::new(seed);
        let mut params = vec![p("topic", c.pad(&topic))];
        if let Some(e) = enc {
            params.push(p("encoding", encoding_name(e)));
        }
        let q = through_query(&params, seed);
        prop_assert_eq!(tail::parse_tail(&q), Ok((topic, enc.unwrap_or(Encoding::Text))));
    }

    #[test]
    fn tail_never_panics(q in near_query(TAIL_KEYS)) {
        match tail::parse_tail(&q) {
            Ok((topic, _)) => {
                prop_assert!(validate_topic(&topic).is_ok());
                prop_assert!(q.keys().all(|k| TAIL_KEYS.contains(&k.as_str())));
            }
            Err(e) => assert_bad_request(&e, &q),
        }
    }

    /// A valid produce socket request, however spelled, parses to exactly what it says.
    #[test]
    fn produce_ws_round_trips(
        topic in valid_topic(),
        key in option::of(text()),
        partition in option::of(0..=i32::MAX),
        enc in option::of(encoding()),
        format in option::of(select(vec![FrameFormat::Auto, FrameFormat::Raw, FrameFormat::Json])),
        answers in option::of(select(vec![Answers::Each, Answers::Batch])),
        window in option::of(1..=produce::MAX_WINDOW),
        seed: u64,
    ) {
        let mut c = Choices::new(seed);
        let mut params = vec![p("topic", c.pad(&topic))];
        if let Some(k) = &key {
            params.push(p("key", k.clone()));
        }
        if let Some(n) = partition {
            params.push(p("partition", c.num(n)));
        }
        if let Some(e) = enc {
            params.push(p("encoding", encoding_name(e)));
        }
        if let Some(f) = format {
            params.push(p("format", format_name(f)));
        }
        if let Some(a) = answers {
            params.push(p("answers", if a == Answers::Each { "each" } else { "batch" }));
        }
        if let Some(w) = window {
            params.push(p("window", c.num(w)));
        }
        let q = through_query(&params, seed);
        let want = ProduceRequest {
            topic: topic.clone(),
            key: key.clone().map(Bytes::from),
            partition,
            encoding: enc.unwrap_or(Encoding::Text),
            format: format.unwrap_or(FrameFormat::Auto),
            answers: answers.unwrap_or(Answers::Each),
            window: window.unwrap_or(produce::DEFAULT_WINDOW),
        };
        prop_assert_eq!(produce::parse_ws(&q), Ok(want.clone()));
        // The HTTP endpoint takes the topic from its path and the shared parameters.
        let shared: Vec<_> = params
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "topic" | "answers" | "window"))
            .collect();
        let q = through_query(&shared, seed);
        let want = ProduceRequest { answers: Answers::Each, window: produce::DEFAULT_WINDOW, ..want };
        prop_assert_eq!(produce::parse_http(&topic, &q), Ok(want));
    }

    /// One broken parameter is refused with `bad_request` by both endpoints that take it.
    #[test]
    fn produce_refuses_each_broken_parameter(
        bad_topic in invalid_topic(),
        which in 0u8..12,
        seed: u64,
    ) {
        let (k, v) = match which {
            0 => ("topic", bad_topic.as_str()),
            1 => ("topic", " "),
            2 => ("partition", "-1"),
            3 => ("partition", "2147483648"),
            4 => ("partition", "x"),
            5 => ("encoding", "hex"),
            6 => ("format", "xml"),
            7 => ("answers", "all"),
            8 => ("window", "0"),
            9 => ("window", "100001"),
            10 => ("window", "1.5"),
            _ => ("grup", "g"),
        };
        let mut params = vec![p("topic", "t")];
        params.retain(|(name, _)| name != k);
        params.push(p(k, v));
        let q = through_query(&params, seed);
        assert_bad_request(&produce::parse_ws(&q).unwrap_err(), &params);
        if k == "topic" {
            assert_bad_request(&produce::parse_http(v, &HashMap::new()).unwrap_err(), &v);
        } else {
            // `topic`, `answers` and `window` are the socket's only: refused as unknown.
            let shared: HashMap<_, _> = q.into_iter().filter(|(k, _)| k != "topic").collect();
            assert_bad_request(&produce::parse_http("t", &shared).unwrap_err(), &shared);
        }
    }

    #[test]
    fn produce_params_never_panic(q in near_query(PRODUCE_KEYS), path_topic in prop_oneof![valid_topic(), any::<String>()]) {
        match produce::parse_ws(&q) {
            Ok(r) => check_produce_invariants(&r),
            Err(e) => assert_bad_request(&e, &q),
        }
        match produce::parse_http(&path_topic, &q) {
            Ok(r) => {
                check_produce_invariants(&r);
                prop_assert_eq!(r.topic, path_topic);
            }
            Err(e) => assert_bad_request(&e, &q),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The produce decoder
// ---------------------------------------------------------------------------------------------

/// The material of a key, value or header value; rendered for whatever encoding applies.
#[derive(Debug, Clone)]
struct Payload {
    text: String,
    bytes: Vec<u8>,
    /// With `encoding=json`: a JSON document (not a string, not null) instead of `text`.
    doc: Option<Value>,
    padded: bool,
}

impl Payload {
    /// The JSON text a client writes, and the bytes the record must then carry.
    fn render(&self, enc: Encoding) -> (String, Vec<u8>) {
        match (enc, &self.doc) {
            (Encoding::Base64, _) => {
                let mut b64 = base64::engine::general_purpose::STANDARD.encode(&self.bytes);
                if !self.padded {
                    b64 = b64.trim_end_matches('=').to_string();
                }
                (serde_json::to_string(&b64).unwrap(), self.bytes.clone())
            }
            // A JSON document is stored as its compact text, however it was spaced.
            (Encoding::Json, Some(doc)) => (
                serde_json::to_string_pretty(doc).unwrap(),
                doc.to_string().into_bytes(),
            ),
            _ => (
                serde_json::to_string(&self.text).unwrap(),
                self.text.clone().into_bytes(),
            ),
        }
    }
}

/// A finite double that reads back as itself from its JSON text (serde_json's default float parser
/// is not exact for every double; that is its documented trade-off, not the proxy's).
fn exact_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite and reads back", |f| {
        f.is_finite()
            && serde_json::from_str::<f64>(&serde_json::to_string(f).unwrap()).ok() == Some(*f)
    })
}

fn json_doc() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        exact_f64().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    let tree = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    tree.prop_filter("a document, not a string or null", |v| {
        !matches!(v, Value::Null | Value::String(_))
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    (
        prop_oneof![3 => "[a-z0-9 ]{0,8}", 1 => any::<String>()],
        vec(any::<u8>(), 0..24),
        option::weighted(0.3, json_doc()),
        any::<bool>(),
    )
        .prop_map(|(text, bytes, doc, padded)| Payload {
            text,
            bytes,
            doc,
            padded,
        })
}

/// Absent, `null`, or given.
#[derive(Debug, Clone)]
enum Field<T> {
    Absent,
    Null,
    Set(T),
}

fn field<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Field<T>> {
    prop_oneof![
        2 => Just(Field::Absent),
        1 => Just(Field::Null),
        3 => s.prop_map(Field::Set),
    ]
}

#[derive(Debug, Clone)]
enum Headers {
    /// `[{"key":K,"value":V}, ...]`: order and repeats kept; an absent value is null.
    List(Vec<(String, Field<Payload>)>),
    /// `{"K": V, ...}`.
    Map(BTreeMap<String, Option<Payload>>),
}

/// A JSON record a client may send, every field valid.
#[derive(Debug, Clone)]
struct RecordSpec {
    id: Field<Value>,
    encoding: Field<Encoding>,
    key: Field<Payload>,
    value: Option<Payload>,
    headers: Field<Headers>,
    partition: Field<i32>,
    timestamp: Field<i64>,
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    let id = prop_oneof![
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        exact_f64().prop_map(Value::from),
    ];
    let headers = prop_oneof![
        vec(("[a-z]{0,3}", field(payload())), 0..4).prop_map(Headers::List),
        btree_map(any::<String>(), option::of(payload()), 0..4).prop_map(Headers::Map),
    ];
    (
        field(id),
        field(encoding()),
        field(payload()),
        option::weighted(0.9, payload()),
        prop_oneof![3 => Just(Field::Absent), 1 => field(headers)],
        field(0..=i32::MAX),
        field(0..=i64::MAX),
    )
        .prop_map(
            |(id, encoding, key, value, headers, partition, timestamp)| RecordSpec {
                id,
                encoding,
                key,
                value,
                headers,
                partition,
                timestamp,
            },
        )
}

/// A produce request for the decoder tests (formats that read JSON).
fn decoder_request() -> impl Strategy<Value = ProduceRequest> {
    (
        option::of("[a-z]{0,4}"),
        option::of(0..=i32::MAX),
        encoding(),
        select(vec![FrameFormat::Auto, FrameFormat::Json]),
    )
        .prop_map(|(key, partition, encoding, format)| ProduceRequest {
            topic: "t".into(),
            key: key.map(Bytes::from),
            partition,
            encoding,
            format,
            answers: Answers::Each,
            window: produce::DEFAULT_WINDOW,
        })
}

/// One way to make a single field of a record invalid (docs/PROTOCOL.md "Errors in answers").
/// Returns the encoding the record must then name (if any) and edits its fields.
fn break_record(which: u8, fields: &mut Vec<(String, String)>) -> Option<Encoding> {
    fn put(fields: &mut Vec<(String, String)>, k: &str, v: &str) {
        fields.retain(|(n, _)| n != k);
        fields.push((k.to_string(), v.to_string()));
    }
    // Which wrong type a case uses varies with the record.
    let n = fields.len();
    let mut set = |k: &str, v: &str| put(fields, k, v);
    match which {
        0 => set("valeu", "1"),
        1 => fields.retain(|(n, _)| n != "value"),
        2 => set("encoding", "\"hex\""),
        3 => set("encoding", "5"),
        4 => {
            set("value", "\"%%%\"");
            return Some(Encoding::Base64);
        }
        5 => {
            set("value", ["5", "true", "[1]", "{\"a\":1}"][n % 4]);
            return Some(Encoding::Text);
        }
        6 => {
            set("value", "5");
            return Some(Encoding::Base64);
        }
        7 => {
            set("key", "{\"k\":1}");
            return Some(Encoding::Text);
        }
        8 => set("partition", "-1"),
        9 => set("partition", "2147483648"),
        10 => set("partition", "1.0"),
        11 => set("partition", "\"1\""),
        12 => set("timestamp", "-5"),
        13 => set("timestamp", "1.5"),
        14 => set("timestamp", "\"now\""),
        15 => set("timestamp", "9223372036854775808"),
        16 => set("id", ["{}", "[]", "true"][n % 3]),
        17 => set("headers", ["\"h\"", "5", "true"][n % 3]),
        18 => set("headers", "[5]"),
        19 => set("headers", "[{\"value\":\"x\"}]"),
        20 => set("headers", "[{\"key\":1,\"value\":\"x\"}]"),
        21 => set("headers", "[{\"key\":\"h\",\"value\":\"x\",\"extra\":1}]"),
        _ => {
            set("headers", "{\"h\":5}");
            return Some(Encoding::Text);
        }
    }
    None
}

/// Renders `spec` as a JSON object in a shuffled field order and what the decoder must make of
/// it; `broken` makes one field invalid (then only the id and sequence number are checked).
fn render_record(
    spec: &RecordSpec,
    req: &ProduceRequest,
    broken: Option<u8>,
    seq: u64,
    c: &mut Choices,
) -> (String, Decoded) {
    // A broken record may have to name an encoding; render everything for it.
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut forced = None;
    if let Some(which) = broken {
        let mut probe = Vec::new();
        forced = break_record(which, &mut probe);
    }
    let enc = match (forced, &spec.encoding) {
        (Some(e), _) => e,
        (None, Field::Set(e)) => *e,
        _ => req.encoding,
    };
    let put = |fields: &mut Vec<(String, String)>, k: &str, v: String| {
        fields.push((k.to_string(), v));
    };
    let id = match &spec.id {
        Field::Absent => None,
        Field::Null => {
            put(&mut fields, "id", "null".into());
            None
        }
        Field::Set(v) => {
            put(&mut fields, "id", serde_json::to_string(v).unwrap());
            Some(v.clone())
        }
    };
    match (forced, &spec.encoding) {
        (Some(e), _) => put(&mut fields, "encoding", format!("\"{}\"", encoding_name(e))),
        (None, Field::Set(e)) => put(
            &mut fields,
            "encoding",
            format!("\"{}\"", encoding_name(*e)),
        ),
        (None, Field::Null) => put(&mut fields, "encoding", "null".into()),
        (None, Field::Absent) => {}
    }
    let key = match &spec.key {
        Field::Absent => req.key.clone(),
        Field::Null => {
            put(&mut fields, "key", "null".into());
            None
        }
        Field::Set(k) => {
            let (json, bytes) = k.render(enc);
            put(&mut fields, "key", json);
            Some(Bytes::from(bytes))
        }
    };
    let value = match &spec.value {
        None => {
            put(&mut fields, "value", "null".into());
            None
        }
        Some(v) => {
            let (json, bytes) = v.render(enc);
            put(&mut fields, "value", json);
            Some(Bytes::from(bytes))
        }
    };
    let headers = match &spec.headers {
        Field::Absent => Vec::new(),
        Field::Null => {
            put(&mut fields, "headers", "null".into());
            Vec::new()
        }
        Field::Set(Headers::List(list)) => {
            let mut out = Vec::new();
            let mut json = Vec::new();
            for (name, v) in list {
                let k = serde_json::to_string(name).unwrap();
                match v {
                    Field::Absent => {
                        json.push(format!("{{\"key\":{k}}}"));
                        out.push((name.clone(), None));
                    }
                    Field::Null => {
                        json.push(format!("{{\"value\":null,\"key\":{k}}}"));
                        out.push((name.clone(), None));
                    }
                    Field::Set(p) => {
                        let (v, bytes) = p.render(enc);
                        json.push(format!("{{\"key\":{k},{}\"value\":{v}}}", c.ws()));
                        out.push((name.clone(), Some(Bytes::from(bytes))));
                    }
                }
            }
            put(&mut fields, "headers", format!("[{}]", json.join(",")));
            out
        }
        Field::Set(Headers::Map(map)) => {
            let mut out = Vec::new();
            let mut json = Vec::new();
            for (name, v) in map {
                let k = serde_json::to_string(name).unwrap();
                match v {
                    None => {
                        json.push(format!("{k}:null"));
                        out.push((name.clone(), None));
                    }
                    Some(p) => {
                        let (v, bytes) = p.render(enc);
                        json.push(format!("{k}:{v}"));
                        out.push((name.clone(), Some(Bytes::from(bytes))));
                    }
                }
            }
            c.shuffle(&mut json);
            put(&mut fields, "headers", format!("{{{}}}", json.join(",")));
            // JSON objects are read into a map ordered by name.
            out
        }
    };
    let partition = match spec.partition {
        Field::Absent => req.partition,
        Field::Null => {
            put(&mut fields, "partition", "null".into());
            None
        }
        Field::Set(p) => {
            put(&mut fields, "partition", p.to_string());
            Some(p)
        }
    };
    let timestamp = match spec.timestamp {
        Field::Absent => None,
        Field::Null => {
            put(&mut fields, "timestamp", "null".into());
            None
        }
        Field::Set(t) => {
            put(&mut fields, "timestamp", t.to_string());
            Some(t)
        }
    };
    let want = match broken {
        None => Ok(Record {
            id,
            seq,
            key,
            value,
            headers,
            partition,
            timestamp,
        }),
        Some(which) => {
            break_record(which, &mut fields);
            Err(produce::RecordError {
                // A bad id cannot be named; any other error names the client's id.
                id: if which == 16 { None } else { id },
                seq,
                error: ProtocolError::bad_request("(any message)"),
            })
        }
    };
    c.shuffle(&mut fields);
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}\"{k}\"{}:{}{v}", c.ws(), c.ws(), c.ws()))
        .collect();
    (format!("{{{}{}}}", body.join(","), c.ws()), want)
}

/// A text frame of `specs` (one object, or an array) and the answers it must get from `next_seq`.
fn render_frame(
    specs: &[(RecordSpec, Option<u8>)],
    req: &ProduceRequest,
    next_seq: u64,
    as_array: bool,
    c: &mut Choices,
) -> (String, Vec<Decoded>) {
    let mut texts = Vec::new();
    let mut want = Vec::new();
    for (i, (spec, broken)) in specs.iter().enumerate() {
        let (t, w) = render_record(spec, req, *broken, next_seq + i as u64, c);
        texts.push(t);
        want.push(w);
    }
    let frame = if as_array || specs.len() != 1 {
        let sep = format!("{},{}", c.ws(), c.ws());
        format!("{}[{}{}]", c.ws(), texts.join(&sep), c.ws())
    } else {
        format!("{}{}", c.ws(), texts[0])
    };
    (frame, want)
}

fn seq_of(d: &Decoded) -> u64 {
    match d {
        Ok(r) => r.seq,
        Err(e) => e.seq,
    }
}

/// Compares answers: records exactly, errors by sequence number, id and code.
fn assert_answers(got: &[Decoded], want: &[Decoded], frame: &str) {
    assert_eq!(got.len(), want.len(), "{frame}: {got:?}");
    for (g, w) in got.iter().zip(want) {
        match (g, w) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{frame}"),
            (Err(g), Err(w)) => {
                assert_eq!((g.seq, &g.id), (w.seq, &w.id), "{frame}: {}", g.error);
                assert_bad_request(&g.error, &frame);
            }
            _ => panic!("{frame}:\n got {g:?}\nwant {w:?}"),
        }
    }
}

/// How many answers a text frame gets: one per element of a non-empty JSON array, else one.
fn answers_for(frame: &[u8], format: FrameFormat) -> usize {
    let looks_json = matches!(frame.trim_ascii_start().first(), Some(b'{' | b'['));
    if format == FrameFormat::Raw || (format == FrameFormat::Auto && !looks_json) {
        return 1;
    }
    match serde_json::from_slice::<Value>(frame) {
        Ok(Value::Array(a)) if !a.is_empty() => a.len(),
        _ => 1,
    }
}

/// Arbitrary frame content: bytes, text, JSON-ish text, and real records.
fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..48),
        any::<String>().prop_map(String::into_bytes),
        json_like().prop_map(String::into_bytes),
        (record_spec(), any::<u64>()).prop_map(|(spec, seed)| {
            let req = ProduceRequest {
                topic: "t".into(),
                key: None,
                partition: None,
                encoding: Encoding::Text,
                format: FrameFormat::Auto,
                answers: Answers::Each,
                window: 1,
            };
            let mut c = Choices::new(seed);
            render_frame(&[(spec, None)], &req, 1, c.one_in(2), &mut c)
                .0
                .into_bytes()
        }),
    ]
}

#[derive(Debug, Clone)]
enum Call {
    Text(Vec<u8>),
    TextInto(Vec<u8>),
    Binary(Vec<u8>),
    Http(Vec<u8>, bool),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        frame_bytes().prop_map(Call::Text),
        frame_bytes().prop_map(Call::TextInto),
        frame_bytes().prop_map(Call::Binary),
        (frame_bytes(), any::<bool>()).prop_map(|(b, raw)| Call::Http(b, raw)),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// Frames of valid records (and records with one field broken) decode to exactly what was
    /// sent, numbered from where the socket is, each record answered once; HTTP bodies the same.
    #[test]
    fn records_round_trip(
        req in decoder_request(),
        specs in vec((record_spec(), option::weighted(0.2, 0u8..23)), 1..5),
        before in 0u64..3,
        as_array: bool,
        seed: u64,
    ) {
        let mut c = Choices::new(seed);
        let mut d = Decoder::new(&req);
        for _ in 0..before {
            d.binary(Bytes::from_static(b"earlier"));
        }
        let (frame, want) = render_frame(&specs, &req, before + 1, as_array, &mut c);
        let bytes = Bytes::from(frame.clone());
        let mut d2 = d.clone();
        let mut d3 = d.clone();
        assert_answers(&d.text(bytes.clone()), &want, &frame);
        let mut into = Vec::new();
        d2.text_into(bytes.clone(), &mut into);
        assert_answers(&into, &want, &frame);
        let (got, single) = d3.http_body(bytes, false).unwrap();
        prop_assert_eq!(single, !(as_array || specs.len() != 1));
        assert_answers(&got, &want, &frame);
        // Numbering goes on after the frame.
        let next = before + 1 + specs.len() as u64;
        for d in [&mut d, &mut d2, &mut d3] {
            prop_assert_eq!(seq_of(&d.binary(Bytes::from_static(b"x"))[0]), next);
        }
    }

    /// Any sequence of frames and bodies: every answer is numbered one after the last, one per
    /// record (per element of a non-empty JSON array), refusals are `bad_request`; binary frames
    /// and raw text are one record holding exactly the bytes sent, with the request's defaults.
    #[test]
    fn decoder_answers_every_record_once(
        req in decoder_request(),
        raw_format: bool,
        calls in vec(call(), 1..8),
    ) {
        let req = ProduceRequest {
            format: if raw_format { FrameFormat::Raw } else { req.format },
            ..req
        };
        let mut d = Decoder::new(&req);
        let mut next = 1u64;
        for call in calls {
            let (answers, expected, raw_bytes) = match &call {
                Call::Text(b) => {
                    let b = Bytes::from(b.clone());
                    let n = answers_for(&b, req.format);
                    let raw = (n == 1 && req.format != FrameFormat::Json
                        && (req.format == FrameFormat::Raw
                            || !matches!(b.trim_ascii_start().first(), Some(b'{' | b'['))))
                        .then(|| b.clone());
                    (d.text(b), n, raw)
                }
                Call::TextInto(b) => {
                    let b = Bytes::from(b.clone());
                    let n = answers_for(&b, req.format);
                    let mut out = Vec::new();
                    d.text_into(b, &mut out);
                    (out, n, None)
                }
                Call::Binary(b) => {
                    let b = Bytes::from(b.clone());
                    (d.binary(b.clone()), 1, Some(b))
                }
                Call::Http(b, raw) => {
                    let b = Bytes::from(b.clone());
                    match d.http_body(b.clone(), *raw) {
                        Ok((answers, single)) => {
                            let n = if *raw || req.format == FrameFormat::Raw {
                                prop_assert!(single);
                                1
                            } else {
                                let v: Value = serde_json::from_slice(&b).unwrap();
                                prop_assert_eq!(single, v.is_object());
                                v.as_array().map_or(1, Vec::len)
                            };
                            let raw_bytes = (*raw || req.format == FrameFormat::Raw).then(|| b.clone());
                            (answers, n, raw_bytes)
                        }
                        Err(e) => {
                            // A body refused as a whole is not numbered.
                            assert_bad_request(&e, &b);
                            prop_assert!(!*raw && req.format != FrameFormat::Raw);
                            (Vec::new(), 0, None)
                        }
                    }
                }
            };
            prop_assert_eq!(answers.len(), expected, "{:?}", call);
            for a in &answers {
                prop_assert_eq!(seq_of(a), next, "{:?}", call);
                next += 1;
                if let Err(e) = a {
                    assert_bad_request(&e.error, &call);
                    prop_assert!(matches!(e.id, None | Some(Value::String(_) | Value::Number(_))));
                }
            }
            if let Some(bytes) = raw_bytes {
                let r = answers[0].as_ref().unwrap();
                prop_assert_eq!(r.value.as_ref(), Some(&bytes));
                prop_assert_eq!(&r.key, &req.key);
                prop_assert_eq!(r.partition, req.partition);
                prop_assert!(r.id.is_none() && r.headers.is_empty() && r.timestamp.is_none());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoders: record frames, assignment frames, produce answers, errors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct OwnedRecord {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    value: Option<Vec<u8>>,
}

/// Bytes a topic may hold: binary, text, and JSON (valid, nearly valid, deeply nested).
fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..32),
        any::<String>().prop_map(String::into_bytes),
        json_like().prop_map(String::into_bytes),
        json_doc().prop_map(|v| v.to_string().into_bytes()),
        (60usize..70).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
    ]
}

fn owned_record() -> impl Strategy<Value = OwnedRecord> {
    (
        prop_oneof![valid_topic(), any::<String>()],
        any::<i32>(),
        any::<i64>(),
        option::of(any::<i64>()),
        option::of(record_bytes()),
        vec((any::<String>(), option::of(record_bytes())), 0..3),
        option::of(record_bytes()),
    )
        .prop_map(
            |(topic, partition, offset, timestamp, key, headers, value)| OwnedRecord {
                topic,
                partition,
                offset,
                timestamp,
                key,
                headers,
                value,
            },
        )
}

fn lossy(b: &Option<Vec<u8>>) -> Value {
    b.as_ref()
        .map_or(Value::Null, |b| Value::from(String::from_utf8_lossy(b)))
}

/// Whether `got` (a key, value or header value in a frame) says `bytes` in encoding `enc`.
fn says(got: &Value, bytes: &Option<Vec<u8>>, enc: Encoding) -> bool {
    let Some(b) = bytes else {
        return got.is_null();
    };
    match enc {
        Encoding::Text => *got == lossy(bytes),
        Encoding::Base64 => got.as_str().is_some_and(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .is_ok_and(|d| d == *b)
        }),
        // Either the text form, or the document the bytes are.
        Encoding::Json => {
            *got == lossy(bytes) || serde_json::from_slice::<Value>(b).is_ok_and(|v| v == *got)
        }
    }
}

fn strict(frame: &str) -> Value {
    match serde_json::from_str::<Value>(frame) {
        Ok(v) => v,
        Err(e) => panic!("not strict JSON ({e}): {frame}"),
    }
}

/// A record pushed into an `acks` batch: sequence number, id, partition, offset.
type Pushed = (u64, Option<Value>, i32, i64);

/// Takes the batch's frame (none when empty) with the records it must answer.
fn flush(
    batch: &mut produce::AcksBatch,
    pending: &mut Vec<Pushed>,
    frames: &mut Vec<(String, Vec<Pushed>)>,
) {
    let mut s = String::new();
    batch.take_frame(&mut s);
    if pending.is_empty() {
        assert_eq!(s, "", "an empty batch is no frame");
    } else {
        frames.push((s, std::mem::take(pending)));
    }
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    select(ErrorCode::ALL.to_vec())
}

fn id_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        exact_f64().prop_map(Value::from),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// Every record frame, in every format, over batches with one writer, is strict JSON (or,
    /// for SSE, one event per record whose data is strict JSON) that holds exactly the records
    /// pushed, in order, with their fields; SSE ids name each record's next offset.
    #[test]
    fn record_frames_are_strict_json_and_say_what_was_pushed(
        batches in vec((any::<u64>(), vec(owned_record(), 1..5)), 1..3),
        format in select(vec![
            Format::Seed,
            Format::V1(Encoding::Text),
            Format::V1(Encoding::Json),
            Format::V1(Encoding::Base64),
            Format::Sse(Encoding::Text),
            Format::Sse(Encoding::Json),
            Format::Sse(Encoding::Base64),
        ]),
    ) {
        let topics: Vec<String> =
            batches.iter().flat_map(|(_, rs)| rs.iter().map(|r| r.topic.clone())).collect();
        let mut w = match format {
            Format::Sse(_) => BatchWriter::with_positions(format, sse::Positions::new(&topics)),
            _ => BatchWriter::new(format),
        };
        // Whether every position so far is one an id can carry (offsets and partitions >= 0).
        let mut ids_valid = true;
        for (batch, records) in &batches {
            for (i, r) in records.iter().enumerate() {
                let headers: Vec<(&str, Option<&[u8]>)> =
                    r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                w.push(*batch, &RecordView {
                    topic: &r.topic,
                    partition: r.partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.as_deref(),
                    headers: &headers,
                    value: r.value.as_deref(),
                });
                prop_assert_eq!(w.len(), i + 1);
            }
            let before = w.bytes();
            let frame = w.finish();
            prop_assert!(w.is_empty());
            // `bytes()` (what maxBytes bounds) is the frame but its closing brackets.
            let closing = match format {
                Format::Seed => 1,
                Format::V1(_) => 2,
                Format::Sse(_) => 0,
            };
            prop_assert_eq!(frame.len(), before + closing);
            let list = match format {
                Format::Seed => strict(&frame).as_array().unwrap().clone(),
                Format::V1(_) => {
                    let v = strict(&frame);
                    prop_assert_eq!(&v["type"], "records");
                    prop_assert_eq!(v["batch"].as_u64(), Some(*batch));
                    v["records"].as_array().unwrap().clone()
                }
                Format::Sse(_) => {
                    let events: Vec<&str> = frame.strip_suffix("\n\n").unwrap().split("\n\n").collect();
                    prop_assert_eq!(events.len(), records.len());
                    let mut list = Vec::new();
                    for (e, r) in events.iter().zip(records) {
                        let lines: Vec<&str> = e.split('\n').collect();
                        prop_assert_eq!(lines.len(), 2, "{:?}", e);
                        prop_assert!(!e.contains('\r'));
                        let id = lines[0].strip_prefix("id: ").unwrap();
                        ids_valid &= r.partition >= 0 && r.offset >= 0 && r.offset < i64::MAX;
                        if ids_valid {
                            let named = sse::parse_id(id, &topics).unwrap();
                            let first = topics.iter().find(|t| **t == r.topic).unwrap();
                            prop_assert!(
                                named.contains(&(first.clone(), r.partition, r.offset + 1)),
                                "{} {:?}", id, named
                            );
                        }
                        list.push(strict(lines[1].strip_prefix("data: ").unwrap()));
                    }
                    list
                }
            };
            prop_assert_eq!(list.len(), records.len());
            for (got, r) in list.iter().zip(records) {
                prop_assert_eq!(got["offset"].as_i64(), Some(r.offset));
                match format {
                    Format::Seed => {
                        prop_assert_eq!(got.as_object().unwrap().len(), 2);
                        prop_assert_eq!(&got["message"], &lossy(&r.value));
                    }
                    Format::V1(enc) | Format::Sse(enc) => {
                        prop_assert_eq!(&got["topic"], &Value::from(r.topic.as_str()));
                        prop_assert_eq!(got["partition"].as_i64(), Some(i64::from(r.partition)));
                        prop_assert_eq!(got["timestamp"].as_i64(), r.timestamp);
                        prop_assert!(says(&got["key"], &r.key, enc), "key {}", got["key"]);
                        prop_assert!(says(&got["value"], &r.value, enc), "value {}", got["value"]);
                        let hs = got["headers"].as_array().unwrap();
                        prop_assert_eq!(hs.len(), r.headers.len());
                        for (h, (k, val)) in hs.iter().zip(&r.headers) {
                            prop_assert_eq!(&h["key"], &Value::from(k.as_str()));
                            prop_assert!(says(&h["value"], val, enc), "header {}", h["value"]);
                        }
                    }
                }
            }
        }
    }

    /// Assignment frames are strict JSON naming exactly the partitions given.
    #[test]
    fn partition_frames_are_strict_json(
        kind in select(vec!["assigned", "revoked"]),
        parts in vec((prop_oneof![valid_topic(), any::<String>()], any::<i32>()), 0..6),
    ) {
        let v = strict(&consume::partitions_frame(kind, &parts));
        prop_assert_eq!(&v["type"], kind);
        let got: Vec<(String, i32)> = v["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["topic"].as_str().unwrap().to_string(), p["partition"].as_i64().unwrap() as i32))
            .collect();
        prop_assert_eq!(got, parts);
    }

    /// `ack` and `error` frames, HTTP error bodies and results: strict JSON with the fields given;
    /// a close reason fits the 123 bytes a close frame has and starts the message it cuts.
    #[test]
    fn answers_and_errors_are_strict_json(
        id in id_value(),
        partition: i32,
        offset: i64,
        code in error_code(),
        message in prop_oneof![any::<String>(), "\\PC{100,200}", "[\"\\\\\u{0}-\u{1f}é]{0,20}"],
    ) {
        let v = strict(&produce::ack_frame(&id, partition, offset));
        prop_assert_eq!(v, serde_json::json!({"type": "ack", "id": id, "partition": partition, "offset": offset}));
        let e = ProtocolError::new(code, message.clone());
        let v = strict(&produce::error_frame(&id, &e));
        prop_assert_eq!(v, serde_json::json!({"type": "error", "id": id, "code": code.name(), "message": message}));
        let v = strict(&e.frame());
        prop_assert_eq!(v, serde_json::json!({"type": "error", "code": code.name(), "message": message}));
        let v = strict(&e.http_body());
        prop_assert_eq!(v, serde_json::json!({"error": {"code": code.name(), "message": message}}));
        let outcome = Err(e.clone());
        let v = strict(&serde_json::to_string(&produce::http_result(Some(&id), &outcome)).unwrap());
        prop_assert_eq!(v, serde_json::json!({"id": id, "error": {"code": code.name(), "message": message}}));
        let outcome = Ok((partition, offset));
        let v = strict(&serde_json::to_string(&produce::http_result(None, &outcome)).unwrap());
        prop_assert_eq!(v, serde_json::json!({"partition": partition, "offset": offset}));
        let reason = e.close_reason();
        prop_assert!(reason.len() <= 123);
        let full = format!("{}: {}", code.name(), message);
        prop_assert!(full.starts_with(&reason), "{:?} is not a prefix of {:?}", reason, full);
    }

    /// `acks` frames (answers=batch) are strict JSON and answer each record pushed exactly once:
    /// `first..=last` consecutive across frames, runs expanding to each record's partition and
    /// offset, `ids` (when any record had one) naming each record.
    #[test]
    fn acks_frames_answer_each_record_once(
        start in 1u64..1_000_000,
        records in vec(
            (option::weighted(0.2, id_value()), 0i32..3, prop_oneof![0i64..5, Just(i64::MAX - 2)], any::<bool>()),
            1..40,
        ),
        gap_at in option::of(any::<prop::sample::Index>()),
    ) {
        let mut batch = produce::AcksBatch::default();
        let mut frames = Vec::new();
        let mut pushed: Vec<Pushed> = Vec::new();
        let mut pending: Vec<Pushed> = Vec::new();
        let mut offset_base = 0i64;
        for (i, (id, part, off, next_run)) in records.iter().enumerate() {
            let seq = start + i as u64;
            // Offsets follow on within a run now and then, so runs get longer than one.
            let offset = if *next_run { offset_base + 1 } else { *off };
            offset_base = offset.min(i64::MAX - 1);
            if !batch.is_empty() && gap_at.is_some_and(|g| g.index(records.len()) == i) {
                prop_assert!(!batch.push(seq + 1, None, *part, offset), "a gap is refused");
            }
            if batch.is_full() {
                flush(&mut batch, &mut pending, &mut frames);
            }
            prop_assert!(batch.push(seq, id.as_ref(), *part, offset));
            pending.push((seq, id.clone(), *part, offset));
            pushed.push((seq, id.clone(), *part, offset));
            prop_assert_eq!(batch.len() as usize, pending.len());
        }
        flush(&mut batch, &mut pending, &mut frames);
        let mut answered = Vec::new();
        for (frame, records) in &frames {
            let v = strict(frame);
            prop_assert_eq!(&v["type"], "acks");
            let (first, last) = (v["first"].as_u64().unwrap(), v["last"].as_u64().unwrap());
            prop_assert_eq!(first, records[0].0);
            prop_assert_eq!(last, records.last().unwrap().0);
            let mut spots = Vec::new();
            for run in v["runs"].as_array().unwrap() {
                let (p, o, n) = (run[0].as_i64().unwrap(), run[1].as_i64().unwrap(), run[2].as_u64().unwrap());
                prop_assert!(n >= 1);
                for k in 0..n {
                    spots.push((p as i32, o + k as i64));
                }
            }
            prop_assert_eq!(spots.len() as u64, last - first + 1);
            let any_id = records.iter().any(|r| r.1.is_some());
            prop_assert_eq!(v.get("ids").is_some(), any_id, "{}", frame);
            for (k, (seq, id, p, o)) in records.iter().enumerate() {
                prop_assert_eq!(spots[k], (*p, *o));
                if any_id {
                    let want = id.clone().unwrap_or(Value::from(*seq));
                    prop_assert_eq!(&v["ids"][k], &want);
                }
                answered.push(*seq);
            }
        }
        let want: Vec<u64> = pushed.iter().map(|r| r.0).collect();
        prop_assert_eq!(answered, want);
    }
}
