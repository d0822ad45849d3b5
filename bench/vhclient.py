#!/usr/bin/env python3
"""Small vidhost API client for the benchmark (Python 3 stdlib only).

  vhclient.py login BASE EMAIL PASSWORD        -> prints the access token
  vhclient.py upload BASE TOKEN FILE [--parallel 8] [--pid PID]
                                               -> prints one JSON line
  vhclient.py playback BASE TOKEN VIDEO_ID     -> prints the `original` URL path

`upload` is measurement (a)+(b): a multipart upload with N parts in flight at
once. Every part is sent with sendfile(2) straight from the file (nothing is
read into Python memory), each worker thread keeps one keep-alive
connection. The clock runs from the creation request to the answer of
`complete`. With --pid, the server's peak RSS is measured over exactly that
span: VmHWM is reset first (echo 5 > /proc/PID/clear_refs) and read at the
end, and VmRSS is also sampled every 10 ms as a cross-check; the server's CPU
time over the span is reported too (to tell CPU-bound from I/O-bound).
"""

import argparse
import http.client
import json
import os
import queue
import sys
import threading
import time
import urllib.parse

CLK_TCK = os.sysconf("SC_CLK_TCK")


def die(msg):
    print(f"vhclient: {msg}", file=sys.stderr)
    sys.exit(1)


def api(base, method, path, token=None, body=None, timeout=60):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    headers = {}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    if resp.status >= 300:
        die(f"{method} {path} -> {resp.status}: {raw[:500]!r}")
    return json.loads(raw) if raw else None


# ---- /proc readings of the server process ----

def proc_status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def proc_cpu_s(pid):
    """(utime + stime, stime) of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[12]) / CLK_TCK


def system_cpu():
    """(busy, iowait, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = v[3], v[4]
    total = sum(v[:8])
    return total - idle - iowait, iowait, total


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.max_kib, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.max_kib = max(self.max_kib, proc_status_kib(self.pid, "VmRSS"))
            self.stop.wait(0.01)


# ---- the multipart upload ----

def put_part(conn_box, f, url, offset, length):
    """PUT one part with sendfile; returns the ETag. Reconnects if needed."""
    u = urllib.parse.urlsplit(url)
    if conn_box[0] is None:
        conn_box[0] = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    conn = conn_box[0]
    target = u.path + (f"?{u.query}" if u.query else "")
    conn.putrequest("PUT", target, skip_accept_encoding=True)
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    sent = conn.sock.sendfile(f, offset, length)
    if sent != length:
        die(f"sendfile sent {sent} of {length} bytes")
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        die(f"PUT part at offset {offset} -> {resp.status}: {body[:300]!r}")
    if resp.getheader("Connection", "").lower() == "close":
        conn.close()
        conn_box[0] = None
    return resp.getheader("ETag")


def upload(base, token, path, parallel, pid):
    size = os.path.getsize(path)
    sampler = None
    if pid:
        hwm_since_start = proc_status_kib(pid, "VmHWM")
        rss_before = proc_status_kib(pid, "VmRSS")
        try:  # reset the high-water mark to the current RSS
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            hwm_reset = True
        except OSError:
            hwm_reset = False
        sampler = RssSampler(pid)
        sampler.start()
        cpu0, sys0 = proc_cpu_s(pid), system_cpu()

    t0 = time.perf_counter()
    up = api(base, "POST", "/api/v1/uploads/multipart", token, {
        "filename": os.path.basename(path), "content_type": "video/mp4",
        "size": size, "title": "bench upload"})
    part_size, count = up["part_size"], up["part_count"]
    parts = api(base, "POST", f"/api/v1/uploads/multipart/{up['upload_id']}/parts", token,
                {"part_numbers": list(range(1, count + 1))})["parts"]
    todo = queue.Queue()
    for p in parts:
        todo.put(p)
    etags, failures = {}, []

    def worker():
        conn_box = [None]
        try:
            with open(path, "rb") as f:
                while True:
                    try:
                        p = todo.get_nowait()
                    except queue.Empty:
                        return
                    n = p["part_number"]
                    off = (n - 1) * part_size
                    etags[n] = put_part(conn_box, f, p["url"], off, min(part_size, size - off))
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))
        finally:
            if conn_box[0] is not None:
                conn_box[0].close()

    workers = [threading.Thread(target=worker) for _ in range(parallel)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failures or len(etags) != count:
        die(f"upload failed: {failures[:3]} ({len(etags)}/{count} parts)")
    t_parts = time.perf_counter()
    video = api(base, "POST", f"/api/v1/uploads/multipart/{up['upload_id']}/complete", token,
                {"parts": [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]},
                timeout=300)
    t1 = time.perf_counter()

    out = {"video_id": video["id"], "status": video["status"], "bytes": size,
           "seconds": round(t1 - t0, 3), "parts_seconds": round(t_parts - t0, 3),
           "complete_seconds": round(t1 - t_parts, 3),
           "mb_per_s": round(size / 1e6 / (t1 - t0), 1),
           "part_size": part_size, "part_count": count, "parallel": parallel}
    if sampler:
        sampler.stop.set()
        sampler.join()
        cpu1, sys1 = proc_cpu_s(pid), system_cpu()
        span = (sys1[2] - sys0[2]) or 1
        out.update({
            "rss_before_kib": rss_before,
            "hwm_since_start_kib": max(hwm_since_start, proc_status_kib(pid, "VmHWM")),
            "hwm_reset": hwm_reset,
            # peak RSS during the upload: VmHWM after the reset (if the reset
            # worked) and the 10 ms samples, whichever is larger
            "peak_rss_kib": max(sampler.max_kib,
                                proc_status_kib(pid, "VmHWM") if hwm_reset else 0),
            "sampled_max_rss_kib": sampler.max_kib,
            "server_cpu_s": round(cpu1[0] - cpu0[0], 2),
            "server_cpu_pct_of_core": round(100 * (cpu1[0] - cpu0[0]) / (t1 - t0), 1),
            "server_sys_cpu_pct_of_core": round(100 * (cpu1[1] - cpu0[1]) / (t1 - t0), 1),
            "machine_busy_pct": round(100 * (sys1[0] - sys0[0]) / span, 1),
            "machine_iowait_pct": round(100 * (sys1[1] - sys0[1]) / span, 1),
        })
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("login")
    p.add_argument("base"), p.add_argument("email"), p.add_argument("password")
    p = sub.add_parser("upload")
    p.add_argument("base"), p.add_argument("token"), p.add_argument("file")
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--pid", type=int)
    p = sub.add_parser("playback")
    p.add_argument("base"), p.add_argument("token"), p.add_argument("video_id")
    a = ap.parse_args()

    if a.cmd == "login":
        print(api(a.base, "POST", "/api/v1/auth/login", None,
                  {"email": a.email, "password": a.password})["access_token"])
    elif a.cmd == "upload":
        upload(a.base, a.token, a.file, a.parallel, a.pid)
    elif a.cmd == "playback":
        pb = api(a.base, "GET", f"/api/v1/videos/{a.video_id}/playback", a.token)
        if not pb.get("original"):
            die(f"no `original` in playback answer: {pb}")
        print(urllib.parse.urlsplit(pb["original"]).path)


if __name__ == "__main__":
    main()
