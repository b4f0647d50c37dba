#!/usr/bin/env bash
# Runs Rapport's whole test suite against real PostgreSQL and real gRPC clients.
#
# Installs what is missing first (scripts/bootstrap.sh: the PostgreSQL server,
# grpcurl, buf), starts one throwaway PostgreSQL cluster for the whole run (or
# uses RAPPORT_TEST_DATABASE_URL when set), and runs every test of the
# workspace with cargo-nextest when installed, else cargo test.
# Extra arguments go to the test runner, e.g. `scripts/test.sh -p rapport-kit`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh
export PATH="$root/.tools/bin:$PATH"
target="${CARGO_TARGET_DIR:-$root/target}"

if [ -z "${RAPPORT_TEST_DATABASE_URL:-}" ]; then
  cargo build --quiet -p rapport-testkit --bin rapport-test-postgres
  work="$(mktemp -d)"
  mkfifo "$work/hold"
  "$target/debug/rapport-test-postgres" <"$work/hold" >"$work/url" &
  pg_pid=$!
  exec 3>"$work/hold"
  cleanup() {
    exec 3>&-
    wait "$pg_pid" 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  for _ in $(seq 1 600); do
    [ -s "$work/url" ] && break
    kill -0 "$pg_pid" 2>/dev/null || { echo "test.sh: the throwaway PostgreSQL did not start" >&2; exit 1; }
    sleep 0.1
  done
  RAPPORT_TEST_DATABASE_URL="$(head -n1 "$work/url")"
  export RAPPORT_TEST_DATABASE_URL
  echo "test.sh: throwaway PostgreSQL at $RAPPORT_TEST_DATABASE_URL"
fi

# With no arguments, the whole workspace; otherwise what the arguments select.
scope=(--workspace)
[ $# -gt 0 ] && scope=()
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run "${scope[@]}" --no-fail-fast "$@"
else
  cargo test "${scope[@]}" --no-fail-fast "$@"
fi
