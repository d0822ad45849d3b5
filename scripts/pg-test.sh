#!/usr/bin/env bash
# Throw-away PostgreSQL cluster for tests.
#
#   scripts/pg-test.sh start   # prints postgres://postgres@127.0.0.1:PORT/vidhost_test
#   scripts/pg-test.sh url     # prints the URL of the running cluster
#   scripts/pg-test.sh status  # exit 0 if running
#   scripts/pg-test.sh stop    # stops it (-m immediate) and deletes everything
#
# Typical use:  export DATABASE_URL="$(scripts/pg-test.sh start)"
#
# Only the URL goes to stdout; progress goes to stderr.
# State lives in ${VIDHOST_TEST_RUNDIR:-/tmp/vidhost-test}/pg (+ pg.url there).
# When run as root, initdb/postgres run as the `postgres` user (created if
# missing), so RUNDIR must be traversable by that user (/tmp is fine).
set -euo pipefail

RUNDIR="${VIDHOST_TEST_RUNDIR:-/tmp/vidhost-test}"
PGROOT="$RUNDIR/pg"
PGDATA_DIR="$PGROOT/data"
PGLOG="$PGROOT/postgres.log"
URL_FILE="$RUNDIR/pg.url"
SOCK_FILE="$PGROOT/sockdir" # records the unix socket dir if outside PGROOT
DB_NAME="vidhost_test"
MAX_CONN="${VIDHOST_TEST_PG_MAX_CONNECTIONS:-200}"

log() { printf '[pg-test] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
is_root() { [[ $(id -u) == 0 ]]; }

find_bindir() {
    local d best=""
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "$d" && -x "$d/initdb" && -x "$d/postgres" && -x "$d/pg_ctl" ]]; then
            echo "$d"; return 0
        fi
    fi
    # newest /usr/lib/postgresql/<ver>/bin
    for d in $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V); do
        [[ -x "$d/initdb" && -x "$d/postgres" && -x "$d/pg_ctl" ]] && best="$d"
    done
    [[ -n "$best" ]] || die "PostgreSQL server binaries not found (run scripts/install-deps.sh)"
    echo "$best"
}

# Run a command as the cluster owner. Always from inside PGROOT so that a cwd
# unreadable by `postgres` (e.g. /root) does not break initdb/pg_ctl.
as_pg() {
    if is_root; then
        (cd "$PGROOT" && runuser -u postgres -- "$@")
    else
        (cd "$PGROOT" && "$@")
    fi
}

ensure_pg_user() {
    is_root || return 0
    if ! id -u postgres >/dev/null 2>&1; then
        log "creating system user 'postgres'"
        useradd --system --user-group --no-create-home \
            --home-dir /var/lib/postgresql --shell /bin/sh postgres
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Running = pg_ctl sees a live postmaster AND it accepts connections on the
# recorded port (a crashed/zombie postmaster can fool `pg_ctl status`).
is_running() {
    [[ -f "$PGDATA_DIR/PG_VERSION" && -f "$URL_FILE" ]] || return 1
    local bindir port
    bindir="$(find_bindir)"
    as_pg "$bindir/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1 || return 1
    port="$(sed -E 's#^.*:([0-9]+)/.*$#\1#' "$URL_FILE")"
    [[ $port =~ ^[0-9]+$ ]] || return 1
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5
}

cmd_start() {
    if is_running; then
        log "already running"
        cat "$URL_FILE"
        return 0
    fi
    # Stale leftovers (crashed run, reboot, ...): wipe and start fresh.
    if [[ -e "$PGROOT" || -e "$URL_FILE" ]]; then
        log "removing stale state in $PGROOT"
        cmd_stop >/dev/null 2>&1 || true
    fi

    local bindir; bindir="$(find_bindir)"
    ensure_pg_user
    mkdir -p "$RUNDIR"
    chmod 755 "$RUNDIR" 2>/dev/null || true
    mkdir -p "$PGROOT"
    if is_root; then chown postgres: "$PGROOT"; fi
    chmod 700 "$PGROOT"
    if is_root && ! runuser -u postgres -- test -w "$PGROOT"; then
        die "user 'postgres' cannot access $PGROOT; set VIDHOST_TEST_RUNDIR to a dir under /tmp"
    fi

    # Unix socket path is limited to ~107 bytes; fall back to a short dir.
    local sockdir="$PGROOT"
    if (( ${#sockdir} > 80 )); then
        sockdir="$(mktemp -d /tmp/vidhost-pgsock.XXXXXX)"
        if is_root; then chown postgres: "$sockdir"; fi
        echo "$sockdir" >"$SOCK_FILE"
    fi

    log "initdb ($bindir) in $PGDATA_DIR"
    as_pg "$bindir/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust \
        -E UTF8 --locale=C --no-sync >"$PGROOT/initdb.log" 2>&1 \
        || { cat "$PGROOT/initdb.log" >&2; die "initdb failed"; }

    cat >"$PGDATA_DIR/pg_hba.conf" <<'EOF'
# vidhost throw-away test cluster: trust, loopback only
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
EOF
    cat >>"$PGDATA_DIR/postgresql.conf" <<EOF

# --- vidhost test settings ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
max_connections = $MAX_CONN
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
    if is_root; then chown postgres: "$PGDATA_DIR/pg_hba.conf" "$PGDATA_DIR/postgresql.conf"; fi

    # The free port may be grabbed by someone else before postgres binds it;
    # retry a few times with a new one.
    local port attempt ok=0
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        log "starting postgres on 127.0.0.1:$port (attempt $attempt)"
        if as_pg "$bindir/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -w -t 60 \
                -o "-p $port" start >/dev/null 2>&1; then
            ok=1; break
        fi
        tail -n 5 "$PGLOG" >&2 2>/dev/null || true
        as_pg "$bindir/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
    done
    (( ok )) || die "postgres failed to start, see $PGLOG"

    as_pg "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME" >/dev/null \
        || die "CREATE DATABASE failed"

    local url="postgres://postgres@127.0.0.1:$port/$DB_NAME"
    echo "$url" >"$URL_FILE.tmp" && mv "$URL_FILE.tmp" "$URL_FILE"
    log "ready: $url"
    echo "$url"
}

cmd_stop() {
    if [[ -f "$PGDATA_DIR/PG_VERSION" ]]; then
        local bindir; bindir="$(find_bindir)"
        if as_pg "$bindir/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
            log "stopping postgres"
            as_pg "$bindir/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    fi
    if [[ -f "$SOCK_FILE" ]]; then
        local s; s="$(cat "$SOCK_FILE")"
        [[ $s == /tmp/vidhost-pgsock.* ]] && rm -rf -- "$s"
    fi
    rm -rf -- "$PGROOT" "$URL_FILE"
    log "stopped"
}

cmd_url() {
    [[ -f "$URL_FILE" ]] || die "no running test cluster ($URL_FILE missing); run: $0 start"
    cat "$URL_FILE"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    url) cmd_url ;;
    status) if is_running; then log "running: $(cat "$URL_FILE" 2>/dev/null)"; else log "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|url|status" >&2; exit 2 ;;
esac
