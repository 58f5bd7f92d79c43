//! The README's Options table and `--help` describe the same options, names and defaults.
//!
//! `--help` states defaults rendered from `config::defaults`, so a default changed in code and
//! not in the README fails here. Comparison rules, applied deliberately:
//! - flag: every backticked word in the README's flag cell (first word only, so `-X key=value`
//!   is `-X`) must be one of the help entry's flags;
//! - TOML key: the backticked name in the README (`—` for none) equals the first word of the
//!   help text's trailing `[...]` (`[env ...]` there means no TOML key);
//! - env: the help names it when it is not the rule `KAFKA_PROXY_<FLAG>` (after_help states the
//!   rule); otherwise the rule applied to the long flag;
//! - default: the README cell with a trailing parenthesised gloss removed (`0 (off)` is `0`)
//!   equals the `X` of the help's `(default X)`, word for word; options without a value say
//!   `none` in both. An empty README cell is an error.

use std::process::Command;

/// One option as the README table or `--help` describes it.
#[derive(Debug, PartialEq)]
struct Doc {
    flags: Vec<String>,
    toml: Option<String>,
    env: String,
    default: String,
}

fn help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kafka-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8(out.stdout).unwrap()
}

/// Text between `open` and the next `close` after it.
fn between<'a>(s: &'a str, open: &str, close: char) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

/// Entries of clap's `Options:` list: a line `  -c, --config <CONFIG>` followed by indented
/// help lines. clap's own `--help` and `--version` are not options of the proxy and are left out.
fn help_options(help: &str) -> Vec<Doc> {
    assert!(
        help.contains("KAFKA_PROXY_<NAME>"),
        "after_help no longer states the env rule the env check relies on"
    );
    let list = help
        .split_once("Options:\n")
        .expect("help has an Options: list")
        .1
        .split("\n\n")
        .next()
        .unwrap();
    let mut entries: Vec<(Vec<String>, String)> = Vec::new();
    for line in list.lines() {
        let trimmed = line.trim();
        // Flag lines are indented at most 6 columns, help lines 10.
        if trimmed.starts_with('-') && line.len() - trimmed.len() <= 6 {
            let flags = trimmed
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| w.starts_with('-'))
                .map(str::to_string)
                .collect();
            entries.push((flags, String::new()));
        } else if let Some((_, text)) = entries.last_mut() {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    entries
        .into_iter()
        .filter(|(flags, _)| !flags.iter().any(|f| f == "--help" || f == "--version"))
        .map(|(flags, text)| {
            let long = flags
                .iter()
                .find(|f| f.starts_with("--"))
                .unwrap_or_else(|| panic!("{flags:?} has no long flag"));
            let key = text
                .rsplit_once('[')
                .and_then(|(_, k)| k.strip_suffix(']'))
                .unwrap_or_else(|| panic!("{long}: help lacks a trailing [key]: {text}"));
            let toml =
                (!key.starts_with("env ")).then(|| key.split(' ').next().unwrap().to_string());
            let named_env = text
                .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .find(|w| w.starts_with("KAFKA_PROXY_"));
            let env = match named_env {
                Some(e) => e.to_string(),
                None => format!(
                    "KAFKA_PROXY_{}",
                    long[2..].to_ascii_uppercase().replace('-', "_")
                ),
            };
            let default = between(&text, "(default ", ')')
                .unwrap_or_else(|| panic!("{long}: help states no default: {text}"))
                .to_string();
            Doc {
                flags,
                toml,
                env,
                default,
            }
        })
        .collect()
}

/// Backticked spans of a table cell.
fn ticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Rows of the table under `## Options` in README.md.
fn readme_options() -> Vec<Doc> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split_once("\n## Options\n")
        .expect("README has an Options section")
        .1;
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and |---| line
        .collect();
    assert!(!rows.is_empty(), "no Options table in README");
    rows.into_iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // cells[0] is the empty text before the leading '|'.
            let (toml, flag, env, default) = (cells[1], cells[2], cells[3], cells[4]);
            let toml = match toml {
                "—" => None,
                t => Some(
                    ticked(t)
                        .first()
                        .unwrap_or_else(|| panic!("{row}"))
                        .to_string(),
                ),
            };
            let flags = ticked(flag)
                .iter()
                .map(|f| f.split(' ').next().unwrap().to_string())
                .collect();
            let env = ticked(env)
                .first()
                .unwrap_or_else(|| panic!("{row}"))
                .to_string();
            let default = match default.rsplit_once(" (") {
                Some((value, gloss)) if gloss.ends_with(')') => value,
                _ => default,
            };
            assert!(!default.is_empty(), "README row has no default: {row}");
            Doc {
                flags,
                toml,
                env,
                default: default.to_string(),
            }
        })
        .collect()
}

#[test]
fn readme_options_table_matches_help() {
    let help = help();
    let in_help = help_options(&help);
    for row in readme_options() {
        let entry = in_help
            .iter()
            .find(|h| h.flags.contains(&row.flags[0]))
            .unwrap_or_else(|| panic!("README flag {} is not in --help:\n{help}", row.flags[0]));
        for flag in &row.flags {
            assert!(entry.flags.contains(flag), "{flag}: --help has {entry:?}");
        }
        assert_eq!(row.toml, entry.toml, "TOML key of {}", row.flags[0]);
        assert_eq!(row.env, entry.env, "env var of {}", row.flags[0]);
        assert_eq!(
            row.default, entry.default,
            "default of {}: README says {:?}, --help (config::defaults) says {:?}",
            row.flags[0], row.default, entry.default
        );
    }
}

#[test]
fn every_help_option_has_a_readme_row() {
    let rows = readme_options();
    for entry in help_options(&help()) {
        assert!(
            rows.iter()
                .any(|r| r.flags.iter().any(|f| entry.flags.contains(f))),
            "{:?} is in --help but has no row in README's Options table",
            entry.flags
        );
    }
}
