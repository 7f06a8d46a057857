//! Integration tests against a real Kafka broker (`scripts/kafka.sh start`) and real gateways
//! over loopback gRPC. One test binary, so the suite links once.

mod bad_input;
mod checkpoint;
mod filters;
mod fleet;
mod follow;
mod grpcurl;
mod handoff;
mod hardening;
mod http;
mod http_cache;
mod loading;
mod network;
mod observability;
mod point_in_time;
mod restart;
mod schemas;
mod security;
mod sharding;
mod subscriptions;
mod translators;

use tributary_testkit as harness;
