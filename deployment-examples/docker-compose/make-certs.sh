#!/bin/sh
# Makes a local CA and a server certificate for the compose layout's TLS ports.
#
#   ./make-certs.sh [DIR]          # default: ./certs beside this script
#
# Writes DIR/ca.pem (give it to Bazel: --tls_certificate=DIR/ca.pem), DIR/ca.key (keep it
# private; it signs the server certificate), DIR/server.pem and DIR/server.key. The server
# certificate names localhost, 127.0.0.1, cas and scheduler, plus every name in
# APUS_CERT_NAMES (space-separated DNS names, e.g. "build.example.com") — add the name
# clients use to reach this host. Existing files are kept unless FORCE=1.
set -eu

dir=${1:-"$(dirname "$0")/certs"}
days=${APUS_CERT_DAYS:-365}
mkdir -p "$dir"
cd "$dir"

if [ -f server.pem ] && [ "${FORCE:-0}" != 1 ]; then
  echo "make-certs.sh: $dir/server.pem exists (FORCE=1 to replace it)"
  exit 0
fi

umask 077
if [ ! -f ca.pem ] || [ "${FORCE:-0}" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout ca.key -out ca.pem -subj "/CN=Apus compose CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
fi

san="DNS:localhost,IP:127.0.0.1,DNS:cas,DNS:scheduler"
for name in ${APUS_CERT_NAMES:-}; do
  san="$san,DNS:$name"
done
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
  -out server.csr -subj "/CN=apus" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
  -out server.pem -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl

# The containers run as uid 10001, not as you, and read the key through a bind mount: it is
# left readable by all (0644). On a host others log in to, use instead
# `sudo chown 10001 server.key && sudo chmod 600 server.key`. The CA key stays 0600.
chmod 0644 ca.pem server.pem server.key
chmod 0600 ca.key
chmod 0755 .
echo "make-certs.sh: wrote $(pwd)/ca.pem, server.pem, server.key (names: $san)"
