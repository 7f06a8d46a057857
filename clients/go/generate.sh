#!/usr/bin/env bash
# Regenerates the Go code of proto/tributary/v1/*.proto into tributaryv1/ (or into $1).
#
#   clients/go/generate.sh [OUT_DIR]
#
# The generator plugins are installed with `go install` at pinned versions into clients/go/.bin.
# The M mappings restate the proto files' own go_package (this module's tributaryv1 package), so
# the generated code does not depend on how protoc resolves it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
protos=$(cd "$here/../../proto" && pwd)
out=${1:-$here/tributaryv1}

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
module=github.com/tributary/tributary/clients/go
package=$module/tributaryv1

bin=$here/.bin
install_plugin() {
  local name=$1 pkg=$2 version=$3 stamp
  stamp=$bin/$name.$version
  if [[ ! -x $bin/$name || ! -f $stamp ]]; then
    mkdir -p "$bin"
    GOBIN=$bin go install "$pkg@$version"
    rm -f "$bin/$name".v*
    touch "$stamp"
  fi
}
install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

protoc_bin=${PROTOC:-protoc}
mkdir -p "$out"
rm -f "$out"/*.pb.go
files=()
mappings=()
for f in "$protos"/tributary/v1/*.proto; do
  rel=${f#"$protos"/}
  files+=("$rel")
  mappings+=("--go_opt=M$rel=$package;tributaryv1" "--go-grpc_opt=M$rel=$package;tributaryv1")
done
(
  cd "$protos"
  PATH=$bin:$PATH "$protoc_bin" -I . \
    --go_out="$out" --go_opt=paths=source_relative \
    --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
    "${mappings[@]}" "${files[@]}"
)
# paths=source_relative writes tributary/v1/*.pb.go: flatten into the package directory.
mv "$out"/tributary/v1/*.pb.go "$out"/
rm -rf "$out/tributary"
