#!/usr/bin/env bash
# Throw-away S3-compatible server for tests (moto by default).
#
#   scripts/s3-test.sh start   # starts it, writes $RUNDIR/s3.env, prints its path
#   scripts/s3-test.sh env     # prints the contents of $RUNDIR/s3.env
#   scripts/s3-test.sh status  # exit 0 if running
#   scripts/s3-test.sh stop    # kills it (pid file) and removes s3.env
#
# Typical use:  scripts/s3-test.sh start >/dev/null && . "$RUNDIR/s3.env"
#          or:  eval "$(scripts/s3-test.sh env)"
#
# s3.env contains:
#   export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 VIDHOST_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
# No buckets are created. Server output goes to $RUNDIR/s3.log.
set -euo pipefail

RUNDIR="${VIDHOST_TEST_RUNDIR:-/tmp/vidhost-test}"
PID_FILE="$RUNDIR/s3.pid"
ENV_FILE="$RUNDIR/s3.env"
LOG_FILE="$RUNDIR/s3.log"
# Which server to run. Extension point: add a start_server_<name> function
# (and an installer in scripts/install-deps.sh).
S3_SERVER="${VIDHOST_TEST_S3_SERVER:-moto}"

log() { printf '[s3-test] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- servers ---------------------------------------------------------------
# start_server_<name> PORT: exec the server in the foreground on 127.0.0.1:PORT
# (it is backgrounded, detached and logged by the caller).
start_server_moto() {
    local port="$1"
    if python3 -c 'import moto.server' >/dev/null 2>&1; then
        exec python3 -m moto.server -H 127.0.0.1 -p "$port"
    elif command -v moto_server >/dev/null 2>&1; then
        exec moto_server -H 127.0.0.1 -p "$port"
    else
        echo "moto not installed (run scripts/install-deps.sh)" >&2
        exit 127
    fi
}
# ---------------------------------------------------------------------------

read_pid() { [[ -f "$PID_FILE" ]] && cat "$PID_FILE" 2>/dev/null || true; }

answers() { # any HTTP response counts
    local code
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null || true)"
    [[ -n "$code" && "$code" != 000 ]]
}

# Running = pid alive AND the endpoint recorded in s3.env answers.
is_running() {
    local pid port
    pid="$(read_pid)"
    [[ -n "$pid" && -f "$ENV_FILE" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    port="$(sed -nE 's#.*VIDHOST_TEST_S3_ENDPOINT=http://127\.0\.0\.1:([0-9]+).*#\1#p' "$ENV_FILE")"
    [[ $port =~ ^[0-9]+$ ]] && answers "$port"
}

cmd_start() {
    declare -F "start_server_$S3_SERVER" >/dev/null || die "unknown S3 server '$S3_SERVER'"
    command -v curl >/dev/null 2>&1 || die "curl missing (run scripts/install-deps.sh)"
    if is_running; then
        log "already running"
        echo "$ENV_FILE"
        return 0
    fi
    if [[ -e "$PID_FILE" || -e "$ENV_FILE" ]]; then
        log "removing stale state"
        cmd_stop >/dev/null 2>&1 || true
    fi
    mkdir -p "$RUNDIR"

    local port pid attempt up
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        log "starting $S3_SERVER on 127.0.0.1:$port (attempt $attempt)"
        # setsid: own session/process group, detached from our terminal.
        # All fds redirected so `$(s3-test.sh start)` does not hang.
        setsid bash -c "$(declare -f "start_server_$S3_SERVER"); start_server_$S3_SERVER $port" \
            </dev/null >>"$LOG_FILE" 2>&1 &
        pid=$!
        echo "$pid" >"$PID_FILE"
        up=0
        for _ in $(seq 1 150); do # ~30s
            if ! kill -0 "$pid" 2>/dev/null; then break; fi
            if answers "$port"; then up=1; break; fi
            sleep 0.2
        done
        if (( up )); then
            echo "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 VIDHOST_TEST_S3_ENDPOINT=http://127.0.0.1:$port" \
                >"$ENV_FILE.tmp"
            mv "$ENV_FILE.tmp" "$ENV_FILE"
            log "ready: http://127.0.0.1:$port (pid $pid, log $LOG_FILE)"
            echo "$ENV_FILE"
            return 0
        fi
        log "server did not come up; last log lines:"
        tail -n 5 "$LOG_FILE" >&2 || true
        cmd_stop >/dev/null 2>&1 || true
    done
    die "could not start $S3_SERVER, see $LOG_FILE"
}

cmd_stop() {
    local pid
    pid="$(read_pid)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        log "stopping pid $pid"
        # setsid made pid a process-group leader: signal the whole group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f -- "$PID_FILE" "$ENV_FILE" "$ENV_FILE.tmp"
    log "stopped"
}

cmd_env() {
    [[ -f "$ENV_FILE" ]] || die "no running S3 test server ($ENV_FILE missing); run: $0 start"
    cat "$ENV_FILE"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    status) if is_running; then log "running: $(cat "$ENV_FILE")"; else log "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|env|status" >&2; exit 2 ;;
esac
