"""OnnxClassifier across fork: a DataLoader worker must not free a session it inherited (it waits forever)."""

from __future__ import annotations

import gc
import os
import time

import pytest
import torch

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")


def _child_exits(timeout: float = 60.0) -> int | None:
    """Fork a child that collects garbage and exits; its exit status, or None when it hung (then killed)."""
    pid = os.fork()
    if pid == 0:  # the child: what a DataLoader worker's garbage collection does
        gc.collect()
        os._exit(0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def test_a_forked_child_never_frees_an_inherited_session(tmp_path, monkeypatch):
    """The inference benchmark hung in CI: a num_workers=1 DataLoader worker's garbage collection freed an unused
    session inherited from the parent (an earlier export check's, in a reference cycle), and freeing an ONNX Runtime
    session whose thread pool stayed in the parent waits forever. Sessions are kept alive in a forked child."""
    from monai_das.engines import save_onnx
    from monai_das.networks import OnnxClassifier, build_classifier

    torch.manual_seed(0)
    path = save_onnx(build_classifier("uniform", 2, 8, keep_ratio=0.5).eval(), tmp_path / "m.onnx", [1, 8, 16, 16],
                     check=False)
    net = OnnxClassifier(path, num_threads=2)
    net(torch.rand(2, 1, 8, 16, 16))  # the session's thread pool runs
    cycle = {"net": net}
    cycle["self"] = cycle  # garbage only a collection frees, as a parsed config's leftovers are
    del net, cycle
    time.sleep(2)  # the pool's threads go to wait on its condition variable (freeing it in a child then waits forever)
    assert _child_exits() == 0  # None without the fix: the child hung (checked by switching the registry off)
    gc.collect()  # the parent frees it as usual
