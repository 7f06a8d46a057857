#!/usr/bin/env bash
# Makes a local CA, a server certificate and client certificates for trying TLS and mutual TLS.
#
#   scripts/certs.sh DIR [CLIENT...]
#
# DIR/ca.pem, ca.key             the CA (trust it on clients: grpcurl -cacert DIR/ca.pem)
# DIR/server.pem, server.key     for tls.cert_file / tls.key_file; valid for localhost and 127.0.0.1
# DIR/<client>.pem, <client>.key a client certificate whose subject CN is <client> (its identity)
#
# For trying things only: the keys are unencrypted and the CA is valid for 30 days.
set -euo pipefail
dir=${1:?usage: scripts/certs.sh DIR [CLIENT...]}
shift
mkdir -p "$dir"
cd "$dir"
days=30

if [[ ! -f ca.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "/CN=Tributary local CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# sign NAME EXTENSIONS: a key and a certificate for NAME signed by the CA.
sign() {
  local name=$1 ext=$2
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  printf '%b' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

sign server "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
for client in "$@"; do
  sign "$client" "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
done
echo "certs.sh: CA, server and ${*:-no} client certificates in $(pwd)"
