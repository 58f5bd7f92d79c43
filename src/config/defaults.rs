//! Every option's default, written once: `Config::default()`, the merge in
//! [`super::Config::from_parts`] and the `--help` text (and through it the README test) all read these.
//! Values are in the unit the option is given in (ms, seconds, bytes).

use std::net::{IpAddr, Ipv4Addr};

use super::OffsetReset;

pub const WS_PORT: u16 = 9999;
pub const HOST: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const KAFKA: &str = "127.0.0.1:9092";
/// 0 sends what is ready at once.
pub const IDLE_TIMEOUT_MS: u64 = 0;
pub const MAX_BYTES: usize = 1_000_000;
pub const OFFSET_RESET: OffsetReset = OffsetReset::Earliest;
pub const SESSION_BUFFER_BYTES: usize = 4 << 20;
pub const MAX_FRAME_BYTES: usize = 1 << 20;
pub const MAX_CONNECTIONS: usize = 20_000;
pub const MAX_UNACKED_RECORDS: usize = 10_000_000;
pub const MAX_TAIL_READERS: usize = 1000;
/// 0 disables the stats log.
pub const STATS_INTERVAL_SECS: u64 = 0;
pub const SHUTDOWN_GRACE_SECS: u64 = 10;
pub const PING_INTERVAL_SECS: u64 = 20;
pub const LOG_FORMAT: &str = "text";
pub const JWT_LEEWAY_SECS: u64 = 30;
pub const JWT_ROLES_CLAIM: &str = "roles";
pub const JWT_JWKS_REFRESH_SECS: u64 = 300;
pub const TICKET_TTL_SECS: u64 = 30;
/// 0 is no limit, for the quotas below.
pub const NO_LIMIT: u64 = 0;
pub const AUTH_FAILURES_PER_MINUTE: u32 = 30;

/// Options with no value unless set (`config`, `partition`, `auth`, `kafkaProperties`) show this.
pub const NONE: &str = "none";

/// The default `--help` states for the clap argument `id`, rendered from the consts above so
/// help cannot drift from the code. `None` for clap's own `help` and `version`.
pub fn shown(id: &str) -> Option<String> {
    Some(match id {
        "ws_port" => WS_PORT.to_string(),
        "host" => HOST.to_string(),
        "kafka" => KAFKA.to_string(),
        "idle_timeout" => IDLE_TIMEOUT_MS.to_string(),
        "max_bytes" => MAX_BYTES.to_string(),
        "offset_reset" => OFFSET_RESET.as_str().to_string(),
        "session_buffer_bytes" => SESSION_BUFFER_BYTES.to_string(),
        "max_frame_bytes" => MAX_FRAME_BYTES.to_string(),
        "max_connections" => MAX_CONNECTIONS.to_string(),
        "max_unacked_records" => MAX_UNACKED_RECORDS.to_string(),
        "max_tail_readers" => MAX_TAIL_READERS.to_string(),
        "stats_interval" => STATS_INTERVAL_SECS.to_string(),
        "shutdown_grace" => SHUTDOWN_GRACE_SECS.to_string(),
        "ping_interval" => PING_INTERVAL_SECS.to_string(),
        "log_format" => LOG_FORMAT.to_string(),
        "jwt_leeway" => JWT_LEEWAY_SECS.to_string(),
        "jwt_roles_claim" => JWT_ROLES_CLAIM.to_string(),
        "jwt_jwks_refresh" => JWT_JWKS_REFRESH_SECS.to_string(),
        "ticket_ttl" => TICKET_TTL_SECS.to_string(),
        "max_sessions_per_principal" | "produce_records_per_sec" | "produce_bytes_per_sec" => {
            NO_LIMIT.to_string()
        }
        "auth_failures_per_minute" => AUTH_FAILURES_PER_MINUTE.to_string(),
        "metrics_auth" => "false".to_string(),
        "config" | "partition" | "auth" | "kafka_property" | "tls_cert" | "tls_key"
        | "auth_file" | "users_file" | "tokens_file" | "jwt_jwks_file" | "jwt_jwks_url"
        | "jwt_secret_file" | "jwt_issuer" | "jwt_audience" | "jwt_grants_claim"
        | "tls_client_ca" | "tls_client_crl" | "allowed_origins" | "ticket_key_file" => {
            NONE.to_string()
        }
        _ => return None,
    })
}

/// Writes `(default X)` into an argument's help, before the trailing `[key]` so lines keep
/// the shape `meaning (default X) [key]`. Doc comments cannot interpolate consts, hence this
/// runs on the built command (see the `mut_args` on [`super::Cli`]).
pub(super) fn annotate(arg: clap::Arg) -> clap::Arg {
    let Some(default) = shown(arg.get_id().as_str()) else {
        return arg;
    };
    let with_default = |help: String| match help.rfind(" [") {
        Some(i) => format!("{} (default {default}){}", &help[..i], &help[i..]),
        None => format!("{help} (default {default})"),
    };
    let help = arg.get_help().map(|h| with_default(h.to_string()));
    let long = arg.get_long_help().map(|h| with_default(h.to_string()));
    let arg = match help {
        Some(h) => arg.help(h),
        None => arg,
    };
    match long {
        Some(h) => arg.long_help(h),
        None => arg,
    }
}
