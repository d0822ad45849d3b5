#!/usr/bin/env bash
# Fetches the web UI's vendored libraries again from the npm registry, at
# the versions in crates/vidhost-api/web/vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=crates/vidhost-api/web/vendor
TMP="$(mktemp -d)"
trap 'rm -rf -- "$TMP"' EXIT
(cd "$TMP" && npm pack --silent hls.js@1.6.15 qrcode-generator@2.0.4 >/dev/null)
tar -xzf "$TMP/hls.js-1.6.15.tgz" -C "$TMP" package/dist/hls.light.min.js package/LICENSE
sed '/^\/\/# sourceMappingURL=/d' "$TMP/package/dist/hls.light.min.js" >"$OUT/hls.light.min.js"
cp "$TMP/package/LICENSE" "$OUT/hls.js.LICENSE"
rm -rf "$TMP/package"
tar -xzf "$TMP/qrcode-generator-2.0.4.tgz" -C "$TMP" package/dist/qrcode.js
cp "$TMP/package/dist/qrcode.js" "$OUT/qrcode.js"
echo "vendored: $(ls "$OUT")"
