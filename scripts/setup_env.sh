#!/usr/bin/env bash
# Create (or update) a virtual environment with monai_das and everything it needs, keeping the
# CPU build of torch==2.13.0. Usage: bash scripts/setup_env.sh [VENV_DIR]   (default .venv)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$here/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip setuptools wheel
"${pip[@]}" -c "$here/constraints.txt" torch==2.13.0
"${pip[@]}" -c "$here/constraints.txt" -e "$here[test]"
"${pip[@]}" --no-deps -r "$here/requirements-nodeps.txt"
"$venv/bin/python" - <<'PY'
import torch, monai, medmnist, ignite, mlflow
assert torch.__version__.startswith("2.13.0"), f"torch was replaced: {torch.__version__}"
print(f"monai_das env ready: torch {torch.__version__}, monai {monai.__version__}, ignite {ignite.__version__}, mlflow {mlflow.__version__}, medmnist {medmnist.__version__}")
PY
