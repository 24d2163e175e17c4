#!/usr/bin/env bash
# Installs the local stack's slow-to-build parts into a cache OUTSIDE the clone, once per machine:
#   - tansu 0.6.0 (Kafka-protocol broker) with the libsql storage engine (durable sqlite topics)
#   - a Python venv with chdb-core 26.9.0 (ClickHouse engine in-process) for deploy/local/chdb_http.py
# Re-running is cheap: each part is skipped when its marker exists.
set -euo pipefail

CACHE="${SITELOG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sitelog}"
TANSU_VERSION=0.6.0
CHDB_VERSION=26.9.0

log() { printf 'bootstrap: %s\n' "$*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || { log "error: '$1' not found on PATH ($2)"; exit 1; }
}

install_tansu() {
  local root="$CACHE/tansu-$TANSU_VERSION"
  if [ -x "$root/bin/tansu" ]; then return 0; fi
  need cargo "install Rust with rustup"
  mkdir -p "$CACHE"
  log "building tansu $TANSU_VERSION into $root (takes ~10 minutes on 2 cores, once per machine)"
  # A separate target dir inside the cache keeps a half-finished build resumable.
  CARGO_TARGET_DIR="$CACHE/tansu-build" cargo install tansu --version "$TANSU_VERSION" \
    --locked --features libsql --root "$root.partial" >"$CACHE/tansu-build.log" 2>&1 || {
      log "error: tansu build failed, see $CACHE/tansu-build.log"; exit 1; }
  rm -rf "$root" && mv "$root.partial" "$root"
  rm -rf "$CACHE/tansu-build"
}

install_chdb() {
  local venv="$CACHE/chdb-venv-$CHDB_VERSION"
  if [ -f "$venv/.ready" ]; then return 0; fi
  need python3 "install Python 3.9+ with venv and pip"
  python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' || {
    log "error: python3 is $(python3 --version 2>&1); chDB needs Python 3.9+"; exit 1; }
  mkdir -p "$CACHE"
  log "creating chDB venv in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || { log "error: python3 -m venv failed (Debian: apt-get install python3-venv)"; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "chdb-core==$CHDB_VERSION" "pytest==8.3.3" >"$CACHE/chdb-install.log" 2>&1 || {
    log "error: pip install chdb-core==$CHDB_VERSION failed, see $CACHE/chdb-install.log"; exit 1; }
  touch "$venv/.ready"
}

case "${1:-all}" in
  tansu) install_tansu ;;
  chdb) install_chdb ;;
  all) install_chdb; install_tansu ;;
  paths)
    echo "TANSU_BIN=$CACHE/tansu-$TANSU_VERSION/bin/tansu"
    echo "CHDB_PYTHON=$CACHE/chdb-venv-$CHDB_VERSION/bin/python" ;;
  *) log "usage: bootstrap.sh [all|tansu|chdb|paths]"; exit 2 ;;
esac
