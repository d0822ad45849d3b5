#!/usr/bin/env bash
# vidhost benchmark suite — runs every measurement side by side in one go,
# prints a summary table (numbers and ratios) and writes bench/results/latest.md
# (+ latest.jsonl with the raw numbers and latest.log with the raw tool output).
#
#   (a) 1 GiB multipart upload, 8 parts in flight   vs  dd … conv=fsync of the same file
#   (b) the server's peak RSS during (a)
#   (c) random 1 MiB / 64 KiB byte ranges of /play/{token}/original  vs  nginx (sendfile on)
#   (d) POST /api/v1/uploads/multipart  vs  GET /healthz, 10 connections, SQLite and PostgreSQL
#       (and GET /api/v1/me, the same auth without the write, for reference)
#
# It starts and stops everything itself (vidhost, nginx, a throw-away
# PostgreSQL via scripts/pg-test.sh), all on 127.0.0.1, and removes its temp
# files. Every load loop is bounded in time (-d) and in count (a cap per wrk
# thread). Takes ~4-5 minutes.
#
# Environment knobs (all optional):
#   VIDHOST_BIN          the binary   (default /root/.cache/vidhost-target/release/vidhost)
#   BENCH_PART_SIZES     (a) is run once per value; "default" = the server's own
#                        part size (min 8 MiB), a number sets
#                        VIDHOST_UPLOADS__MIN_PART_SIZE_BYTES  (default "default 67108864")
#   BENCH_UPLOAD_BYTES   size of the (a) file        (default 1073741824)
#   BENCH_RANGE_BYTES    size of the (c) file        (default 268435456)
#   BENCH_RANGE_SECONDS  wrk -d for (c)              (default 15)
#   BENCH_RANGE_ROUNDS   interleaved vidhost/nginx rounds in (c), averaged (default 2)
#   BENCH_API_SECONDS    wrk -d for (d)              (default 10)
#   BENCH_CREATE_SIZE    declared size in (d)        (default 10485760)
#   BENCH_SKIP_PG=1      skip the PostgreSQL half of (d)
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VIDHOST="${VIDHOST_BIN:-/root/.cache/vidhost-target/release/vidhost}"
PART_SIZES="${BENCH_PART_SIZES:-default 67108864}"
UPLOAD_BYTES="${BENCH_UPLOAD_BYTES:-1073741824}"
RANGE_BYTES="${BENCH_RANGE_BYTES:-268435456}"
RANGE_SECONDS="${BENCH_RANGE_SECONDS:-15}"
RANGE_ROUNDS="${BENCH_RANGE_ROUNDS:-2}"
API_SECONDS="${BENCH_API_SECONDS:-10}"
CREATE_SIZE="${BENCH_CREATE_SIZE:-10485760}"
ADMIN_EMAIL="bench@example.com"
ADMIN_PASSWORD="correct horse battery staple 42"
export BENCH_LUA="$BENCH/lua"

T_START=$(date +%s.%N)
WORK="$(mktemp -d /tmp/vidhost-bench.XXXXXX)"
PGRUN="" # throw-away PostgreSQL state (its own dir: must be traversable by `postgres`)
RESULTS="$WORK/results.jsonl"
RAWLOG="$WORK/raw.log"
SRV_PID="" SRV_URL="" SRV_NAME="" NGINX_PID=""
DB_PID="" # our PostgreSQL's postmaster while (d) runs on it: its CPU is reported too
mkdir -p "$BENCH/results"
: >"$RESULTS"

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
record() { echo "$1" >>"$RESULTS"; }   # one JSON object per line
jget() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# ---- process management -------------------------------------------------

stop_pid() { # stop_pid PID: TERM, up to 10 s, then KILL
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    stop_pid "$SRV_PID"
    stop_pid "$NGINX_PID"
    if [[ -n $PGRUN ]]; then
        VIDHOST_TEST_RUNDIR="$PGRUN" "$ROOT/scripts/pg-test.sh" stop >/dev/null 2>&1
        rm -rf -- "$PGRUN"
    fi
    [[ -f $RAWLOG ]] && cp "$RAWLOG" "$BENCH/results/latest.log"
    rm -rf -- "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME DATA_DIR [VAR=VALUE...]: sets SRV_PID and SRV_URL.
# Runs from $WORK so that no ./vidhost.toml is picked up: built-in defaults,
# except the request rate limits, off as (d) asks (a load test from one
# address is what they exist to stop).
start_server() {
    local name=$1 dir=$2; shift 2
    local out="$WORK/$name.out"
    SRV_NAME=$name
    (cd "$WORK" && exec env VIDHOST_BOOTSTRAP_ADMIN_EMAIL="$ADMIN_EMAIL" \
        VIDHOST_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" VIDHOST_RATE_LIMITS__ENABLED=false "$@" \
        "$VIDHOST" serve --listen 127.0.0.1:0 --data-dir "$dir") >"$out" 2>"$WORK/$name.log" &
    SRV_PID=$!
    SRV_URL=""
    for _ in $(seq 300); do
        SRV_URL="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out" 2>/dev/null | head -n1 || true)"
        [[ -n $SRV_URL ]] && break
        kill -0 "$SRV_PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "vidhost ($name) exited"; }
        sleep 0.1
    done
    [[ -n $SRV_URL ]] || die "vidhost ($name) did not start in 30 s"
    log "vidhost ($name) pid $SRV_PID at $SRV_URL"
}

stop_server() {
    stop_pid "$SRV_PID"
    { echo "== vidhost ($SRV_NAME) log"; cat "$WORK/$SRV_NAME.log"; } >>"$RAWLOG" 2>/dev/null || true
    SRV_PID=""
}

# CPU ticks (utime+stime) of some processes; cpu_ticks_sys: stime only
cpu_ticks() {
    local t=0 p v
    for p in "$@"; do
        v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
cpu_ticks_sys() {
    local t=0 p v
    for p in "$@"; do
        v=$(awk '{print $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
# "busy iowait total irq+softirq" jiffies of all CPUs together (/proc/stat)
sys_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, $6, t, $7 + $8; exit }' /proc/stat; }
# wait_quiet: wait (at most 3 min) until the machine is nearly idle (< 15 %
# busy over 2 s), since other work on these 2 cores would skew every number
wait_quiet() {
    local a b busy waited=0
    while :; do
        a=$(sys_ticks); sleep 2; b=$(sys_ticks); waited=$((waited + 2))
        busy=$(awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[3] - x[3]; if (t <= 0) t = 1
            printf "%.0f", 100 * (y[1] - x[1]) / t }')
        ((busy < 15)) && break
        ((waited >= 180)) && { log "machine still ${busy}% busy after 3 min; going on anyway"; break; }
        ((waited % 20 == 0)) && log "waiting for a quiet machine (${busy}% busy)"
    done
    echo "$busy"
}
# CPU ticks of our PostgreSQL: the postmaster and its children (backends
# started during a run count from 0 at its start, so the union works)
db_ticks() {
    if [[ -z $DB_PID ]]; then echo 0; return; fi
    # shellcheck disable=SC2046
    cpu_ticks "$DB_PID" $(pgrep -P "$DB_PID")
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
avail_bytes() { df -B1 --output=avail "$1" | tail -n1 | tr -d ' '; }

# run_wrk KEY "PIDS" CAP_PER_THREAD WRK_ARGS... -- SCRIPT_ARGS...
# Runs wrk (time-bounded by -d, count-bounded by the Lua cap), records its
# BENCH line plus the CPU used by PIDS during the run (in % of one core).
run_wrk() {
    local key=$1 pids=$2 cap=$3; shift 3
    local c0 c1 k0 k1 d0 d1 t0 t1 s0 s1 out line cpu kcpu hz mach wrk_cpu
    hz=$(getconf CLK_TCK)
    # shellcheck disable=SC2086
    k0=$(cpu_ticks_sys $pids); c0=$(cpu_ticks $pids); d0=$(db_ticks); t0=$(date +%s.%N); s0=$(sys_ticks)
    # bash's `time` gives the CPU seconds of wrk itself (user, sys)
    out="$( { TIMEFORMAT='BENCHTIME %U %S'; time timeout 120 wrk "$@" "$cap"; } 2>&1)" \
        || die "wrk failed for $key: $out"
    # shellcheck disable=SC2086
    k1=$(cpu_ticks_sys $pids); c1=$(cpu_ticks $pids); d1=$(db_ticks); t1=$(date +%s.%N); s1=$(sys_ticks)
    wrk_cpu=$(awk '/^BENCHTIME/ { print $2 + $3 }' <<<"$out")
    printf '\n== %s: wrk %s\n%s\n' "$key" "$*" "$out" >>"$RAWLOG"
    line="$(grep '^BENCH ' <<<"$out" | head -n1 | cut -c7-)"
    [[ -n $line ]] || die "no BENCH line from wrk for $key: $out"
    cpu=$(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" -v hz="$hz" \
        'BEGIN { printf "%.1f", 100 * (b - a) / hz / (e - s) }')
    # whole machine: busy and iowait in % of all CPUs; interrupt work (mostly
    # the loopback network's softirqs, charged to no process) in % of one
    # core; and the CPU used by anything but the server, PostgreSQL, wrk and
    # interrupts ("other", in % of one core): a sign that something else on
    # the machine disturbed the run
    mach=$(awk -v a="$s0" -v b="$s1" -v srv="$((c1 - c0))" -v db="$((d1 - d0))" -v wrk="${wrk_cpu:-0}" \
        -v hz="$hz" -v s="$t0" -v e="$t1" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[3] - x[3]; if (t <= 0) t = 1
        if (db < 0) db = 0
        irq = y[4] - x[4]
        other = ((y[1] - x[1]) - irq - srv - db - wrk * hz) / hz / (e - s) * 100; if (other < 0) other = 0
        printf "\"machine_busy_pct\":%.1f,\"machine_iowait_pct\":%.1f,\"wrk_cpu_pct\":%.1f,\"db_cpu_pct\":%.1f,\"irq_cpu_pct\":%.1f,\"other_cpu_pct\":%.1f",
            100 * (y[1] - x[1]) / t, 100 * (y[2] - x[2]) / t, 100 * wrk / (e - s), 100 * db / hz / (e - s),
            100 * irq / hz / (e - s), other }')
    kcpu=$(awk -v a="$k0" -v b="$k1" -v s="$t0" -v e="$t1" -v hz="$hz" \
        'BEGIN { printf "%.1f", 100 * (b - a) / hz / (e - s) }')
    record "{\"key\":\"$key\",\"server_cpu_pct\":$cpu,\"server_sys_cpu_pct\":$kcpu,$mach,\"wrk\":$line}"
    log "$key: $(jget "$line" rps) req/s, p99 $(jget "$line" p99_ms) ms, non-2xx $(jget "$line" non2xx), socket errors $(jget "$line" socket_errors), server CPU ${cpu}% (kernel ${kcpu}%), $mach"
}

# ---- preflight --------------------------------------------------------------

[[ -x $VIDHOST ]] || die "no vidhost binary at $VIDHOST (build: CARGO_TARGET_DIR=/root/.cache/vidhost-target cargo build --release -p vidhost)"
for tool in wrk nginx ffmpeg python3 dd; do
    command -v "$tool" >/dev/null || [[ $tool == nginx && -x /usr/sbin/nginx ]] || die "$tool not found"
done
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
# run a private copy: the shared target dir may be rebuilt during the run
cp "$VIDHOST" "$WORK/vidhost"
VIDHOST_SRC="$VIDHOST" VIDHOST="$WORK/vidhost"
need=$((UPLOAD_BYTES * 3 + RANGE_BYTES * 2 + (8 << 30)))
(($(avail_bytes /tmp) > need)) || die "need ~$((need >> 30)) GiB free under /tmp"

record "$(python3 - "$VIDHOST_SRC" "$ROOT" <<'EOF'
import json, os, platform, subprocess, sys, time
rev = subprocess.run(["git", "-C", sys.argv[2], "rev-parse", "--short", "HEAD"],
                     capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "-C", sys.argv[2], "status", "--porcelain", "--", "crates"],
                       capture_output=True, text=True).stdout.strip()
nginx = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True).stderr.strip()
wrk = "wrk " + subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
print(json.dumps({"key": "meta", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
    "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    "git": rev + (" (+ uncommitted changes in crates/)" if dirty else ""),
    "binary": sys.argv[1], "binary_mtime": time.strftime("%Y-%m-%d %H:%M:%S",
        time.localtime(os.path.getmtime(sys.argv[1]))),
    "nginx": nginx.replace("nginx version: ", ""), "wrk": wrk,
    "loadavg": " ".join(open("/proc/loadavg").read().split()[:3])}))
EOF
)"

# ---- test files -------------------------------------------------------------
# A real 1 s MP4 (ffmpeg testsrc) followed by random bytes up to the exact size:
# the server checks the magic bytes at completion, nothing decodes the rest.
log "generating a $((UPLOAD_BYTES >> 20)) MiB and a $((RANGE_BYTES >> 20)) MiB test file"
ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=duration=1:size=320x240:rate=25 \
    -pix_fmt yuv420p -c:v libx264 -preset ultrafast "$WORK/head.mp4" \
    || ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=duration=1:size=320x240:rate=25 \
        -c:v mpeg4 "$WORK/head.mp4"
make_file() { # make_file PATH SIZE
    local head_size; head_size=$(stat -c %s "$WORK/head.mp4")
    { cat "$WORK/head.mp4"; head -c $(($2 - head_size)) /dev/urandom; } >"$1"
    [[ $(stat -c %s "$1") == "$2" ]] || die "could not create $1"
}
make_file "$WORK/upload.mp4" "$UPLOAD_BYTES"
make_file "$WORK/range.mp4" "$RANGE_BYTES"
sync

# ---- (a) + (b): multipart upload vs dd, peak RSS ------------------------------
# Per part-size setting: a fresh server on SQLite, then (on its data dir's disk)
#   1. dd if=<file> of=<data dir>/x bs=8M conv=fsync      — the disk's own speed
#   2. the upload (8 parts in flight), timed from creation to `complete`,
#      with the server's VmHWM reset right before and read right after.
DATA="$WORK/data-sqlite"
for ps in $PART_SIZES; do
    if [[ $ps == default ]]; then
        start_server "upload-default" "$DATA"
    else
        start_server "upload-$ps" "$DATA" VIDHOST_UPLOADS__MIN_PART_SIZE_BYTES="$ps"
    fi
    TOKEN="$(python3 "$BENCH/vhclient.py" login "$SRV_URL" "$ADMIN_EMAIL" "$ADMIN_PASSWORD")"

    sync
    quiet=$(wait_quiet)
    log "(a) machine quiet (${quiet}% busy)"
    log "(a) dd of the $((UPLOAD_BYTES >> 20)) MiB file into the data dir, conv=fsync"
    t0=$(date +%s.%N)
    dd if="$WORK/upload.mp4" of="$DATA/x" bs=8M conv=fsync 2>>"$RAWLOG"
    t1=$(date +%s.%N)
    rm -f "$DATA/x"
    sync
    dd_mbps=$(awk -v n="$UPLOAD_BYTES" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.1f", n / 1e6 / (e - s) }')
    log "(a) dd: $dd_mbps MB/s"

    log "(a) multipart upload, 8 parts in flight (part size: $ps)"
    up="$(python3 "$BENCH/vhclient.py" upload "$SRV_URL" "$TOKEN" "$WORK/upload.mp4" \
        --parallel 8 --pid "$SRV_PID")"
    record "{\"key\":\"upload\",\"part_setting\":\"$ps\",\"busy_before_pct\":$quiet,\"dd_mb_per_s\":$dd_mbps,\"upload\":$up}"
    log "(a) upload: $(jget "$up" mb_per_s) MB/s, $(jget "$up" part_count) parts of $(jget "$up" part_size) B, peak RSS $(jget "$up" peak_rss_kib) KiB, server CPU $(jget "$up" server_cpu_pct_of_core)%"
    # free the space: the stored 1 GiB is not needed any more
    curl -sf -X DELETE -H "authorization: Bearer $TOKEN" \
        "$SRV_URL/api/v1/videos/$(jget "$up" video_id)" >/dev/null || true
    stop_server
done

# ---- (c): random byte ranges, vidhost vs nginx on the same file ----------------
start_server "sqlite" "$DATA"
TOKEN="$(python3 "$BENCH/vhclient.py" login "$SRV_URL" "$ADMIN_EMAIL" "$ADMIN_PASSWORD")"
log "(c) uploading the $((RANGE_BYTES >> 20)) MiB file"
up="$(python3 "$BENCH/vhclient.py" upload "$SRV_URL" "$TOKEN" "$WORK/range.mp4" --parallel 8)"
VIDEO_ID="$(jget "$up" video_id)"
PLAY_PATH="$(python3 "$BENCH/vhclient.py" playback "$SRV_URL" "$TOKEN" "$VIDEO_ID")"
OBJECT="$DATA/objects/videos/$VIDEO_ID/original"
[[ -f $OBJECT ]] || die "stored object not found at $OBJECT"
cmp -s "$OBJECT" "$WORK/range.mp4" || die "stored object differs from the uploaded file"

# nginx: stock sendfile on / tcp_nopush off, worker_processes auto, its root
# is the server's objects directory, so both serve the very same file (and
# the same page cache). `user root` because the data dir is 0700.
NGX="$WORK/nginx"
mkdir -p "$NGX/tmp"
NGINX_PORT="$(free_port)"
cat >"$NGX/nginx.conf" <<EOF
user root;
worker_processes auto;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush off;
    default_type application/octet-stream;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $DATA/objects;
    }
}
EOF
"$NGINX_BIN" -e "$NGX/error.log" -p "$NGX" -c "$NGX/nginx.conf" &
NGINX_PID=$!
NGINX_URL="http://127.0.0.1:$NGINX_PORT/videos/$VIDEO_ID/original"
for _ in $(seq 100); do curl -sf -o /dev/null -r 0-0 "$NGINX_URL" && break; sleep 0.1; done
curl -sf -o /dev/null -r 0-0 "$NGINX_URL" || die "nginx does not serve $NGINX_URL"
NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | wc -l)
VIDHOST_URL="$SRV_URL$PLAY_PATH"
# both answer the same range the same way
for u in "$VIDHOST_URL" "$NGINX_URL"; do
    [[ $(curl -s -o /dev/null -w '%{http_code}:%{size_download}' -r 1000-2047 "$u") == 206:1048 ]] \
        || die "ranged GET of $u is not a 206 of 1048 bytes"
done
cat "$OBJECT" >/dev/null # warm the page cache for both
# requests the connection answered itself (fastpath.rs), from /metrics
quick_answers() {
    curl -sf "$SRV_URL/metrics" | awk '$1 == "vidhost_delivery_quick_answers_total" { printf "%d", $2; f = 1 } END { if (!f) print 0 }'
}
log "(c) machine quiet ($(wait_quiet)% busy)"
record "{\"key\":\"range_setup\",\"file_bytes\":$RANGE_BYTES,\"nginx_workers\":$NGINX_WORKERS}"

# Rounds alternate vidhost and nginx, so a disturbance of the shared machine
# is less likely to hit only one of them; the summary averages the rounds.
for chunk in 1048576 65536; do
    for round in $(seq "$RANGE_ROUNDS"); do
        for target in vidhost nginx; do
            if [[ $target == vidhost ]]; then url=$VIDHOST_URL pids=$SRV_PID; else url=$NGINX_URL pids=$NGINX_PIDS; fi
            log "(c) $target, random $((chunk >> 10)) KiB ranges, round $round: 2 s warm-up + ${RANGE_SECONDS} s"
            timeout 30 wrk -t2 -c64 -d2s -s "$BENCH_LUA/range.lua" "$url" -- "$RANGE_BYTES" "$chunk" 200000 >/dev/null
            if [[ $target == vidhost ]]; then q0=$(quick_answers); fi
            run_wrk "range_${chunk}_${target}_r$round" "$pids" 2000000 \
                -t2 -c64 -d"${RANGE_SECONDS}s" --timeout 10s --latency -s "$BENCH_LUA/range.lua" "$url" \
                -- "$RANGE_BYTES" "$chunk"
            if [[ $target == vidhost ]]; then
                record "{\"key\":\"range_quick\",\"run\":\"range_${chunk}_vidhost_r$round\",\"quick\":$(($(quick_answers) - q0))}"
            fi
        done
    done
done
stop_pid "$NGINX_PID"; NGINX_PID=""

# ---- (d): upload creation vs /healthz, 10 connections ------------------------
# Creating a multipart upload does no disk I/O (the staging file is made with
# the first part), so the declared size costs nothing here; each wrk thread
# still stops at a count cap, so the loop is bounded in count and in time.
api_load() { # api_load DB_LABEL
    local db=$1 cap=1000000 body # cap per wrk thread (2 threads)
    record "{\"key\":\"api_setup_$db\",\"create_size\":$CREATE_SIZE,\"cap\":$((cap * 2))}"
    body="{\"filename\":\"bench.mp4\",\"content_type\":\"video/mp4\",\"size\":$CREATE_SIZE}"
    log "(d) $db: machine quiet ($(wait_quiet)% busy)"
    # sanity: one creation by hand
    curl -sf -o /dev/null -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -d "$body" "$SRV_URL/api/v1/uploads/multipart" || die "upload creation fails on $db"
    log "(d) $db: GET /healthz, 10 connections, ${API_SECONDS} s"
    run_wrk "api_${db}_healthz" "$SRV_PID" 1000000 \
        -t2 -c10 -d"${API_SECONDS}s" --timeout 10s -s "$BENCH_LUA/api.lua" "$SRV_URL/healthz" \
        -- GET - -
    # A reference, not a target: the same bearer auth and a JSON answer,
    # without the durable write (what the creation costs beyond it).
    log "(d) $db: GET /api/v1/me, 10 connections, ${API_SECONDS} s"
    run_wrk "api_${db}_me" "$SRV_PID" 1000000 \
        -t2 -c10 -d"${API_SECONDS}s" --timeout 10s -s "$BENCH_LUA/api.lua" "$SRV_URL/api/v1/me" \
        -- GET "$TOKEN" -
    log "(d) $db: POST /api/v1/uploads/multipart, 10 connections, ${API_SECONDS} s (cap $((cap * 2)))"
    run_wrk "api_${db}_create" "$SRV_PID" "$cap" \
        -t2 -c10 -d"${API_SECONDS}s" --timeout 10s -s "$BENCH_LUA/api.lua" \
        "$SRV_URL/api/v1/uploads/multipart" -- POST "$TOKEN" "$body"
}
api_load sqlite
stop_server
rm -rf -- "$DATA"

if [[ ${BENCH_SKIP_PG:-0} != 1 ]]; then
    PGRUN="$(mktemp -d /tmp/vidhost-bench-pg.XXXXXX)"
    chmod 755 "$PGRUN"
    log "starting a throw-away PostgreSQL"
    PG_URL="$(VIDHOST_TEST_RUNDIR="$PGRUN" "$ROOT/scripts/pg-test.sh" start 2>>"$RAWLOG")"
    DATA="$WORK/data-pg"
    start_server "pg" "$DATA" VIDHOST_DATABASE_URL="$PG_URL"
    DB_PID="$(head -n1 "$PGRUN/pg/data/postmaster.pid")"
    TOKEN="$(python3 "$BENCH/vhclient.py" login "$SRV_URL" "$ADMIN_EMAIL" "$ADMIN_PASSWORD")"
    api_load postgres
    DB_PID=""
    stop_server
    rm -rf -- "$DATA"
    VIDHOST_TEST_RUNDIR="$PGRUN" "$ROOT/scripts/pg-test.sh" stop 2>>"$RAWLOG"
    rm -rf -- "$PGRUN"; PGRUN=""
fi

# ---- report ---------------------------------------------------------------------
T_END=$(date +%s.%N)
record "{\"key\":\"wall\",\"seconds\":$(awk -v s="$T_START" -v e="$T_END" 'BEGIN { printf "%.1f", e - s }'),\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
cp "$RESULTS" "$BENCH/results/latest.jsonl"
python3 "$BENCH/report.py" "$RESULTS" "$BENCH/results/latest.md"
