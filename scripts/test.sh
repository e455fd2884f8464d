#!/bin/sh
# Run the test suite: creates .venv if it is missing, installs tfmatch with its test and JAX extras, runs pytest.
#   sh scripts/test.sh [pytest args...]
set -eu
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv ".[test,jax]"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# Two workers on a 2-core CI machine; every worker process pays the TensorFlow import once.
exec "$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" -p no:cacheprovider "$@" tests
