//! The `tributary` command: `tributary serve` runs the gateway; `tributary translator ...` manages
//! the translators of a running gateway.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tributary_server::{
    config::{Config, KafkaOverrides, Overrides},
    logs,
};

mod allocator;
mod subscription;
mod translator;

#[derive(Parser)]
#[command(version, about = "A gRPC gateway that lets one system follow another system's state through Kafka")]
struct Cli {
    /// Log lines as text, or as one JSON object per line (with the event, span and call fields).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TRIBUTARY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for logs::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => logs::LogFormat::Text,
            LogFormat::Json => logs::LogFormat::Json,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// TOML configuration file; environment variables TRIBUTARY__SECTION__KEY override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides `listen`); port 0 picks a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Kafka bootstrap servers (overrides `kafka.bootstrap_servers`).
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// A topic to expose; repeat for more (overrides `kafka.topics`).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Manage the translators of a running gateway.
    Translator {
        #[command(flatten)]
        gateway: GatewayArgs,
        #[command(subcommand)]
        command: TranslatorCommand,
    },
    /// Manage the durable named subscriptions of a running gateway.
    Subscription {
        #[command(flatten)]
        gateway: GatewayArgs,
        #[command(subcommand)]
        command: SubscriptionCommand,
    },
    /// Compile one translator component (run by the gateway in a child process under its
    /// compile budget; not for people).
    #[command(name = "compile-translator", hide = true)]
    CompileTranslator { input: PathBuf, output: PathBuf },
}

/// How to reach a running gateway.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct GatewayArgs {
    /// The gateway's gRPC address (https:// for TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "TRIBUTARY_GATEWAY")]
    gateway: String,
    /// CA certificate (PEM) to trust for an https:// gateway.
    #[arg(long, env = "TRIBUTARY_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --key.
    #[arg(long, env = "TRIBUTARY_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS, with --cert.
    #[arg(long, env = "TRIBUTARY_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Bearer token sent on every call (`authorization: Bearer <token>`).
    #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum TranslatorCommand {
    /// Upload a WebAssembly component as a new version of NAME.
    Upload {
        name: String,
        /// The component (.wasm).
        file: PathBuf,
    },
    /// List translators and their versions.
    List,
    /// Show one translator's versions.
    Describe { name: String },
    /// Delete a translator, or one version of it with --digest.
    Delete {
        name: String,
        #[arg(long)]
        digest: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum SubscriptionCommand {
    /// List subscriptions with their committed positions and lag.
    List,
    /// Show one subscription.
    Describe { name: String },
    /// Commit a position: the next offset to deliver per partition, as TOPIC:PARTITION=OFFSET.
    Commit {
        name: String,
        #[arg(required = true)]
        positions: Vec<String>,
    },
    /// Delete a subscription (its consumer group).
    Delete { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format.into();
    if !matches!(cli.command, Command::Serve { .. }) {
        // The gateway sets up its logging once its configuration (span export) is known.
        if let Err(e) = logs::init(format, None) {
            eprintln!("tributary: {e}");
        }
    }
    match cli.command {
        Command::Serve { config, listen, bootstrap_servers, topics } => {
            let overrides = Overrides {
                listen,
                kafka: KafkaOverrides { bootstrap_servers, topics: (!topics.is_empty()).then_some(topics) },
            };
            let config = match Config::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tributary: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let served = runtime.block_on(async {
                // Inside the runtime: the span exporter's gRPC channel runs on it.
                let _tracing = logs::init(format, Some(&config.tracing))?;
                serve(config).await
            });
            // The drain is over: blocking work still running (a compile, a Kafka request that
            // waits for its timeout) must not hold the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tributary: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CompileTranslator { input, output } => {
            ExitCode::from(tributary_server::compile_translator(&input, &output) as u8)
        }
        Command::Translator { gateway, command } => client(translator::run(gateway, command)),
        Command::Subscription { gateway, command } => client(subscription::run(gateway, command)),
    }
}

/// Runs a client command.
fn client(command: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tributary: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (set `listen` or --listen)", config.listen))?;
    // One line on stdout with the bound address, for scripts and tests that use port 0.
    println!("listening on {}", listener.local_addr()?);
    tributary_server::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
