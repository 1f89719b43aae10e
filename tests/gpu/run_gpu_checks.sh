#!/usr/bin/env bash
# GPU parity checks for ktorch (see gpu_checks.py beside this file).
#
# On a machine with CUDA and torch but no TensorFlow: Keras runs on its torch backend.
# keras, namex and optree may travel as wheels in .whl/ at the repository root (they are
# installed into /tmp/ktorch-site, nothing else is touched); ktorch itself is installed
# there from this checkout when it is not importable.
#
#   tests/gpu/run_gpu_checks.sh                 # --device cuda, TF32 off and on
#   tests/gpu/run_gpu_checks.sh --device cpu    # dry run on a CPU machine
#   tests/gpu/run_gpu_checks.sh --json out.json # also write every report
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
site=/tmp/ktorch-site
python="${PYTHON:-python3}"
if ! "$python" -c "import keras" 2>/dev/null; then
  if ! ls "$root"/.whl/*.whl >/dev/null 2>&1; then
    echo "keras is not installed and there are no wheels in $root/.whl (keras, namex, optree)" >&2
    exit 3
  fi
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$root"/.whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$python" -c "import ktorch.verify" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade --target "$site" "$root"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec(\"tensorflow\") is None)" 2>/dev/null; then
  export KERAS_BACKEND="${KERAS_BACKEND:-torch}"
fi
export PYTHONUNBUFFERED=1
exec "$python" "$here/gpu_checks.py" "$@"
