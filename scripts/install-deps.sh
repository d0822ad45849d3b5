#!/usr/bin/env bash
# Install the external tools the vidhost test-suite needs, but only the ones
# that are missing. Safe to run repeatedly; a no-op (and fast) when everything
# is already present.
#
#   apt:  ffmpeg postgresql wrk nginx-light curl   (+ python3/pip if absent)
#   pip:  moto[server] boto3                       (S3 test server, see below)
#
# Env knobs:
#   VIDHOST_S3_SERVERS           space-separated S3 test servers to install
#                                (default: "moto"; see the S3 SERVERS section)
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
if ! python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("pip") is None)' >/dev/null 2>&1; then
    need_apt python3-pip
fi

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

# ---------------------------------------------------------------------------
# pip helper
# ---------------------------------------------------------------------------
pip_install() {
    # PIP_BREAK_SYSTEM_PACKAGES: needed on Debian 12+ system python (PEP 668);
    # ignored by older pips and by venv/pyenv pythons.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
        PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q "$@"
}

# ===========================================================================
# S3 SERVERS — extension point.
# To add another S3-compatible test server (e.g. minio), append its name to
# the default of VIDHOST_S3_SERVERS and define two functions:
#     s3_server_present_<name>   -> exit 0 if already installed
#     s3_server_install_<name>   -> install it
# and teach scripts/s3-test.sh to start it (VIDHOST_TEST_S3_SERVER=<name>).
# ===========================================================================
VIDHOST_S3_SERVERS="${VIDHOST_S3_SERVERS:-moto}"

s3_server_present_moto() {
    # find_spec instead of import: importing moto takes ~1s.
    python3 -c 'import importlib.util as u, sys
sys.exit(0 if all(u.find_spec(m) for m in ("moto", "boto3", "flask", "flask_cors")) else 1)' >/dev/null 2>&1
}
s3_server_install_moto() {
    pip_install 'moto[server]' boto3
}

for s3 in $VIDHOST_S3_SERVERS; do
    declare -F "s3_server_present_$s3" >/dev/null \
        || die "unknown S3 server '$s3' (no s3_server_present_$s3 function)"
    if "s3_server_present_$s3"; then
        log "s3 server '$s3': present"
    else
        log "s3 server '$s3': installing"
        "s3_server_install_$s3"
        "s3_server_present_$s3" || die "s3 server '$s3' still missing after install"
    fi
done

log "done"
