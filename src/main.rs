//! The `kafka-proxy` binary: parse config, init tracing, bind, run.

use std::collections::HashMap;

use kafka_proxy::config::{Config, LoadError, EXIT_CONFIG};
use kafka_proxy::KafkaProxy;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(&args, &env) {
        Ok(c) => c,
        Err(LoadError::Cli(e)) => {
            // --help and --version print and exit 0; usage errors exit 64.
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
        Err(LoadError::Config(e)) => {
            eprintln!("kafka-proxy: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAFKA_PROXY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal, so log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    if let Err(e) = KafkaProxy::new(config).listen().await {
        tracing::error!(error = %e, "kafka-proxy stopped");
        if matches!(
            e,
            kafka_proxy::ServerError::Bind { .. }
                | kafka_proxy::ServerError::Tls(_)
                | kafka_proxy::ServerError::Config(_)
                | kafka_proxy::ServerError::Access(_)
                | kafka_proxy::ServerError::Kafka(kafka_proxy::kafka::KafkaAdapterError::Config(_))
        ) {
            std::process::exit(EXIT_CONFIG);
        }
        return Err(e.into());
    }
    Ok(())
}
