#!/usr/bin/env python3
"""Upload one file to vidhost and time its processing (for bench/pipeline.sh).

  pipeclient.py BASE TOKEN FILE [--timeout 900]  -> prints one JSON line

POST /api/v1/upload (multipart/form-data, `file` part), then GET
/api/v1/videos/{id} every 0.2 s. Times are seconds from the 201 answer:
`t_transcode` (step first seen as "transcode"), `t_playable` (GET
/api/v1/videos/{id}/playback names an `hls` URL, and its master playlist, the
first variant's media playlist, init segment and first media segment all
answer 200: a player could start), `t_ready` (status "ready").
A thread scans /proc every 50 ms for the server's ladder ffmpeg (its command
line names manifest.mpd) and reports its lifetime (`ladder_s`, first to last
sighting, so accurate to ~50 ms). Also prints the renditions' bitrates.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid


def die(msg):
    print(f"pipeclient: {msg}", file=sys.stderr)
    sys.exit(1)


def get(conn, path, token, raw_body=False):
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    r = conn.getresponse()
    raw = r.read()
    if r.status != 200:
        die(f"GET {path} -> {r.status}: {raw[:300]!r}")
    return raw if raw_body else json.loads(raw)


def playable(conn, hls):
    """What a player does first: master, a media playlist, init, a segment."""
    base = hls.rsplit("/", 1)[0] + "/"
    master = get(conn, hls, None, True).decode()
    media = next(l for l in master.splitlines() if l and not l.startswith("#"))
    pl = get(conn, base + media, None, True).decode()
    mbase = (base + media).rsplit("/", 1)[0] + "/"
    init = next(l.split('"')[1] for l in pl.splitlines() if l.startswith("#EXT-X-MAP:URI="))
    seg = next(l for l in pl.splitlines() if l and not l.startswith("#"))
    get(conn, mbase + init, None, True)
    return len(get(conn, mbase + seg, None, True)) > 0


class LadderWatch(threading.Thread):
    """First and last time an `ffmpeg … manifest.mpd` process was seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.first = self.last = None
        self.stop = False

    def run(self):
        me = os.getpid()
        while not self.stop:
            now = time.monotonic()
            for p in os.listdir("/proc"):
                if not p.isdigit() or int(p) == me:
                    continue
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if b"ffmpeg" in cmd and b"manifest.mpd" in cmd:
                    self.first = self.first or now
                    self.last = now
                    break
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("token")
    ap.add_argument("file")
    ap.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.base)

    # multipart/form-data body (the file is tens of MB: fine in memory)
    b = uuid.uuid4().hex
    data = open(a.file, "rb").read()
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\npipeline bench\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"src.mp4\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()

    watch = LadderWatch()
    watch.start()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    t_up = time.monotonic()
    conn.request("POST", "/api/v1/upload", body=body, headers={
        "Authorization": f"Bearer {a.token}",
        "Content-Type": f"multipart/form-data; boundary={b}"})
    r = conn.getresponse()
    raw = r.read()
    t0 = time.monotonic()  # the 201 answer: the clock starts here
    if r.status != 201:
        die(f"upload -> {r.status}: {raw[:300]!r}")
    vid = json.loads(raw)["id"]

    t_tr = t_play = None
    steps = []
    while True:
        v = get(conn, f"/api/v1/videos/{vid}", a.token)
        now = time.monotonic() - t0
        step = v.get("step")
        if not steps or steps[-1][0] != (v["status"], step):
            steps.append(((v["status"], step), round(now, 2)))
        if step == "transcode" and t_tr is None:
            t_tr = now
        if t_play is None:
            pb = get(conn, f"/api/v1/videos/{vid}/playback", a.token)
            if pb["hls"] and playable(conn, pb["hls"]):
                t_play = time.monotonic() - t0
        if v["status"] == "ready":
            break
        if v["status"] == "failed":
            die(f"video failed: {v.get('error')}")
        if now > a.timeout:
            die(f"not ready after {a.timeout} s (last: {v['status']} {step} {v.get('progress')})")
        time.sleep(0.2)
    t_ready = now
    watch.stop = True
    watch.join()
    out = {
        "video_id": vid,
        "upload_s": round(t0 - t_up, 3),
        "t_transcode": round(t_tr, 2) if t_tr is not None else None,
        "t_ready": round(t_ready, 2),
        "t_playable": round(t_play, 2) if t_play is not None else None,
        "ladder_s": round(watch.last - watch.first, 2) if watch.first else None,
        "ladder_start": round(watch.first - t0, 2) if watch.first else None,
        "renditions": [[r["name"], r["width"], r["height"], r["bitrate"]] for r in v["renditions"]],
        "steps": [f"{s[0][0]}/{s[0][1]}@{s[1]}" for s in steps],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
