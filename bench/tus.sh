#!/usr/bin/env bash
# tus ingest benchmark: a 1 GiB file (a real 1 s MP4 padded with random bytes)
# uploaded over tus 1.0 in two modes,
#   (i)  one PATCH carrying the whole file
#   (ii) 8 MiB PATCHes, one after another on one keep-alive connection
# against vidhost (disk storage) and the official tus Node server
# (@tus/server + @tus/file-store), with the same client (bench/tusclient.py,
# sendfile from the file), plus dd of the same file as the physical limit:
#   (i)  dd bs=8M conv=fsync      (ii) dd bs=8M oflag=dsync
# vidhost fsyncs before it acknowledges a PATCH (204); @tus/file-store does not.
# Peak RSS = VmHWM of the server, reset (clear_refs 5) before each upload.
# Optional (BENCH_S3=1, default): vidhost on S3 (throw-away Garage) vs a plain
# boto3 multipart upload (8 MiB parts) of the same file to the same Garage.
#
# Prints a summary table and writes bench/results/tus.md.
# Knobs: VIDHOST_BIN, BENCH_TUS_BYTES (default 1073741824), BENCH_S3 (1/0).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VIDHOST="${VIDHOST_BIN:-/root/.cache/vidhost-target/release/vidhost}"
BYTES="${BENCH_TUS_BYTES:-1073741824}"
DO_S3="${BENCH_S3:-1}"
ADMIN_EMAIL="bench@example.com"
ADMIN_PASSWORD="correct horse battery staple 42"
CHUNK=$((8 << 20))

WORK="$(mktemp -d /tmp/vidhost-tus.XXXXXX)"   # same disk as everything else
S3RUN=""
SRV_PID="" NODE_PID=""
declare -A R   # results: R[key]=value

log() { printf '[tus %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
jget() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

stop_pid() { # TERM, up to 10 s, then KILL
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
    stop_pid "$SRV_PID"; stop_pid "$NODE_PID"
    if [[ -n $S3RUN ]]; then
        VIDHOST_TEST_RUNDIR="$S3RUN" "$ROOT/scripts/s3-test.sh" stop >/dev/null 2>&1
        rm -rf -- "$S3RUN"
    fi
    rm -rf -- "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_url FILE PID: the first http://127.0.0.1:PORT printed into FILE
wait_url() {
    local out=$1 pid=$2 url=""
    for _ in $(seq 300); do
        url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out" 2>/dev/null | head -n1 || true)"
        [[ -n $url ]] && { echo "$url"; return; }
        kill -0 "$pid" 2>/dev/null || die "server exited: $(tail -5 "$out" "$out.err" 2>/dev/null)"
        sleep 0.1
    done
    die "server did not start in 30 s"
}

# start_vidhost NAME [VAR=VALUE...]: sets SRV_PID, SRV_URL, TOKEN; data in $WORK/NAME
start_vidhost() {
    local name=$1; shift
    (cd "$WORK" && exec env VIDHOST_BOOTSTRAP_ADMIN_EMAIL="$ADMIN_EMAIL" \
        VIDHOST_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" VIDHOST_PROCESSING__WORKERS=0 \
        VIDHOST_RATE_LIMITS__ENABLED=false "$@" \
        "$VIDHOST" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name") \
        >"$WORK/$name.out" 2>"$WORK/$name.out.err" &
    SRV_PID=$!
    SRV_URL="$(wait_url "$WORK/$name.out" "$SRV_PID")"
    TOKEN="$(python3 "$BENCH/vhclient.py" login "$SRV_URL" "$ADMIN_EMAIL" "$ADMIN_PASSWORD")"
    log "vidhost ($name) pid $SRV_PID at $SRV_URL"
}

# tus KEY URL MODE PID [TOKEN]: one upload, records MB/s and peak RSS
tus() {
    local key=$1 url=$2 mode=$3 pid=$4 tok=${5:-} out
    sync; sleep 1   # start with no dirty pages from the previous run
    out="$(timeout 600 python3 "$BENCH/tusclient.py" "$url" "$FILE" --mode "$mode" \
        --pid "$pid" ${tok:+--token "$tok"})" || die "$key upload failed"
    R[$key.mbs]=$(jget "$out" mb_s); R[$key.rss]=$(jget "$out" peak_rss_mib); R[$key.s]=$(jget "$out" seconds)
    log "$key: $out"
}

# ddrun KEY DIR FLAGS...: dd of the file into DIR, MB/s
ddrun() {
    local key=$1 dir=$2 t0 t1; shift 2
    sync; sleep 1
    t0=$(date +%s.%N)
    timeout 600 dd if="$FILE" of="$dir/dd.bin" bs=8M "$@" status=none
    t1=$(date +%s.%N)
    rm -f "$dir/dd.bin"
    R[$key.s]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    R[$key.mbs]=$(awk -v s="${R[$key.s]}" -v n="$BYTES" 'BEGIN { printf "%.1f", n / s / 1e6 }')
    log "$key: ${R[$key.mbs]} MB/s (${R[$key.s]} s)"
}

# ---- preflight and the test file -----------------------------------------------

[[ -x $VIDHOST ]] || die "no vidhost binary at $VIDHOST"
for t in ffmpeg node npm python3 dd; do command -v $t >/dev/null || die "$t not found"; done
FILE="$WORK/upload.mp4"
ffmpeg -loglevel error -f lavfi -i testsrc=duration=1:size=320x240:rate=30 -c:v libx264 \
    -movflags +faststart -y "$WORK/head.mp4"
cp "$WORK/head.mp4" "$FILE"
head -c $((BYTES - $(stat -c %s "$WORK/head.mp4"))) /dev/urandom >>"$FILE"
[[ $(stat -c %s "$FILE") == "$BYTES" ]] || die "test file has the wrong size"
cat "$FILE" >/dev/null   # into the page cache: every contender reads it from RAM
log "test file: $BYTES bytes"

# ---- @tus/server (Node), installed into a temp dir --------------------------------

mkdir -p "$WORK/tusnode" "$WORK/tusnode-files"
(cd "$WORK/tusnode" && npm init -y >/dev/null && timeout 300 npm install --silent --no-audit --no-fund \
    @tus/server @tus/file-store >/dev/null 2>&1) || die "npm install @tus/server failed"
cat >"$WORK/tusnode/server.mjs" <<'EOF'
// Stock @tus/server with a FileStore, on 127.0.0.1, random port.
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';
const tus = new Server({ path: '/files', datastore: new FileStore({ directory: process.argv[2] }) });
const srv = http.createServer((req, res) => tus.handle(req, res));
srv.listen(0, '127.0.0.1', () => console.log(`tus node listening on http://127.0.0.1:${srv.address().port}`));
EOF
TUSNODE_VER="$(node -p "require('$WORK/tusnode/node_modules/@tus/server/package.json').version")"
(cd "$WORK/tusnode" && exec node server.mjs "$WORK/tusnode-files") >"$WORK/node.out" 2>"$WORK/node.out.err" &
NODE_PID=$!
NODE_URL="$(wait_url "$WORK/node.out" "$NODE_PID")"
log "@tus/server $TUSNODE_VER pid $NODE_PID at $NODE_URL"

# ---- vidhost on disk ---------------------------------------------------------------

start_vidhost disk
mkdir -p "$WORK/ddtarget"

# (i) one PATCH: dd conv=fsync, vidhost, node
ddrun dd1 "$WORK/ddtarget" conv=fsync
tus vh1 "$SRV_URL/api/v1/tus" single "$SRV_PID" "$TOKEN"
tus node1 "$NODE_URL/files" single "$NODE_PID"
rm -rf "$WORK/tusnode-files"/*     # keep the disk from filling up

# (ii) 8 MiB PATCHes: dd oflag=dsync, vidhost, node
ddrun dd8 "$WORK/ddtarget" oflag=dsync
tus vh8 "$SRV_URL/api/v1/tus" chunked "$SRV_PID" "$TOKEN"
tus node8 "$NODE_URL/files" chunked "$NODE_PID"
rm -rf "$WORK/tusnode-files"/*
stop_pid "$SRV_PID"; SRV_PID=""; stop_pid "$NODE_PID"; NODE_PID=""
rm -rf "$WORK/disk"

# ---- optional: vidhost on S3 (Garage) vs boto3 multipart ----------------------------

S3_NOTE="skipped (BENCH_S3=0)"
if [[ $DO_S3 == 1 ]]; then
    if ! python3 -c 'import boto3' 2>/dev/null; then
        S3_NOTE="skipped (no boto3)"
    elif ! S3RUN="$(mktemp -d /tmp/vidhost-tus-s3.XXXXXX)" || \
         ! envfile="$(VIDHOST_TEST_RUNDIR="$S3RUN" timeout 120 "$ROOT/scripts/s3-test.sh" start)"; then
        S3_NOTE="skipped (Garage did not start)"
    else
        # shellcheck disable=SC1090
        source "$envfile"
        export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
        s3py() { # s3py CODE: boto3 client `s3` on the Garage endpoint
            python3 -c "import boto3, sys, time
from boto3.s3.transfer import TransferConfig
s3 = boto3.client('s3', endpoint_url='$VIDHOST_TEST_S3_ENDPOINT', region_name='us-east-1')
$1"
        }
        s3py "s3.create_bucket(Bucket='vhbench'); s3.create_bucket(Bucket='plain')"
        start_vidhost s3 VIDHOST_STORAGE_URL="s3://vhbench?endpoint=$VIDHOST_TEST_S3_ENDPOINT&region=us-east-1"
        tus vhs3_1 "$SRV_URL/api/v1/tus" single "$SRV_PID" "$TOKEN"
        tus vhs3_8 "$SRV_URL/api/v1/tus" chunked "$SRV_PID" "$TOKEN"
        stop_pid "$SRV_PID"; SRV_PID=""
        # the store's own multipart upload: 8 MiB parts, sequential and 8 in flight
        for conc in 1 8; do
            sync; sleep 1
            s=$(timeout 600 python3 -c "import boto3, time
from boto3.s3.transfer import TransferConfig
s3 = boto3.client('s3', endpoint_url='$VIDHOST_TEST_S3_ENDPOINT', region_name='us-east-1')
cfg = TransferConfig(multipart_threshold=8<<20, multipart_chunksize=8<<20, max_concurrency=$conc, use_threads=$([[ $conc == 1 ]] && echo False || echo True))
t = time.monotonic(); s3.upload_file('$FILE', 'plain', 'f$conc', Config=cfg); print('%.3f' % (time.monotonic() - t))") \
                || die "boto3 upload failed"
            R[boto$conc.s]=$s
            R[boto$conc.mbs]=$(awk -v s="$s" -v n="$BYTES" 'BEGIN { printf "%.1f", n / s / 1e6 }')
            log "boto3 multipart, $conc in flight: ${R[boto$conc.mbs]} MB/s"
        done
        S3_NOTE="done"
    fi
fi

# ---- summary ------------------------------------------------------------------------

ratio() { awk -v a="${R[$1]:-}" -v b="${R[$2]:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
pct() { awk -v a="${R[$1]:-}" -v b="${R[$2]:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.0f %%", 100 * a / b }'; }
{
    echo "# tus ingest, $((BYTES >> 20)) MiB ($(date -u +%FT%TZ), $(nproc) cores, vidhost $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?), @tus/server $TUSNODE_VER, node $(node --version))"
    echo
    echo "MB = 10^6 bytes. One run each. Client: bench/tusclient.py (one keep-alive connection, sendfile). vidhost fsyncs before each 204; @tus/file-store does not fsync."
    echo
    echo "| mode | dd MB/s | vidhost MB/s | @tus/server MB/s | vidhost/dd (≥ 90 %) | vidhost/@tus (≥ 1) | vidhost peak RSS MiB | @tus peak RSS MiB | RSS ratio (≤ 0.5) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for m in 1 8; do
        [[ $m == 1 ]] && label="one PATCH (dd conv=fsync)" || label="8 MiB PATCHes (dd oflag=dsync)"
        echo "| $label | ${R[dd$m.mbs]} | ${R[vh$m.mbs]} | ${R[node$m.mbs]} | $(pct vh$m.mbs dd$m.mbs) | $(ratio vh$m.mbs node$m.mbs) | ${R[vh$m.rss]} | ${R[node$m.rss]} | $(ratio vh$m.rss node$m.rss) |"
    done
    echo
    echo "Seconds: dd ${R[dd1.s]} / ${R[dd8.s]}, vidhost ${R[vh1.s]} / ${R[vh8.s]}, @tus/server ${R[node1.s]} / ${R[node8.s]} (one PATCH / 8 MiB PATCHes)."
    echo
    echo "## S3 backend (Garage): $S3_NOTE"
    if [[ $S3_NOTE == done ]]; then
        echo
        echo "| contender | MB/s | seconds | peak RSS MiB |"
        echo "| --- | ---: | ---: | ---: |"
        echo "| vidhost tus, one PATCH | ${R[vhs3_1.mbs]} | ${R[vhs3_1.s]} | ${R[vhs3_1.rss]} |"
        echo "| vidhost tus, 8 MiB PATCHes | ${R[vhs3_8.mbs]} | ${R[vhs3_8.s]} | ${R[vhs3_8.rss]} |"
        echo "| boto3 multipart, 8 MiB parts, 1 in flight | ${R[boto1.mbs]} | ${R[boto1.s]} | |"
        echo "| boto3 multipart, 8 MiB parts, 8 in flight | ${R[boto8.mbs]} | ${R[boto8.s]} | |"
        echo
        echo "vidhost/boto3(1 in flight): one PATCH $(ratio vhs3_1.mbs boto1.mbs), 8 MiB PATCHes $(ratio vhs3_8.mbs boto1.mbs)."
    fi
} >"$WORK/summary.md"
mkdir -p "$BENCH/results"
cp "$WORK/summary.md" "$BENCH/results/tus.md"
cat "$WORK/summary.md"
