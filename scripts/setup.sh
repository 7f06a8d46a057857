#!/usr/bin/env bash
# Installs what building and running Tributary needs and a fresh machine may lack; fast when
# everything is there. Used by scripts/demo.sh and .ci/run.
set -euo pipefail

step() { printf '==> %s\n' "$*" >&2; }

# Debian packages: protoc for the gRPC code generation, cmake and the curl/zlib/OpenSSL headers
# for librdkafka (built from source by rdkafka's cmake-build, with SSL and SASL SCRAM), Java and Maven for Kafka, shellcheck for
# the scripts, openssl for scripts/certs.sh (TLS tests), chromium for the browser test of the HTTP log
# (clients/typescript) and nginx-light for its test behind a real HTTP cache; g++ for libFuzzer
# (scripts/fuzz.sh).
packages=(protobuf-compiler g++ cmake libcurl4-openssl-dev zlib1g-dev libssl-dev pkg-config openjdk-17-jre-headless maven shellcheck openssl chromium nginx-light)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  step "apt-get install ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# grpcurl, for debugging and for the test of the grpcurl commands in docs/grpcurl.md.
if ! command -v grpcurl >/dev/null && ! [ -x "$(go env GOPATH 2>/dev/null)/bin/grpcurl" ]; then
  if command -v go >/dev/null; then
    step "go install grpcurl"
    go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
  else
    echo "note: Go is missing, so grpcurl is not installed; the grpcurl test will fail" >&2
  fi
fi

# buf, for `buf lint` and `buf breaking` on proto/ (pinned; built once per machine into GOPATH).
readonly BUF_VERSION=v1.75.0
gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
if ! "$gobin/buf" --version 2>/dev/null | grep -qx "${BUF_VERSION#v}"; then
  if command -v go >/dev/null; then
    step "go install buf $BUF_VERSION"
    go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
  else
    echo "note: Go is missing, so buf is not installed; the proto checks will fail" >&2
  fi
fi

# The schema registry the Schema Registry tests decode against (Apicurio Registry, from Maven
# Central; it needs a Java 21+, which scripts/registry.sh finds in /usr/lib/jvm).
scripts/registry.sh install >/dev/null
