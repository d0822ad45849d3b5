#!/usr/bin/env bash
# The one command that runs every test: installs what is missing, checks
# formatting and lints, then runs the whole suite twice — on the embedded
# default (SQLite + local disk) and on a real PostgreSQL server plus a real
# S3-compatible server process, both started here on loopback and stopped
# at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vidhost-target}"
export VIDHOST_TEST_RUNDIR="${VIDHOST_TEST_RUNDIR:-$(mktemp -d /tmp/vidhost-test.XXXXXX)}"
export RUST_BACKTRACE=0

step() { printf '\n==> %s\n' "$*"; }

step "installing missing tools"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building"
cargo build --workspace --all-targets --locked

step "tests on SQLite + local disk"
cargo nextest run --workspace --no-fail-fast

cleanup() {
    scripts/s3-test.sh stop >/dev/null 2>&1 || true
    scripts/pg-test.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "starting PostgreSQL and the S3 test server on loopback"
VIDHOST_TEST_PG_URL="$(scripts/pg-test.sh start)"
export VIDHOST_TEST_PG_URL
scripts/s3-test.sh start >/dev/null
# shellcheck disable=SC1091
source "$VIDHOST_TEST_RUNDIR/s3.env"

step "tests on PostgreSQL + S3 ($VIDHOST_TEST_S3_ENDPOINT)"
cargo nextest run -p vidhost --no-fail-fast
