#!/usr/bin/env python3
"""Minimal tus 1.0 client for bench/tus.sh (Python 3 stdlib only).

  tusclient.py URL FILE --mode single|chunked [--chunk 8388608]
               [--token TOKEN] [--pid PID]  -> prints one JSON line

URL is the creation endpoint (e.g. http://127.0.0.1:PORT/api/v1/tus).
One keep-alive TCP connection; every PATCH body goes out with sendfile(2)
straight from FILE (nothing is read into Python memory), so vidhost and
@tus/server see exactly the same client. The clock runs from the creation
POST to the answer of the last PATCH. With --pid, the server's peak RSS over
that span is measured: VmHWM is reset first (echo 5 > /proc/PID/clear_refs)
and read at the end.
"""

import argparse
import base64
import json
import os
import socket
import sys
import time
import urllib.parse


def die(msg):
    print(f"tusclient: {msg}", file=sys.stderr)
    sys.exit(1)


class Conn:
    """One HTTP/1.1 keep-alive connection with just enough parsing for tus."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=600)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, method, path, headers, file=None, offset=0, count=0):
        head = f"{method} {path} HTTP/1.1\r\n"
        headers = dict(headers, **{"Content-Length": str(count)})
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.sock.sendall(head.encode())
        sent = 0
        while sent < count:  # sendfile may send less than asked
            n = self.sock.sendfile(file, offset + sent, count - sent)
            if n == 0:
                die("sendfile: connection closed")
            sent += n
        return self.response()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            die("connection closed by server")
        self.buf += chunk

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            body = b""
            while True:  # chunked body (Node answers this way)
                while b"\r\n" not in self.buf:
                    self._fill()
                line, self.buf = self.buf.split(b"\r\n", 1)
                n = int(line.split(b";")[0], 16)
                while len(self.buf) < n + 2:
                    self._fill()
                body, self.buf = body + self.buf[:n], self.buf[n + 2:]
                if n == 0:
                    return status, hdrs, body
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("file")
    ap.add_argument("--mode", choices=["single", "chunked"], required=True)
    ap.add_argument("--chunk", type=int, default=8 << 20)
    ap.add_argument("--token")
    ap.add_argument("--pid", type=int)
    a = ap.parse_args()

    u = urllib.parse.urlsplit(a.url)
    size = os.path.getsize(a.file)
    base = {"Host": u.netloc, "Tus-Resumable": "1.0.0"}
    if a.token:
        base["Authorization"] = f"Bearer {a.token}"
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    meta = f"filename {b64('bench.mp4')},filetype {b64('video/mp4')}"

    if a.pid:  # reset the peak-RSS watermark of the server
        with open(f"/proc/{a.pid}/clear_refs", "w") as f:
            f.write("5")
    conn = Conn(u.hostname, u.port)
    f = open(a.file, "rb")
    t0 = time.monotonic()
    st, h, body = conn.request("POST", u.path, dict(base, **{
        "Upload-Length": str(size), "Upload-Metadata": meta}))
    if st != 201:
        die(f"create -> {st}: {body[:300]!r}")
    loc = urllib.parse.urlsplit(urllib.parse.urljoin(a.url, h["location"])).path
    step = size if a.mode == "single" else a.chunk
    off = patches = 0
    while off < size:
        n = min(step, size - off)
        st, h, body = conn.request("PATCH", loc, dict(base, **{
            "Upload-Offset": str(off),
            "Content-Type": "application/offset+octet-stream"}), f, off, n)
        if st != 204:
            die(f"PATCH @{off} -> {st}: {body[:300]!r}")
        new = int(h["upload-offset"])
        if new != off + n:
            die(f"PATCH @{off}: server says offset {new}, expected {off + n}")
        off = new
        patches += 1
    secs = time.monotonic() - t0
    out = {"mode": a.mode, "bytes": size, "patches": patches, "seconds": round(secs, 3),
           "mb_s": round(size / secs / 1e6, 1), "location": loc}
    if a.pid:
        out["peak_rss_mib"] = round(status_kib(a.pid, "VmHWM") / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
