#!/usr/bin/env bash
# Zero-config start: installs what vidhost needs at run time if missing,
# builds it, and serves on 127.0.0.1:8080 with everything under ./vidhost-data.
# Extra arguments go to `vidhost serve` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends ffmpeg
fi
exec cargo run --release --locked -p vidhost -- serve "$@"
