//! The `tributary translator` commands: a gRPC client of the gateway's Translators service.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tonic::Code;
use tributary_client::{pb, Client};

use super::{GatewayArgs, TranslatorCommand};

/// Upload chunk size: well under the gateway's 4 MiB request limit.
const CHUNK: usize = 1 << 20;

/// A client of the gateway, over TLS for an https:// address, with the bearer token if given.
pub async fn connect(args: &GatewayArgs) -> Result<Client, String> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut builder = Client::builder(args.gateway.clone()).connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &args.ca_cert {
        builder = builder.ca_pem(read(ca)?);
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        builder = builder.identity(read(cert)?, read(key)?);
    }
    if let Some(token) = &args.token {
        builder = builder.token(token.clone());
    }
    builder.connect().await.map_err(|e| e.message)
}

/// A failed call, for people.
pub fn status(s: tonic::Status) -> String {
    match s.code() {
        Code::Unavailable => format!("the gateway is unavailable: {}", s.message()),
        code => format!("{}: {}", code.description(), s.message()),
    }
}

pub async fn run(gateway: GatewayArgs, command: TranslatorCommand) -> Result<(), String> {
    let mut client = connect(&gateway).await?.translators;
    match command {
        TranslatorCommand::Upload { name, file } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let size = bytes.len() as u64;
            let sha256 = tributary_server::sha256_hex(&bytes);
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
                println!("{}\tversions {}\tlatest {}\t{} bytes", t.name, t.versions.len(), latest.digest, latest.size);
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
