"""The MONAI Label sample app tests reuse the deployment test helpers (tests/deploy/das_deploy_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "deploy"))
