//! The grpcurl commands of `docs/grpcurl.md`, run as written against a live gateway (reflection,
//! health, describe, snapshot, subscribe, translators, named subscriptions), with only the
//! address, topic and subscription name swapped in.

use std::process::Command;

use crate::harness::*;

/// The page's address, demo topic and subscription name, replaced by the test's.
const DOC_ADDR: &str = "127.0.0.1:50051";
const DOC_TOPIC: &str = "media-assignments";
const DOC_SUBSCRIPTION: &str = "b-media";

fn grpcurl() -> String {
    if let Ok(path) = std::env::var("GRPCURL") {
        return path;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for candidate in ["grpcurl".to_string(), format!("{home}/go/bin/grpcurl")] {
        if Command::new(&candidate).arg("-version").output().is_ok() {
            return candidate;
        }
    }
    panic!("grpcurl is not installed: run .ci/run, or `go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4`");
}

/// Splits a documented command line into arguments, honouring single quotes.
fn split(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    args.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        args.push(current);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_grpcurl_commands_work() {
    let topic = unique_topic("grpcurl");
    create_topic(&topic, 3).await;
    // Shaped as the demo producer writes them: the page's filters select some of them.
    let records: Vec<Out> = (0..30)
        .map(|i| {
            let value = format!("{{\"id\":{i},\"status\":\"scheduled\"}}");
            Out {
                headers: vec![("source".into(), Some(b"system-a".to_vec()))],
                ..Out::kv(&format!("assignment/{i}"), Some(&value))
            }
        })
        .collect();
    produce(&topic, &records);
    let gateway = Gateway::start(&[&topic]).await;
    let subscription = unique_topic("b-media");
    // The page's translator examples use the identity translator.
    let mut registry = tributary_server::pb::translators_client::TranslatorsClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap(),
    );
    crate::translators::upload_bytes(&mut registry, "identity", &crate::translators::artifact("identity.wasm"))
        .await
        .unwrap();

    let page = std::fs::read_to_string(repo_root().join("docs/grpcurl.md")).unwrap();
    let commands: Vec<&str> = page.lines().filter(|l| l.starts_with("grpcurl ")).collect();
    assert!(commands.len() >= 6, "docs/grpcurl.md lists the grpcurl examples");
    let grpcurl = grpcurl();
    let mut seen = Vec::new();
    for line in commands {
        let line = line
            .replace(DOC_ADDR, &gateway.addr.to_string())
            .replace(DOC_TOPIC, &topic)
            .replace(&format!("\"{DOC_SUBSCRIPTION}\""), &format!("\"{subscription}\""));
        let args = split(&line);
        let output = Command::new(&grpcurl).args(&args[1..]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let streaming = args.iter().any(|a| a == "-max-time");
        if streaming {
            // A subscription never ends by itself: -max-time ends it with DeadlineExceeded.
            assert!(stderr.contains("DeadlineExceeded"), "{line}: {stderr}");
        } else {
            assert!(output.status.success(), "{line}: {stderr}");
        }
        let method = args.iter().rev().find(|a| !a.starts_with('-') && !a.starts_with('{')).unwrap().clone();
        match method.as_str() {
            m if m.ends_with("/Subscribe") => {
                assert!(stdout.contains("\"progress\""), "{line}: {stdout}");
                assert!(stdout.contains("\"records\""), "{line}: {stdout}");
            }
            m if m.ends_with("/GetSnapshot") => {
                assert!(stdout.contains("\"offsets\""), "{line}: {stdout}");
                assert!(stdout.contains("\"last\": true"), "{line}: {stdout}");
                if line.contains("as_of_offsets") {
                    // Partition 0 as of its offset 1: one entry of it at most, at offset 0.
                    assert!(stdout.contains("\"offset\": \"1\""), "{line}: {stdout}");
                    let first = stdout.split("\"offsets\"").nth(1).unwrap_or_default();
                    assert!(first.contains("\"partition\": 1"), "every partition's offset: {stdout}");
                }
                if line.contains("\"/id\"") {
                    // Entry keys are `assignment/…` (base64 `YXNzaWdubWVudC8…`); header keys are not.
                    let entries = stdout.matches("\"key\": \"YXNzaWdubWVudC8").count();
                    assert_eq!(entries, 3, "the filter selects ids 1, 2 and 3: {stdout}");
                }
            }
            m if m.ends_with("/DescribeTopics") => assert!(stdout.contains(&topic), "{line}: {stdout}"),
            // Without sharding this gateway serves every partition.
            m if m.ends_with("/GetTopology") => {
                assert!(stdout.contains(&topic), "{line}: {stdout}");
                assert_eq!(stdout.matches(&format!("\"owner\": \"{}\"", gateway.addr)).count(), 3, "{line}: {stdout}");
            }
            m if m.ends_with("/Check") => assert!(stdout.contains("SERVING"), "{line}: {stdout}"),
            m if m.ends_with("Translators/List") => assert!(stdout.contains("\"identity\""), "{line}: {stdout}"),
            m if m.ends_with("Subscriptions/Commit") || m.ends_with("Subscriptions/Describe") => {
                assert!(stdout.contains("\"committedOffset\": \"1\""), "{line}: {stdout}")
            }
            m if m.ends_with("Subscriptions/List") => assert!(stdout.contains(&subscription), "{line}: {stdout}"),
            m if m.ends_with("Subscriptions/Delete") => assert!(stdout.trim() == "{}", "{line}: {stdout}"),
            "list" => assert!(stdout.contains("tributary.v1.Gateway"), "{line}: {stdout}"),
            _ => assert!(stdout.contains("tributary.v1"), "{line}: {stdout}"),
        }
        seen.push(method);
    }
    let needed =
        ["list", "/DescribeTopics", "/GetSnapshot", "/Subscribe", "/GetTopology", "/Check", "Translators/List"];
    let subscriptions =
        ["Subscriptions/Commit", "Subscriptions/Describe", "Subscriptions/List", "Subscriptions/Delete"];
    for needed in needed.into_iter().chain(subscriptions) {
        assert!(
            seen.iter().any(|m| m.ends_with(needed)),
            "docs/grpcurl.md has a grpcurl example for {needed}: {seen:?}"
        );
    }
}
