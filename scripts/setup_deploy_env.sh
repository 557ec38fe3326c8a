#!/usr/bin/env bash
# Create (or update) a SEPARATE virtual environment for the deployment integrations of monai_das:
#   * MONAI Deploy App SDK 4.0.0 (monai_das.deploy), which pulls holoscan-cu13, holoscan-cli and tritonclient;
#   * MONAI Label 0.8.5 (apps/monailabel_das), installed WITHOUT its dependencies (it requires torchvision,
#     which has no CPU build here, and would downgrade numpy), plus the few packages it needs to import.
# The base environment (scripts/setup_env.sh, .venv) is left untouched.
#
# Usage: bash scripts/setup_deploy_env.sh [VENV_DIR]      (default: <repo>/.venv-deploy)
# Then:  <VENV_DIR>/bin/python -m pytest tests/deploy tests/apps -q
#
# Notes
#   * holoscan (imported by monai.deploy, hence by every `import monai` once the SDK is installed) needs
#     libcudart.so.13 at import time even on a CPU-only machine; nvidia-cuda-runtime==13.* ships it in
#     site-packages/nvidia/cu13/lib, which is not on the loader path. Instead of asking for LD_LIBRARY_PATH,
#     this script drops a one-line `monai_das_cudart.pth` into the venv's site-packages that preloads that
#     library (ctypes, RTLD_GLOBAL) at interpreter start-up, so every python of this venv works.
#   * Once monai-deploy-app-sdk is installed, `import monai` fails unless pydicom and highdicom are present
#     (monai.deploy's DICOM operators are imported through the monai namespace), so both are installed here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$here/.venv-deploy}"
# 1. the base project, by the same script as the main environment (CPU torch pinned, medmnist without dependencies)
bash "$here/scripts/setup_env.sh" "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
# 2. MONAI Deploy App SDK (CPU-only use) + the CUDA 13 runtime library holoscan loads at import + DICOM I/O
"${pip[@]}" -c "$here/constraints.txt" "monai-deploy-app-sdk==4.0.0" "nvidia-cuda-runtime==13.*" \
    "pydicom>=3.0" "highdicom>=0.22"
# 3. MONAI Label 0.8.5 without dependencies (see header) + what its infer-task modules import
"${pip[@]}" --no-deps "monailabel==0.8.5"
"${pip[@]}" -c "$here/constraints.txt" expiring-dict sortedcontainers "watchdog>=4.0.0" "pydantic>=2.7" "pydantic-settings>=2.2.1" \
    "pynrrd>=1.0.0" "shapely>=2.0.4" "python-dotenv>=1.0.1" "filelock>=3.11.0" "pyyaml>=6.0.1" \
    "requests>=2.31.0" "cachetools>=5.3.3"
# 4. preload libcudart.so.13 at start-up (see header); a no-op when the library is not there
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$site/monai_das_cudart.pth" <<'PTH'
import sys; exec("try:\n import ctypes, glob, os, sysconfig\n for _p in glob.glob(os.path.join(sysconfig.get_paths()['purelib'], 'nvidia', 'cu*', 'lib', 'libcudart.so.*'))[:1]:\n  ctypes.CDLL(_p, mode=ctypes.RTLD_GLOBAL)\nexcept Exception:\n pass")
PTH
"$venv/bin/python" - <<'PY'
import numpy, torch
assert torch.__version__.startswith("2.13.0"), f"torch was replaced: {torch.__version__}"
assert int(numpy.__version__.split(".")[0]) >= 2, f"numpy was downgraded: {numpy.__version__}"
import monai
from monai.deploy.core import Application  # noqa: F401
import monailabel
import monai_das.deploy.app  # noqa: F401
print(f"monai_das deploy env ready: torch {torch.__version__}, numpy {numpy.__version__}, monai {monai.__version__}, "
      f"monailabel {monailabel.__version__}")
PY
