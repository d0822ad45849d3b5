#!/usr/bin/env bash
# Processing pipeline benchmark on a 60 s 1080p30 test source (testsrc2 +
# 440 Hz sine, libx264 veryfast + AAC):
#   (a) vidhost (VIDHOST_PROCESSING__WORKERS=1, default ladder 1080/720/480/
#       360/240, veryfast, 4 s segments): upload via POST /api/v1/upload, then
#       poll GET /api/v1/videos/{id} every 0.2 s. Times from the 201 answer to
#       step "transcode", to the first playable rendition (playback names an
#       HLS URL whose master, media playlist, init and first segment load),
#       and to status "ready"; plus the lifetime of the
#       server's ladder ffmpeg (the process whose command line names
#       manifest.mpd), sampled every 50 ms.
#   (b) the same ladder as ONE hand-written ffmpeg command (decode once,
#       split + 5 scales, libx264 veryfast, -f dash -hls_playlist 1)
#   (c) PeerTube-style: one ffmpeg per rung, 5 sequential runs, each decoding
#       the source (HLS fMP4, 4 s segments, AAC in each rung)
# (b) and (c) use exactly the bitrates vidhost reports for its renditions
# (vidhost caps the configured ladder by the source's own bitrate).
#
# Prints a summary table and writes bench/results/pipeline.md.
# Knobs: VIDHOST_BIN, BENCH_PIPE_SECONDS (source length, default 60).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VIDHOST="${VIDHOST_BIN:-/root/.cache/vidhost-target/release/vidhost}"
DUR="${BENCH_PIPE_SECONDS:-60}"
ADMIN_EMAIL="bench@example.com"
ADMIN_PASSWORD="correct horse battery staple 42"
SEG=4 FPS=30 GOP=$((4 * 30))

WORK="$(mktemp -d /tmp/vidhost-pipe.XXXXXX)"
SRV_PID=""

log() { printf '[pipeline %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
jget() { python3 -c 'import json, sys; v = json.loads(sys.argv[1])[sys.argv[2]]; print("" if v is None else v)' "$1" "$2"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

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
    stop_pid "$SRV_PID"
    rm -rf -- "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -x $VIDHOST ]] || die "no vidhost binary at $VIDHOST"
for t in ffmpeg ffprobe python3; do command -v $t >/dev/null || die "$t not found"; done

# ---- the source -------------------------------------------------------------------
SRC="$WORK/src.mp4"
t=$(now)
ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=1920x1080:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$DUR" \
    -c:v libx264 -preset veryfast -c:a aac -movflags +faststart -y "$SRC"
log "source: $(stat -c %s "$SRC") bytes, made in $(since "$t") s"

# ---- (a) vidhost --------------------------------------------------------------------
(cd "$WORK" && exec env VIDHOST_BOOTSTRAP_ADMIN_EMAIL="$ADMIN_EMAIL" \
    VIDHOST_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" VIDHOST_PROCESSING__WORKERS=1 \
    "$VIDHOST" serve --listen 127.0.0.1:0 --data-dir "$WORK/data") >"$WORK/srv.out" 2>"$WORK/srv.err" &
SRV_PID=$!
URL=""
for _ in $(seq 300); do
    URL="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$WORK/srv.out" 2>/dev/null | head -n1 || true)"
    [[ -n $URL ]] && break
    kill -0 "$SRV_PID" 2>/dev/null || die "vidhost exited: $(tail -5 "$WORK/srv.err")"
    sleep 0.1
done
[[ -n $URL ]] || die "vidhost did not start in 30 s"
TOKEN="$(python3 "$BENCH/vhclient.py" login "$URL" "$ADMIN_EMAIL" "$ADMIN_PASSWORD")"
log "vidhost pid $SRV_PID at $URL"
sync; sleep 1
A="$(timeout 1200 python3 "$BENCH/pipeclient.py" "$URL" "$TOKEN" "$SRC" --timeout 1000)" \
    || { tail -20 "$WORK/srv.err" >&2; die "vidhost processing failed"; }
log "vidhost: $A"
stop_pid "$SRV_PID"; SRV_PID=""
A_TR=$(jget "$A" t_transcode); A_READY=$(jget "$A" t_ready); A_LADDER=$(jget "$A" ladder_s)
A_PLAY=$(jget "$A" t_playable)
# rendition bitrates as vidhost chose them: "name w h bitrate" lines
RUNGS="$(python3 -c 'import json, sys
for n, w, h, b in json.loads(sys.argv[1])["renditions"]: print(n, w, h, b)' "$A")"
[[ $(wc -l <<<"$RUNGS") == 5 ]] || log "warning: vidhost made $(wc -l <<<"$RUNGS") renditions, not 5"
rm -rf "$WORK/data"

# common encoder settings of (b) and (c): as vidhost's ladder (transcode.rs)
X264=(-c:v libx264 -preset veryfast -profile:v high -g $GOP -keyint_min $GOP -sc_threshold 0
      -force_key_frames "expr:gte(t,n_forced*$SEG)")
AAC=(-c:a aac -b:a 128k -ac 2 -ar 48000)

# ---- (b) one ffmpeg, decode once, split into 5 ----------------------------------------
n=$(wc -l <<<"$RUNGS")
graph="[0:v:0]fps=$FPS,format=yuv420p,split=$n"
maps=() rates=() i=0
while read -r name w h br; do
    graph+="[s$i]"
    rates+=(-b:v:$i "$br" -maxrate:v:$i $((br * 11 / 10)) -bufsize:v:$i $((br * 2)))
    maps+=(-map "[v$i]")
    i=$((i + 1))
done <<<"$RUNGS"
i=0
while read -r name w h br; do graph+=";[s$i]scale=$w:$h:flags=bicubic[v$i]"; i=$((i + 1)); done <<<"$RUNGS"
mkdir -p "$WORK/b"
sync; sleep 1
t=$(now)
timeout 1200 ffmpeg -nostdin -y -v error -i "$SRC" -filter_complex "$graph" "${maps[@]}" -map 0:a:0 \
    "${X264[@]}" "${rates[@]}" "${AAC[@]}" \
    -f dash -seg_duration $SEG -use_template 1 -use_timeline 0 -hls_playlist 1 \
    -adaptation_sets "id=0,streams=v id=1,streams=a" "$WORK/b/manifest.mpd"
B=$(since "$t")
log "(b) one ffmpeg: $B s"
rm -rf "$WORK/b"

# ---- (c) PeerTube-style: one ffmpeg per rung ---------------------------------------------
sync; sleep 1
t=$(now)
C_FIRST=""
while read -r name w h br; do
    mkdir -p "$WORK/c/$name"
    timeout 1200 ffmpeg -nostdin -y -v error -i "$SRC" -map 0:v:0 -map 0:a:0 \
        -vf "fps=$FPS,format=yuv420p,scale=$w:$h:flags=bicubic" \
        "${X264[@]}" -b:v "$br" -maxrate $((br * 11 / 10)) -bufsize $((br * 2)) "${AAC[@]}" \
        -f hls -hls_time $SEG -hls_playlist_type vod -hls_segment_type fmp4 \
        -hls_segment_filename "$WORK/c/$name/seg_%03d.m4s" "$WORK/c/$name/index.m3u8" </dev/null
    [[ -n $C_FIRST ]] || C_FIRST=$(since "$t")   # first rung done: PeerTube could publish it
    log "(c) $name done at $(since "$t") s"
done <<<"$RUNGS"
C=$(since "$t")
log "(c) 5 sequential ffmpeg: $C s"
rm -rf "$WORK/c"

# ---- summary ------------------------------------------------------------------------------
LADDER=${A_LADDER:-}
[[ -n $LADDER ]] || LADDER=$(awk -v a="$A_TR" -v b="$A_READY" 'BEGIN { printf "%.2f", b - a }')
{
    echo "# Processing pipeline, ${DUR} s 1080p30 source ($(date -u +%FT%TZ), $(nproc) cores, vidhost $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?), $(ffmpeg -version | head -n1 | cut -d' ' -f1-3))"
    echo
    echo "Rungs (name w h bitrate, as vidhost made them; (b) and (c) use the same): $(tr '\n' ';' <<<"$RUNGS" | sed 's/;$//; s/;/; /g')"
    echo
    echo "| measure | seconds |"
    echo "| --- | ---: |"
    echo "| (a) vidhost: 201 → step \"transcode\" | $A_TR |"
    echo "| (a) vidhost: 201 → first playable rendition (HLS, EVENT playlist) | $A_PLAY |"
    echo "| (a) vidhost: 201 → status \"ready\" | $A_READY |"
    echo "| (a) vidhost: ladder ffmpeg process lifetime | ${A_LADDER:-n/a} |"
    echo "| (b) one hand-written ffmpeg (split + 5 scales, dash+hls) | $B |"
    echo "| (c) PeerTube-style, 5 sequential ffmpeg | $C |"
    echo "| (c) PeerTube-style, first rung done | $C_FIRST |"
    echo
    echo "| ratio | value | target |"
    echo "| --- | ---: | --- |"
    echo "| vidhost ladder / (b) | $(div "$LADDER" "$B") | ≤ 1.05 |"
    echo "| vidhost ladder / (c) | $(div "$LADDER" "$C") | ≤ 0.8 |"
    echo "| vidhost 201→ready / (b) | $(div "$A_READY" "$B") | (whole pipeline, for context) |"
    echo "| vidhost 201→ready / (c) | $(div "$A_READY" "$C") | (whole pipeline, for context) |"
    echo "| realtime factor, ${DUR} s / vidhost ladder | $(div "$DUR" "$LADDER") | |"
    echo "| realtime factor, ${DUR} s / vidhost 201→ready | $(div "$DUR" "$A_READY") | |"
    echo "| time-to-first-playable / time-to-ready | $(div "$A_PLAY" "$A_READY") | ≤ 0.5 |"
    echo "| vidhost first playable / (c) PeerTube-style first rung done | $(div "$A_PLAY" "$C_FIRST") | (for context) |"
    echo
    echo "\"vidhost ladder\" = the ladder ffmpeg's lifetime (${A_LADDER:-not seen; used ready − transcode}). One run each. Steps seen: $(jget "$A" steps)"
} >"$WORK/summary.md"
mkdir -p "$BENCH/results"
cp "$WORK/summary.md" "$BENCH/results/pipeline.md"
cat "$WORK/summary.md"
