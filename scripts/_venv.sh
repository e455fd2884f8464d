# Shared by the scripts: create .venv if missing and install tfmatch into it (sourced, not run).
VENV=${TFMATCH_VENV:-.venv}
ensure_venv() {
    extras=$1
    stamp="$VENV/.tfmatch-installed-$(echo "$extras" | tr -c 'a-z0-9' '_')"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "[tfmatch] creating $VENV" >&2
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
        echo "[tfmatch] installing tfmatch$extras into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/python" -m pip install -q -e "$extras"
        touch "$stamp"
    fi
}
