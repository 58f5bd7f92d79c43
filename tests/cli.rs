//! The binary's edge: configuration errors exit 64 with one line, `--help` documents every option.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kafka-proxy"))
}

#[test]
fn bad_config_exits_64_with_one_line_before_binding() {
    for (args, env, needle) in [
        (vec!["--kafka", "no-port"], vec![], "kafka"),
        (vec!["--max-bytes", "10"], vec![], "maxBytes"),
        (vec!["--no-such-flag"], vec![], "no-such-flag"),
        (
            vec![],
            vec![("KAFKA_PROXY_WS_PORT", "huge")],
            "KAFKA_PROXY_WS_PORT",
        ),
        (
            vec!["-X", "enable.auto.commit=true"],
            vec![],
            "enable.auto.commit",
        ),
        (
            vec!["--config", "/nonexistent/kp.toml"],
            vec![],
            "/nonexistent/kp.toml",
        ),
    ] {
        let out = bin().args(&args).envs(env).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        if !args.contains(&"--no-such-flag") {
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        }
    }
}

#[test]
fn secrets_are_not_echoed_in_config_errors() {
    let out = bin()
        .args(["--auth", "s3cr3t-pw", "--kafka", "bad"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cr3t-pw"));
}

#[test]
fn help_documents_every_seed_option() {
    let out = bin().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--ws-port",
        "--kafka",
        "--idle-timeout",
        "--max-bytes",
        "--partition",
        "--auth",
        "--kafka-property",
        "--stats-interval",
        "KAFKA_PROXY_",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
}
