//! The `tributary` command: `tributary serve` runs the gateway.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tributary::config::{Config, KafkaOverrides, Overrides};

#[derive(Parser)]
#[command(version, about = "A gRPC gateway that lets one system follow another system's state through Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// The gateway's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:50051", env = "TRIBUTARY_GATEWAY")]
        gateway: String,
        #[command(subcommand)]
        command: TranslatorCommand,
    },
}

#[derive(Subcommand)]
enum TranslatorCommand {
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tributary: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Translator { gateway, command } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(cli::translator(gateway, command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tributary: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The `tributary translator` client commands.
mod cli {
    use std::time::Duration;

    use indicatif::{ProgressBar, ProgressStyle};
    use tonic::Code;
    use tributary::pb::{self, translators_client::TranslatorsClient};

    use super::TranslatorCommand;

    /// Upload chunk size: well under the gateway's 4 MiB request limit.
    const CHUNK: usize = 1 << 20;

    pub async fn translator(gateway: String, command: TranslatorCommand) -> Result<(), String> {
        let channel = tonic::transport::Endpoint::from_shared(gateway.clone())
            .map_err(|e| format!("bad gateway address {gateway}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("cannot reach the gateway at {gateway}: {e}"))?;
        let mut client = TranslatorsClient::new(channel);
        let status = |s: tonic::Status| match s.code() {
            Code::Unavailable => format!("the gateway is unavailable: {}", s.message()),
            code => format!("{}: {}", code.description(), s.message()),
        };
        match command {
            TranslatorCommand::Upload { name, file } => {
                let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let size = bytes.len() as u64;
                let sha256 = tributary::registry::sha256_hex(&bytes);
                let bar = ProgressBar::new(size);
                bar.set_style(
                    ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
                        .expect("template")
                        .progress_chars("=> "),
                );
                bar.set_message(format!("uploading {name}"));
                let header = pb::UploadTranslatorRequest {
                    part: Some(pb::upload_translator_request::Part::Header(pb::UploadHeader { name, size, sha256 })),
                };
                let progress = bar.clone();
                let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
                let messages = std::iter::once(header).chain(chunks.into_iter().map(move |chunk| {
                    progress.inc(chunk.len() as u64);
                    pb::UploadTranslatorRequest { part: Some(pb::upload_translator_request::Part::Chunk(chunk.into())) }
                }));
                bar.set_message("uploading");
                let result = client.upload(tokio_stream::iter(messages)).await;
                bar.finish_and_clear();
                let v = result.map_err(status)?.into_inner();
                println!("uploaded {} version {} digest {} ({} bytes)", v.name, v.version, v.digest, v.size);
            }
            TranslatorCommand::List => {
                let list = client.list(pb::ListTranslatorsRequest {}).await.map_err(status)?.into_inner();
                if list.translators.is_empty() {
                    println!("no translators");
                }
                for t in list.translators {
                    let latest = t.versions.last().cloned().unwrap_or_default();
                    println!(
                        "{}\tversions {}\tlatest {}\t{} bytes",
                        t.name,
                        t.versions.len(),
                        latest.digest,
                        latest.size
                    );
                }
            }
            TranslatorCommand::Describe { name } => {
                let t = client.describe(pb::DescribeTranslatorRequest { name }).await.map_err(status)?.into_inner();
                println!("{}", t.name);
                for v in t.versions {
                    println!(
                        "  version {}\t{}\t{} bytes\tuploaded at {} ms",
                        v.version, v.digest, v.size, v.uploaded_at_ms
                    );
                }
            }
            TranslatorCommand::Delete { name, digest } => {
                let request = pb::DeleteTranslatorRequest { name, digest: digest.unwrap_or_default() };
                let deleted = client.delete(request).await.map_err(status)?.into_inner();
                for v in deleted.deleted {
                    println!("deleted {} version {} {}", v.name, v.version, v.digest);
                }
            }
        }
        Ok(())
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e} (set `listen` or --listen)", config.listen))?;
    // One line on stdout with the bound address, for scripts and tests that use port 0.
    println!("listening on {}", listener.local_addr()?);
    tributary::server::serve(config, listener, shutdown_signal()).await?;
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
