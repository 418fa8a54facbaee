#!/usr/bin/env bash
# Set-up and entry points. `./run.sh main` runs the main job on the bundled data; `./run.sh test` runs the tests.
# The first call creates .venv inside the checkout and installs the pinned requirements.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt .venv/.requirements.installed; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q -r requirements.txt
    cp requirements.txt .venv/.requirements.installed
fi
cmd=${1:-main}
[ $# -gt 0 ] && shift
if [ "$cmd" = test ]; then  # the optional extras, for their tests
    for extra in cluster edge; do
        if ! cmp -s "requirements-$extra.txt" ".venv/.$extra.installed"; then
            .venv/bin/python -m pip install -q -r "requirements-$extra.txt"
            cp "requirements-$extra.txt" ".venv/.$extra.installed"
        fi
    done
fi
case "$cmd" in
    main) exec .venv/bin/python main.py "$@" ;;
    test) exec .venv/bin/python -m pytest -q -n 2 --durations=15 tests "$@" ;;
    *) echo "usage: ./run.sh main|test [args]" >&2; exit 2 ;;
esac
