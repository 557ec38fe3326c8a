"""
``keep_latest_best``: of validation epochs with the same best AUC, the bundles keep the earliest as ``model.pt`` by
default (MONAI's and Ignite's strict ``>``) and the latest with the option; the saver and MONAI's own record of the
best epoch (``StatsHandler``'s "Key metric ... at epoch") follow the same rule, so every line and file that names the
best epoch names the same one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("bundle", ["das_volume_classification", "das_video_classification"])
@pytest.mark.parametrize("value, latest", [(None, False), (True, True), ("false", False), ("True", True)])
def test_saver_and_evaluator_share_the_tie_rule(tmp_path, bundle, value, latest):
    """``--keep_latest_best false`` arrives from the command line as the string "false": it must mean False."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(tmp_path)
    if value is not None:
        parser["keep_latest_best"] = value
    parser.get_parsed_content("imports")
    assert parser.get_parsed_content("run_params#keep_latest_best") is latest
    assert parser.get_parsed_content("validate#best_saver#key_metric_greater_or_equal") is latest
    cmp = parser.get_parsed_content("validate#evaluator#metric_cmp_fn")
    assert cmp(1.0, 1.0) is latest  # a tie replaces the best only with the option
    assert cmp(0.9, 1.0) is False and cmp(1.0, 0.9) is True
