#!/usr/bin/env bash
# Throw-away Garage (a real S3-compatible store that verifies SigV4
# signatures, presigned URLs included) on loopback, for the test suite.
#
#   scripts/s3-test.sh start   # starts it, writes $RUNDIR/s3.env, prints its path
#   scripts/s3-test.sh env     # prints $RUNDIR/s3.env
#   scripts/s3-test.sh stop    # stops it and removes its data
#
# s3.env exports AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and
# VIDHOST_TEST_S3_ENDPOINT. The key may create buckets (each test makes its own).
set -euo pipefail

RUNDIR="${VIDHOST_TEST_RUNDIR:-/tmp/vidhost-test}"
DIR="$RUNDIR/garage"
PID_FILE="$RUNDIR/s3.pid"
ENV_FILE="$RUNDIR/s3.env"
LOG_FILE="$RUNDIR/s3.log"
GARAGE="${VIDHOST_GARAGE_BIN:-$HOME/.cache/vidhost-tools/bin/garage}"
KEY_ID="GK0123456789abcdef01234567"
SECRET="$(printf 'vidhost-test-secret-%.0s' 1 2 3 4 | sha256sum | cut -c1-64)"

log() { printf '[s3-test] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
g() { "$GARAGE" -c "$DIR/garage.toml" "$@"; }

cmd_stop() {
    if [[ -f "$PID_FILE" ]]; then
        local pid
        pid="$(cat "$PID_FILE")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf -- "$DIR" "$PID_FILE" "$ENV_FILE"
}

# Starts one server on fresh ports; sets API and NODE_ID. Fails (so the caller
# can try again on other ports) if it exits or its RPC port never answers.
launch() {
    cmd_stop
    mkdir -p "$DIR/meta" "$DIR/data"
    local rpc
    API="$(free_port)"
    rpc="$(free_port)"
    cat >"$DIR/garage.toml" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(printf 'rpc%.0s' 1 | sha256sum | cut -c1-64)"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$API"
root_domain = ".s3.localhost"
TOML
    setsid "$GARAGE" -c "$DIR/garage.toml" server </dev/null >>"$LOG_FILE" 2>&1 &
    local pid=$!
    echo "$pid" >"$PID_FILE"
    # `node id` only reads (or makes) the key file, so it answers before the
    # server listens; wait until the RPC port answers `status` too, or the
    # layout commands race the server's start (CI once failed exactly so).
    NODE_ID=""
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        if [[ -z "$NODE_ID" ]]; then
            NODE_ID="$(g node id -q 2>/dev/null | cut -d@ -f1)" || NODE_ID=""
        fi
        if [[ -n "$NODE_ID" ]] && g status >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    tail -n 20 "$LOG_FILE" >&2 || true
    return 1
}

cmd_start() {
    [[ -x "$GARAGE" ]] || die "garage not installed at $GARAGE (run scripts/install-deps.sh)"
    local attempt ok=0
    for attempt in 1 2 3; do
        log "starting garage (attempt $attempt)"
        if launch; then ok=1; break; fi
    done
    [[ "$ok" == 1 ]] || { cmd_stop; die "garage did not start; see $LOG_FILE"; }
    local id="$NODE_ID" api="$API"
    g layout assign -z dc1 -c 1G "$id" >/dev/null
    g layout apply --version 1 >/dev/null
    g key import --yes -n vidhost-test "$KEY_ID" "$SECRET" >/dev/null
    g key allow --create-bucket vidhost-test >/dev/null
    for _ in $(seq 1 100); do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api/" || true)"
        [[ "$code" != 000 && -n "$code" ]] && break
        sleep 0.2
    done
    echo "export AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1 VIDHOST_TEST_S3_ENDPOINT=http://127.0.0.1:$api" >"$ENV_FILE"
    log "garage ready on http://127.0.0.1:$api"
    echo "$ENV_FILE"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cat "$ENV_FILE" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
