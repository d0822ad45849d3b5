"""Drives vidhost with tuspy, the official Python tus client.

usage: tuspy_client.py ENDPOINT TOKEN FILE STORAGE interrupt|resume

interrupt: a client uploads in small chunks and stops half way (as if the
           process died); the upload URL is kept in STORAGE (tuspy's own
           FileStorage, keyed by the file's fingerprint).
resume:    a fresh client instance finds the upload through STORAGE and
           finishes it from the server's offset.
Prints one JSON line: {"url": ..., "offset_before": ..., "offset_after": ...}
"""
import json
import os
import sys

from tusclient import client
from tusclient.storage.filestorage import FileStorage

endpoint, token, path, storage, mode = sys.argv[1:6]
size = os.path.getsize(path)


def uploader():
    c = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
    return c.uploader(
        path,
        chunk_size=64 * 1024,
        metadata={"filename": "tuspy.mp4", "filetype": "video/mp4", "title": "From tuspy", "tags": "py,tus"},
        store_url=True,
        url_storage=FileStorage(storage),
        retries=0,
    )


u = uploader()
before = u.offset
if mode == "interrupt":
    u.upload(stop_at=size // 2)
elif mode == "resume":
    u.upload()
else:
    sys.exit(f"unknown mode {mode}")
print(json.dumps({"url": u.url, "offset_before": before, "offset_after": u.offset}))
