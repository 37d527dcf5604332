# Sourced by scripts/test and scripts/demo: make the environment the project needs, idempotently.
#   - a virtualenv in .venv with capflow and its extras installed (re-installed when setup.cfg changes)
#   - a redis-server binary (apt-get when missing and we are root; else a clear message)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

capflow_log() { printf '[capflow] %s\n' "$*" >&2; }

ensure_venv() {
  if ! command -v "$PY" >/dev/null 2>&1; then
    capflow_log "python3 (>= 3.11) is required but was not found on PATH"; exit 2
  fi
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    capflow_log "python >= 3.11 is required, found $("$PY" --version 2>&1)"; exit 2
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    capflow_log "creating virtualenv in $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  fi
  local stamp="$VENV/.capflow-installed"
  local want
  want="$(cat "$ROOT/setup.cfg" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    capflow_log "installing capflow with extras [dev,plot,metrics] into $VENV"
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev,plot,metrics]"
    echo "$want" > "$stamp"
  fi
}

ensure_redis() {
  if command -v redis-server >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    capflow_log "redis-server not found: installing it with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # Debian's package starts a service on :6379; capflow never uses it, tests start their own.
    return 0
  fi
  capflow_log "redis-server is not installed and this is not root, so it cannot be installed here."
  capflow_log "Install it (Debian/Ubuntu: sudo apt-get install redis-server) and run again."
  exit 2
}
