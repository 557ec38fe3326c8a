"""What the handlers share: attach once (tests/handlers/test_attach_once.py), rank and world size, gathering items
(across two gloo ranks: tests/bundles/test_multi_gpu.py)."""

from __future__ import annotations

import subprocess
import sys


def test_rank_world_after_the_process_group_is_destroyed(tmp_path):
    """multi_gpu_train.json's finalize destroys the process group; ignite's idist, once it has seen a group, then
    raises, so a report or model card written later in that process failed (review R68d). rank_world reads (0, 1)
    there, as outside a distributed run, and an evaluation report is written. Run in a child process: ignite's state
    is global."""
    script = f"""
import torch.distributed as dist
from ignite import distributed as idist
from monai_das.handlers.utils import rank_world
assert rank_world() == (0, 1)
dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0, world_size=1)
assert rank_world() == (0, 1) and idist.get_world_size() == 1  # ignite now holds the group
dist.destroy_process_group()
assert rank_world() == (0, 1)
import torch
from ignite.engine import Engine
from monai_das.handlers import ClassificationReportSaver
engine = Engine(lambda e, b: [{{"pred": torch.tensor([0.2, 0.8]), "label": torch.tensor(b)}}])
ClassificationReportSaver("{tmp_path / 'report'}", 2).attach(engine)
engine.run([0, 1, 1], max_epochs=1)
try:
    idist.get_rank()
    print("idist read the rank")
except ValueError:
    print("idist raised")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() in ("idist raised", "idist read the rank")
    assert (tmp_path / "report" / "metrics.json").is_file()


def test_gather_items_outside_a_distributed_run_is_the_list_itself():
    from monai_das.handlers.utils import gather_items

    items = [("a", 1), ("b", 2)]
    assert gather_items(items) is items
