#!/usr/bin/env bash
# Install the external tools the vidhost test-suite needs, but only the ones
# that are missing. Safe to run repeatedly; a no-op (and fast) when everything
# is already present.
#
#   apt:   ffmpeg postgresql wrk nginx-light curl chromium   (+ python3 if absent)
#   pip:   tuspy, playwright (drives the system Chromium)
#   cargo: garage (the S3 test server), cached in ~/.cache/vidhost-tools
#
# Env knobs:
#   VIDHOST_TOOLS_DIR            where garage is installed (default ~/.cache/vidhost-tools)
#   VIDHOST_ALLOW_SERVICE_START  set to 1 to let apt start system services
#                                (postgresql/nginx) after install; by default we
#                                block that with a temporary policy-rc.d.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { printf '[install-deps] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

# PostgreSQL server binaries (initdb/postgres) — the client alone is not enough.
have_pg_server() {
    local d
    if have pg_config; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        [[ -n "$d" && -x "$d/initdb" && -x "$d/postgres" ]] && return 0
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/postgres" ]] && return 0
    done
    return 1
}

# ---------------------------------------------------------------------------
# apt packages
# ---------------------------------------------------------------------------
APT_MISSING=()
need_apt() { APT_MISSING+=("$@"); }

{ have ffmpeg && have ffprobe; } || need_apt ffmpeg
{ have_pg_server && have psql; } || need_apt postgresql
have wrk || need_apt wrk
{ have nginx || [[ -x /usr/sbin/nginx ]]; } || need_apt nginx-light
have curl || need_apt curl
have python3 || need_apt python3
# The web UI's browser test drives Debian's Chromium (Playwright's own
# browser downloads are not used: they come from a CDN, not a registry).
[[ -x /usr/bin/chromium ]] || need_apt chromium

# Temporary policy-rc.d so that installing postgresql/nginx does not start
# system-wide daemons (port 5432/80). Only installed if none exists, and
# removed again on exit.
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
cleanup() {
    if [[ $POLICY_RC_OURS == 1 ]]; then rm -f "$POLICY_RC"; fi
}
trap cleanup EXIT

if ((${#APT_MISSING[@]})); then
    [[ $(id -u) == 0 ]] || die "need root to apt-get install: ${APT_MISSING[*]}"
    if [[ ${VIDHOST_ALLOW_SERVICE_START:-0} != 1 && ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        POLICY_RC_OURS=1
    fi
    log "apt: installing ${APT_MISSING[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${APT_MISSING[@]}"
else
    log "apt: all packages present"
fi

# ===========================================================================
# The S3 test server: Garage, a real S3-compatible store that verifies SigV4
# signatures, presigned URLs included (moto does not). Built once from
# crates.io into a cache outside the clone (a cold build takes ~12 min on
# 2 cores); later runs find it there.
# ===========================================================================
TOOLS="${VIDHOST_TOOLS_DIR:-$HOME/.cache/vidhost-tools}"
GARAGE_VERSION=2.5.0
if [[ -x "$TOOLS/bin/garage" ]] && "$TOOLS/bin/garage" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    log "garage $GARAGE_VERSION: present"
else
    log "garage $GARAGE_VERSION: building (one time, ~12 min)"
    cargo install --quiet --root "$TOOLS" garage --version "$GARAGE_VERSION" \
        --no-default-features --features sqlite,bundled-libs
fi

# ===========================================================================
# Third-party tus clients the tests drive: tuspy (PyPI) and tus-js-client
# (npm, run under Node).
# ===========================================================================
# need_pip NAME MODULE SPEC: installs SPEC from PyPI unless MODULE imports.
need_pip() {
    if python3 -c "import $2" >/dev/null 2>&1; then
        log "$1: present"
    else
        log "$1: installing"
        PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
            python3 -m pip install -q "$3"
    fi
}
need_pip tuspy tusclient 'tuspy==1.1.0'
# Playwright (PyPI) drives the system Chromium in the web UI test.
need_pip playwright playwright.sync_api 'playwright==1.65.3'
have node || need_node=1
if [[ ${need_node:-0} == 1 ]]; then
    apt-get update -q && apt-get install -y -q --no-install-recommends nodejs npm
fi
NODE_CLIENTS="$(dirname "$0")/../crates/vidhost/tests/clients/node"
if [[ -d "$NODE_CLIENTS/node_modules/tus-js-client" ]]; then
    log "tus-js-client: present"
else
    log "tus-js-client: installing"
    (cd "$NODE_CLIENTS" && npm ci --no-audit --no-fund --loglevel=error)
fi

log "done"
