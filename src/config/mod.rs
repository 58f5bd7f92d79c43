//! Startup configuration: CLI flags, `KAFKA_PROXY_*` variables and a TOML file, merged and validated.
//!
//! Precedence is CLI > environment > file > defaults, and [`defaults`] is the one place a default
//! is written. The environment is passed in as a map so tests never touch the process
//! environment. Option names follow the seed (`wsPort`, `kafka`,
//! `idleTimeout`, `maxBytes`, `partition`, `auth`) so its users keep their settings.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

pub use security::{AclRule, Security};

/// Exit code for bad configuration (EX_USAGE), as linkerd and sysexits do.
pub const EXIT_CONFIG: i32 = 64;

pub mod defaults;
pub mod security;
pub mod watch;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad config file {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("bad value for {name}: {message}")]
    Value { name: String, message: String },
}

fn bad(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        name: name.to_string(),
        message: message.into(),
    }
}

/// Where a group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

impl std::str::FromStr for OffsetReset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            other => Err(format!("expected earliest or latest, got {other:?}")),
        }
    }
}

/// A secret that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The PEM files of the listener's TLS certificate chain and private key (`tlsCert`, `tlsKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP/WebSocket listener binds (`host:wsPort`).
    pub listen: SocketAddr,
    /// Kafka bootstrap servers, comma-separated, seed's trailing `/` removed.
    pub kafka: String,
    /// Longest a partly filled batch waits for more records before it is sent (seed: `idleTimeout`).
    pub idle_timeout: Duration,
    /// Upper bound on the payload bytes of one batch frame (seed: `maxBytes`).
    pub max_bytes: usize,
    /// Default partition for seed sockets that name none (seed: `partition`); `None` means the
    /// socket joins the group for the whole topic.
    pub partition: Option<i32>,
    /// Shared password for the seed's `Authorization: basic <password>` header (seed: `auth`).
    pub auth: Option<Secret>,
    /// Where a group without a committed offset starts.
    pub offset_reset: OffsetReset,
    /// Bytes the proxy may hold for one session (in flight to the socket plus librdkafka's
    /// prefetch queue) before it pauses fetching. Bounds memory whatever the topic rate.
    pub session_buffer_bytes: usize,
    /// Largest client frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Most concurrent sessions; more are refused with 429 `limit_reached` before the upgrade.
    pub max_connections: usize,
    /// Records delivered and not yet acknowledged (consume, `commit=ack`) or read and not yet
    /// answered (produce), summed over every socket. Each socket reserves its `window` from this
    /// budget when it opens; a socket that does not fit is refused with 429.
    pub max_unacked_records: usize,
    /// Live-tail readers (one librdkafka client each, shared by every socket following the same
    /// topic and encoding) running at once; a socket that would start one more gets 429.
    pub max_tail_readers: usize,
    /// Interval of the seed-style per-group stats log; `None` disables it.
    pub stats_interval: Option<Duration>,
    /// How long shutdown waits for sessions to close and commit.
    pub shutdown_grace: Duration,
    /// Interval between WebSocket pings (a peer silent for three intervals is dropped) and
    /// between the keep-alive comments of an idle event stream (SSE).
    pub ping_interval: Duration,
    /// Extra librdkafka properties for every client (SASL, SSL, ...). Values may be secret and are
    /// never logged.
    pub kafka_properties: BTreeMap<String, Secret>,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// TLS on the listener (HTTPS and wss on the same port); `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Identities, origins, ACLs, tickets and quotas.
    pub security: security::Security,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(defaults::HOST, defaults::WS_PORT),
            kafka: defaults::KAFKA.into(),
            idle_timeout: Duration::from_millis(defaults::IDLE_TIMEOUT_MS),
            max_bytes: defaults::MAX_BYTES,
            partition: None,
            auth: None,
            offset_reset: defaults::OFFSET_RESET,
            session_buffer_bytes: defaults::SESSION_BUFFER_BYTES,
            max_frame_bytes: defaults::MAX_FRAME_BYTES,
            max_connections: defaults::MAX_CONNECTIONS,
            max_unacked_records: defaults::MAX_UNACKED_RECORDS,
            max_tail_readers: defaults::MAX_TAIL_READERS,
            stats_interval: stats_interval(defaults::STATS_INTERVAL_SECS),
            shutdown_grace: Duration::from_secs(defaults::SHUTDOWN_GRACE_SECS),
            ping_interval: Duration::from_secs(defaults::PING_INTERVAL_SECS),
            kafka_properties: BTreeMap::new(),
            log_format: defaults::LOG_FORMAT.into(),
            tls: None,
            security: security::Security::default(),
        }
    }
}

/// `statsInterval` in seconds to the config's form: 0 means off.
fn stats_interval(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Command-line flags. Every flag also reads `KAFKA_PROXY_<NAME>` and the TOML key in brackets.
/// Help texts leave out defaults: `mut_args` adds each from [`defaults`].
#[derive(Debug, Parser, Default)]
#[command(
    name = "kafka-proxy",
    version,
    about = "WebSocket and HTTP gateway to Apache Kafka, wire-compatible with the Node.js kafka-proxy",
    after_help = "Each option can also be set as KAFKA_PROXY_<NAME> (e.g. KAFKA_PROXY_WS_PORT) or in the \
TOML file given by --config (keys as in brackets). CLI beats environment beats file.",
    mut_args(defaults::annotate)
)]
pub struct Cli {
    /// TOML config file [env KAFKA_PROXY_CONFIG]
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Port for HTTP and WebSocket clients [wsPort]
    #[arg(long = "ws-port", alias = "wsPort")]
    pub ws_port: Option<u16>,
    /// Address to bind [host]
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Kafka bootstrap servers, e.g. localhost:9092 [kafka]
    #[arg(long)]
    pub kafka: Option<String>,
    /// Milliseconds a partly filled batch waits for more records before it is sent; 0 sends what is
    /// ready at once [idleTimeout]
    #[arg(long = "idle-timeout", alias = "idleTimeout")]
    pub idle_timeout: Option<u64>,
    /// Most payload bytes in one batch frame; a single larger record is sent alone [maxBytes]
    #[arg(long = "max-bytes", alias = "maxBytes")]
    pub max_bytes: Option<usize>,
    /// Partition that seed sockets without `partition=` read; unset joins the group for all
    /// partitions [partition]
    #[arg(long)]
    pub partition: Option<i32>,
    /// Password clients must send as `Authorization: basic <password>` or RFC 7617 Basic [auth]
    #[arg(long)]
    pub auth: Option<String>,
    /// Where a group without committed offsets starts: earliest or latest
    /// [offsetReset]
    #[arg(long = "offset-reset")]
    pub offset_reset: Option<OffsetReset>,
    /// Bytes buffered per session before fetching pauses [sessionBufferBytes]
    #[arg(long = "session-buffer-bytes")]
    pub session_buffer_bytes: Option<usize>,
    /// Largest client frame accepted in bytes [maxFrameBytes]
    #[arg(long = "max-frame-bytes")]
    pub max_frame_bytes: Option<usize>,
    /// Most concurrent sessions [maxConnections]
    #[arg(long = "max-connections")]
    pub max_connections: Option<usize>,
    /// Most unacknowledged or unanswered records over all sockets; each socket reserves its
    /// window [maxUnackedRecords]
    #[arg(long = "max-unacked-records")]
    pub max_unacked_records: Option<usize>,
    /// Most live-tail readers at once, each following one topic for all its sockets
    /// [maxTailReaders]
    #[arg(long = "max-tail-readers")]
    pub max_tail_readers: Option<usize>,
    /// Seconds between per-group stats log lines; 0 disables [statsInterval]
    #[arg(long = "stats-interval")]
    pub stats_interval: Option<u64>,
    /// Seconds shutdown waits for sessions to finish [shutdownGrace]
    #[arg(long = "shutdown-grace")]
    pub shutdown_grace: Option<u64>,
    /// Seconds between WebSocket pings and SSE keep-alive comments [pingInterval]
    #[arg(long = "ping-interval")]
    pub ping_interval: Option<u64>,
    /// librdkafka property KEY=VALUE for every Kafka client, repeatable; the environment takes a
    /// newline-separated list in KAFKA_PROXY_KAFKA_PROPERTIES [kafkaProperties table]
    #[arg(long = "kafka-property", short = 'X', value_name = "KEY=VALUE")]
    pub kafka_property: Vec<String>,
    /// Log format: text or json [logFormat]
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    /// PEM certificate chain for HTTPS and wss on the same port; needs --tls-key; reloaded when
    /// the file changes or on SIGHUP [tlsCert]
    #[arg(long = "tls-cert")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [tlsKey]
    #[arg(long = "tls-key")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub security: security::SecurityCli,
}

/// The TOML file's shape; names match the seed's constructor options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileConfig {
    ws_port: Option<u16>,
    host: Option<IpAddr>,
    kafka: Option<String>,
    idle_timeout: Option<u64>,
    max_bytes: Option<usize>,
    partition: Option<i32>,
    auth: Option<String>,
    offset_reset: Option<OffsetReset>,
    session_buffer_bytes: Option<usize>,
    max_frame_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_unacked_records: Option<usize>,
    max_tail_readers: Option<usize>,
    stats_interval: Option<u64>,
    shutdown_grace: Option<u64>,
    ping_interval: Option<u64>,
    kafka_properties: Option<BTreeMap<String, String>>,
    log_format: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

fn env_parse<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    let key = format!("KAFKA_PROXY_{name}");
    match env.get(&key) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|e| bad(&key, e.to_string())),
    }
}

/// An option's value from the first place that sets it: the command line, then the
/// `KAFKA_PROXY_*` environment variable, then the config file.
fn pick<T: std::str::FromStr>(
    cli: Option<T>,
    env: &HashMap<String, String>,
    name: &str,
    file: Option<T>,
) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    match cli {
        Some(v) => Ok(Some(v)),
        None => Ok(env_parse(env, name)?.or(file)),
    }
}

impl Config {
    /// Parses `args` (including the program name) and `env`, reads the file if named, and validates.
    pub fn load(args: &[String], env: &HashMap<String, String>) -> Result<Config, LoadError> {
        let cli = Cli::try_parse_from(args).map_err(LoadError::Cli)?;
        Config::from_parts(cli, env).map_err(LoadError::Config)
    }

    /// Merges already-parsed flags with the environment and the file.
    pub fn from_parts(cli: Cli, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let file_path = cli
            .config
            .clone()
            .or_else(|| env.get("KAFKA_PROXY_CONFIG").map(PathBuf::from));
        let file = match &file_path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                    path: path.clone(),
                    source,
                })?;
                let toml_error = |e: toml::de::Error| ConfigError::Toml {
                    path: path.clone(),
                    message: e.message().to_string(),
                };
                // The security keys have their own shape (`config::security`); each part
                // still refuses keys it does not know.
                let mut table: toml::Table = toml::from_str(&text).map_err(toml_error)?;
                let mut sec = toml::Table::new();
                for key in security::FILE_KEYS {
                    if let Some(v) = table.remove(*key) {
                        sec.insert(key.to_string(), v);
                    }
                }
                (
                    FileConfig::deserialize(table).map_err(toml_error)?,
                    security::SecurityFile::deserialize(sec).map_err(toml_error)?,
                )
            }
            None => (FileConfig::default(), security::SecurityFile::default()),
        };
        let (file, security_file) = file;

        let port: u16 =
            pick(cli.ws_port, env, "WS_PORT", file.ws_port)?.unwrap_or(defaults::WS_PORT);
        let host: IpAddr = pick(cli.host, env, "HOST", file.host)?.unwrap_or(defaults::HOST);
        let kafka: String =
            pick(cli.kafka, env, "KAFKA", file.kafka)?.unwrap_or_else(|| defaults::KAFKA.into());
        let idle_ms: u64 = pick(cli.idle_timeout, env, "IDLE_TIMEOUT", file.idle_timeout)?
            .unwrap_or(defaults::IDLE_TIMEOUT_MS);
        let max_bytes: usize =
            pick(cli.max_bytes, env, "MAX_BYTES", file.max_bytes)?.unwrap_or(defaults::MAX_BYTES);
        let partition: Option<i32> = pick(cli.partition, env, "PARTITION", file.partition)?;
        let auth: Option<String> = pick(cli.auth, env, "AUTH", file.auth)?;
        let offset_reset = pick(cli.offset_reset, env, "OFFSET_RESET", file.offset_reset)?
            .unwrap_or(defaults::OFFSET_RESET);
        let session_buffer_bytes = pick(
            cli.session_buffer_bytes,
            env,
            "SESSION_BUFFER_BYTES",
            file.session_buffer_bytes,
        )?
        .unwrap_or(defaults::SESSION_BUFFER_BYTES);
        let max_frame_bytes = pick(
            cli.max_frame_bytes,
            env,
            "MAX_FRAME_BYTES",
            file.max_frame_bytes,
        )?
        .unwrap_or(defaults::MAX_FRAME_BYTES);
        let max_connections = pick(
            cli.max_connections,
            env,
            "MAX_CONNECTIONS",
            file.max_connections,
        )?
        .unwrap_or(defaults::MAX_CONNECTIONS);
        let max_unacked_records = pick(
            cli.max_unacked_records,
            env,
            "MAX_UNACKED_RECORDS",
            file.max_unacked_records,
        )?
        .unwrap_or(defaults::MAX_UNACKED_RECORDS);
        let max_tail_readers = pick(
            cli.max_tail_readers,
            env,
            "MAX_TAIL_READERS",
            file.max_tail_readers,
        )?
        .unwrap_or(defaults::MAX_TAIL_READERS);
        let stats_secs: u64 = pick(
            cli.stats_interval,
            env,
            "STATS_INTERVAL",
            file.stats_interval,
        )?
        .unwrap_or(defaults::STATS_INTERVAL_SECS);
        let grace_secs: u64 = pick(
            cli.shutdown_grace,
            env,
            "SHUTDOWN_GRACE",
            file.shutdown_grace,
        )?
        .unwrap_or(defaults::SHUTDOWN_GRACE_SECS);
        let ping_secs: u64 = pick(cli.ping_interval, env, "PING_INTERVAL", file.ping_interval)?
            .unwrap_or(defaults::PING_INTERVAL_SECS);
        let log_format: String = pick(cli.log_format, env, "LOG_FORMAT", file.log_format)?
            .unwrap_or_else(|| defaults::LOG_FORMAT.into());
        let tls_cert: Option<PathBuf> = pick(cli.tls_cert, env, "TLS_CERT", file.tls_cert)?;
        let tls_key: Option<PathBuf> = pick(cli.tls_key, env, "TLS_KEY", file.tls_key)?;

        let (security, auth_from_file) = security::merge(cli.security, env, security_file)?;
        if auth.is_some() && auth_from_file.is_some() {
            return Err(bad("authFile", "auth and authFile are both set; give one"));
        }
        let auth = auth.or(auth_from_file);

        // Properties: file first, then environment, then CLI, later ones win per key.
        let mut kafka_properties = BTreeMap::new();
        for (k, v) in file.kafka_properties.unwrap_or_default() {
            kafka_properties.insert(k, Secret::new(v));
        }
        let env_props = env
            .get("KAFKA_PROXY_KAFKA_PROPERTIES")
            .map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default();
        for kv in env_props.iter().chain(cli.kafka_property.iter()) {
            let kv = kv.trim();
            if kv.is_empty() {
                continue;
            }
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad("kafka-property", "expected KEY=VALUE"))?;
            kafka_properties.insert(k.trim().to_string(), Secret::new(v.trim()));
        }

        // Validate before anything binds.
        let kafka = kafka.trim().trim_end_matches('/').to_string();
        if kafka.is_empty()
            || kafka
                .split(',')
                .any(|b| b.trim().is_empty() || !b.contains(':'))
        {
            return Err(bad(
                "kafka",
                format!("expected host:port[,host:port...], got {kafka:?}"),
            ));
        }
        if max_bytes < 1024 {
            return Err(bad("maxBytes", "must be at least 1024"));
        }
        if idle_ms > 60_000 {
            return Err(bad("idleTimeout", "must be at most 60000 ms"));
        }
        if let Some(p) = partition {
            if p < 0 {
                return Err(bad("partition", "must be >= 0"));
            }
        }
        if let Some(a) = &auth {
            if a.is_empty() {
                return Err(bad("auth", "must not be empty"));
            }
        }
        if !(64 * 1024..=1 << 30).contains(&session_buffer_bytes) {
            return Err(bad(
                "sessionBufferBytes",
                "must be between 65536 and 1073741824",
            ));
        }
        if max_frame_bytes < 1024 {
            return Err(bad("maxFrameBytes", "must be at least 1024"));
        }
        if max_connections == 0 {
            return Err(bad("maxConnections", "must be at least 1"));
        }
        if max_unacked_records == 0 {
            return Err(bad("maxUnackedRecords", "must be at least 1"));
        }
        if max_tail_readers == 0 {
            return Err(bad("maxTailReaders", "must be at least 1"));
        }
        if ping_secs == 0 {
            return Err(bad("pingInterval", "must be at least 1"));
        }
        if log_format != "text" && log_format != "json" {
            return Err(bad("logFormat", "expected text or json"));
        }
        // The files themselves are read when the server starts (transport::tls), so a reload
        // and the first load report problems the same way.
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(
                    "tlsKey",
                    "tlsCert is set without tlsKey; give both or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "tlsCert",
                    "tlsKey is set without tlsCert; give both or neither",
                ))
            }
        };
        if security.tls_client_ca.is_some() && tls.is_none() {
            return Err(bad(
                "tlsClientCa",
                "needs tlsCert and tlsKey: client certificates are asked for in the TLS handshake",
            ));
        }
        for key in kafka_properties.keys() {
            if PROXY_OWNED_PROPERTIES.contains(&key.as_str()) {
                return Err(bad(
                    "kafka-property",
                    format!("{key} is managed by the proxy and cannot be overridden"),
                ));
            }
        }

        Ok(Config {
            listen: SocketAddr::new(host, port),
            kafka,
            idle_timeout: Duration::from_millis(idle_ms),
            max_bytes,
            partition,
            auth: auth.map(Secret::new),
            offset_reset,
            session_buffer_bytes,
            max_frame_bytes,
            max_connections,
            max_unacked_records,
            max_tail_readers,
            stats_interval: stats_interval(stats_secs),
            shutdown_grace: Duration::from_secs(grace_secs),
            ping_interval: Duration::from_secs(ping_secs),
            kafka_properties,
            log_format,
            tls,
            security,
        })
    }
}

/// Properties the proxy sets itself because its delivery guarantees depend on them.
const PROXY_OWNED_PROPERTIES: &[&str] = &[
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "enable.idempotence",
    "bootstrap.servers",
    // A static member id shared by every session would make each new socket fence the last.
    "group.instance.id",
];

/// Why startup configuration failed: a flag error (clap prints it, including `--help`) or a bad value.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Cli(clap::Error),
    #[error("{0}")]
    Config(ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, LoadError> {
        let mut a = vec!["kafka-proxy".to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&a, &env)
    }

    #[test]
    fn defaults_serve_throughput() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.idle_timeout, Duration::ZERO);
        assert_eq!(c.max_bytes, 1_000_000);
        assert_eq!(c.partition, None);
    }

    #[test]
    fn nothing_set_gives_config_default() {
        // Config has no PartialEq (Secret avoids comparisons); Debug shows every field.
        let loaded = format!("{:?}", load(&[], &[]).unwrap());
        assert_eq!(loaded, format!("{:?}", Config::default()));
    }

    #[test]
    fn help_states_every_default_from_defaults() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd.render_long_help().to_string();
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            let shown = defaults::shown(id).unwrap_or_else(|| panic!("no default for --{id}"));
            assert!(
                help.contains(&format!("(default {shown})")),
                "--{id}: {help}"
            );
        }
        assert!(help.contains("(default 9999) [wsPort]"), "{help}");
    }

    #[test]
    fn seed_names_and_trailing_slash() {
        let c = load(
            &[
                "--wsPort",
                "1234",
                "--kafka",
                "localhost:9092/",
                "--maxBytes",
                "5000",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.kafka, "localhost:9092");
        assert_eq!(c.max_bytes, 5000);
    }

    #[test]
    fn cli_beats_env_beats_file() {
        let dir = std::env::temp_dir().join(format!("kp-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "wsPort = 1\nidleTimeout = 7\nauth = \"filepw\"\n[kafkaProperties]\n\"security.protocol\" = \"plaintext\"\n",
        )
        .unwrap();
        let fs = f.to_str().unwrap();
        let c = load(
            &["--config", fs, "--ws-port", "3"],
            &[
                ("KAFKA_PROXY_WS_PORT", "2"),
                ("KAFKA_PROXY_IDLE_TIMEOUT", "8"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.idle_timeout, Duration::from_millis(8));
        assert_eq!(c.auth.as_ref().unwrap().expose(), "filepw");
        assert!(c.kafka_properties.contains_key("security.protocol"));
        assert!(!format!("{c:?}").contains("filepw"));
    }

    #[test]
    fn bad_values_are_named() {
        let e = load(&["--kafka", "nohostport"], &[]).unwrap_err();
        assert!(e.to_string().contains("kafka"), "{e}");
        let e = load(&[], &[("KAFKA_PROXY_MAX_BYTES", "lots")]).unwrap_err();
        assert!(e.to_string().contains("KAFKA_PROXY_MAX_BYTES"), "{e}");
        let e = load(&["-X", "group.id=x"], &[]).unwrap_err();
        assert!(e.to_string().contains("group.id"), "{e}");
        let e = load(&["--partition=-1"], &[]).unwrap_err();
        assert!(e.to_string().contains("partition"), "{e}");
        let e = load(&["--max-tail-readers", "0"], &[]).unwrap_err();
        assert!(e.to_string().contains("maxTailReaders"), "{e}");
        let c = load(&[], &[("KAFKA_PROXY_MAX_TAIL_READERS", "7")]).unwrap();
        assert_eq!(c.max_tail_readers, 7);
    }

    #[test]
    fn client_certificates_need_tls_and_their_lists_need_a_ca() {
        for (args, want) in [
            (
                &["--tls-client-ca", "/ca.pem"][..],
                "bad value for tlsClientCa: needs tlsCert",
            ),
            (
                &["--tls-client-crl", "/crl.pem"][..],
                "bad value for tlsClientCrl: needs tlsClientCa",
            ),
        ] {
            let e = load(args, &[]).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
        let tls = [
            "--tls-client-ca",
            "/ca.pem",
            "--tls-cert",
            "/c",
            "--tls-key",
            "/k",
        ];
        let c = load(&tls, &[("KAFKA_PROXY_TLS_CLIENT_CRL", "/crl.pem")]).unwrap();
        assert_eq!(c.security.tls_client_ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.security.tls_client_crl, Some(PathBuf::from("/crl.pem")));
    }

    #[test]
    fn tls_cert_and_key_come_together() {
        let e = load(&["--tls-cert", "/c.pem"], &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "bad value for tlsKey: tlsCert is set without tlsKey; give both or neither"
        );
        let e = load(&[], &[("KAFKA_PROXY_TLS_KEY", "/k.pem")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tlsKey is set without tlsCert"), "{e}");
        let c = load(
            &["--tls-cert", "/c.pem"],
            &[("KAFKA_PROXY_TLS_KEY", "/k.pem")],
        )
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        let dir = std::env::temp_dir().join(format!("kp-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "tlsCert = \"/a.pem\"\ntlsKey = \"/b.pem\"\n").unwrap();
        let c = load(&["--config", f.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.tls.unwrap().key, PathBuf::from("/b.pem"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("kp-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "wsport = 1\n").unwrap();
        let e = load(&["--config", f.to_str().unwrap()], &[]).unwrap_err();
        assert!(e.to_string().contains("wsport"), "{e}");
    }
}
