//! The layered layout of `src/` (lib.rs, "# Layout"; docs/ARCHITECTURE.md) holds: lower layers
//! never import higher ones, librdkafka and axum stay in the modules that own them, and no file
//! of non-test code grows past the size a reader can hold.
//!
//! Test modules (`#[cfg(test)] mod tests`, at the end of a file) are not checked: a unit test may
//! reach for a lower-level tool (librdkafka's mock cluster, say) that its module must not use.

use std::path::{Path, PathBuf};

/// Each top-level module and its layer; a module may import only modules of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    ("protocol", 0),
    ("config", 1),
    ("shutdown", 1),
    ("metrics", 1),
    ("access", 2),
    ("kafka", 3),
    ("transport", 4),
    ("flow", 5),
    ("http", 6),
];

/// External crates only these modules may name.
const OWNED_CRATES: &[(&str, &[&str])] = &[
    ("rdkafka", &["kafka"]),
    ("rdkafka_batch", &["kafka"]),
    ("axum", &["http", "transport"]),
    ("tungstenite", &["transport"]),
];

/// Crates the pure wire contract must not use: it has no I/O.
const NOT_IN_PROTOCOL: &[&str] = &["tokio", "axum", "rdkafka", "futures"];

/// Longest non-test part of a source file, in lines.
const MAX_LINES: usize = 600;

struct Source {
    path: PathBuf,
    /// The top-level module the file belongs to (`kafka` for src/kafka/consumer.rs).
    module: String,
    /// The file without its test module.
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).expect("under src/");
            let first = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("a file name");
            let module = first.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            let code = match text.find("\n#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.push(Source { path, module, code });
        }
    }
    assert!(out.len() > 20, "found only {} source files", out.len());
    out
}

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Lines that are code, not comments.
fn code_lines(code: &str) -> impl Iterator<Item = (usize, &str)> {
    code.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.starts_with("//"))
}

/// Every `crate::<module>` a file names.
fn crate_refs(code: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (n, line) in code_lines(code) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` groups are not used in this code base; a bare `crate::` is caught.
            refs.push((n, name));
            rest = after;
        }
    }
    refs
}

/// Whether a file names the external crate `name` (a `use` or a path).
fn names_crate(code: &str, name: &str) -> Option<usize> {
    let patterns = [format!("{name}::"), format!("use {name};")];
    code_lines(code)
        .find(|(_, line)| {
            patterns.iter().any(|p| {
                line.match_indices(p.as_str()).any(|(i, _)| {
                    // Not a suffix of a longer name (`rdkafka_batch::` is not `batch::`).
                    i == 0 || {
                        let before = line.as_bytes()[i - 1];
                        !(before.is_ascii_alphanumeric() || before == b'_' || before == b':')
                    }
                })
            })
        })
        .map(|(n, _)| n)
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let mut wrong = Vec::new();
    for s in sources() {
        let Some(own) = layer(&s.module) else {
            // lib.rs and main.rs sit on top and may use everything.
            assert!(
                s.module == "lib" || s.module == "main",
                "{} is in no layer: add its module to LAYERS and to lib.rs's # Layout",
                s.path.display()
            );
            continue;
        };
        for (line, name) in crate_refs(&s.code) {
            if name == s.module {
                continue;
            }
            match layer(&name) {
                Some(l) if l < own => {}
                _ => wrong.push(format!(
                    "{}:{line}: `{}` (layer {own}) imports crate::{name}",
                    s.path.display(),
                    s.module
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn external_crates_stay_in_their_modules() {
    let mut wrong = Vec::new();
    for s in sources() {
        for (krate, owners) in OWNED_CRATES {
            if owners.contains(&s.module.as_str()) {
                continue;
            }
            if let Some(line) = names_crate(&s.code, krate) {
                wrong.push(format!(
                    "{}:{line}: `{krate}` is used outside {owners:?}",
                    s.path.display()
                ));
            }
        }
        if s.module == "protocol" {
            for krate in NOT_IN_PROTOCOL {
                if let Some(line) = names_crate(&s.code, krate) {
                    wrong.push(format!(
                        "{}:{line}: the wire contract uses `{krate}`",
                        s.path.display()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "crates used where they don't belong:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_ack_ledger_is_pure() {
    let ledger = sources()
        .into_iter()
        .find(|s| s.path.ends_with("flow/ledger.rs"))
        .expect("src/flow/ledger.rs exists");
    assert!(
        crate_refs(&ledger.code).is_empty(),
        "the ledger imports crate modules"
    );
    for krate in ["tokio", "axum", "rdkafka", "futures"] {
        assert!(
            names_crate(&ledger.code, krate).is_none(),
            "the ledger uses {krate}"
        );
    }
}

#[test]
fn no_file_is_too_long_to_read() {
    let long: Vec<String> = sources()
        .iter()
        .filter_map(|s| {
            let n = s.code.lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", s.path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines of non-test code:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The scanners themselves: a test that cannot fail proves nothing.
    assert_eq!(
        crate_refs("use crate::http::AppState;\n// crate::flow\nlet x = crate::kafka::K;"),
        vec![(1, "http".to_string()), (3, "kafka".to_string())]
    );
    assert_eq!(names_crate("use rdkafka::Message;", "rdkafka"), Some(1));
    assert_eq!(
        names_crate("use rdkafka_batch::FetchQueue;", "rdkafka"),
        None
    );
    assert_eq!(names_crate("let y = myaxum::y;", "axum"), None);
    assert_eq!(names_crate("    axum::Error::new(e)", "axum"), Some(1));
}
