"""Helpers for the bundle tests: run ``python -m monai.bundle ...`` on bundles/das_volume_classification, check exports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "das_volume_classification"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
TRAIN = str(CONFIGS / "train.json")
EVALUATE = str(CONFIGS / "evaluate.json")
INFERENCE = str(CONFIGS / "inference.json")
MULTI_GPU = str(CONFIGS / "multi_gpu_train.json")
VIDEO_BUNDLE = REPO / "bundles" / "das_video_classification"
VIDEO_CONFIGS = VIDEO_BUNDLE / "configs"
VIDEO_TRAIN = str(VIDEO_CONFIGS / "train.json")
VIDEO_EVALUATE = str(VIDEO_CONFIGS / "evaluate.json")
VIDEO_INFERENCE = str(VIDEO_CONFIGS / "inference.json")
DATA = Path(os.environ.get("MONAI_DAS_DATA", REPO.parent / "shared" / "data"))
SCHEMA = DATA.parent / "schemas" / "meta_schema_20240725.json"
#: small and fast: 2 iterations of 16 per epoch, 16 validation volumes, no progress bar
TINY = ["--num_train", "32", "--num_val", "16", "--batch_size", "16", "--progress_bar", "False", "--num_figures", "2"]


def config_arg(*files: str) -> str:
    return files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


def env(**extra: str) -> dict:
    e = dict(os.environ, **extra)
    e.pop("MLFLOW_TRACKING_URI", None)
    e["PYTHONUNBUFFERED"] = "1"
    # this checkout's package also from another working folder
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH")) if p)
    e.setdefault("OMP_NUM_THREADS", "1")  # the CI machine is shared: no thread oversubscription
    return e


def run_cmd(*configs: str, args=(), timeout: int = 600, check: bool = True, extra_env=None,
            cwd=None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file ... --meta_file ... --logging_file ... <args>`` from the repo root
    (or ``cwd``)."""
    folder = Path(configs[0]).parent  # the bundle of the first config gives metadata and logging
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg(*configs),
           "--meta_file", str(folder / "metadata.json"), "--logging_file", str(folder / "logging.conf"),
           *map(str, args)]
    return bundle(cmd, timeout=timeout, check=check, extra_env=extra_env, cwd=cwd)


def bundle(cmd, timeout: int = 600, check: bool = True, extra_env=None, cwd=None) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd or REPO, env=env(**(extra_env or {})), capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        pytest.fail(f"command failed ({out.returncode}): {' '.join(cmd)}\n--- output tail ---\n"
                    f"{(out.stdout + out.stderr)[-6000:]}")
    return out


def popen_train(args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", TRAIN, "--meta_file", META,
           "--logging_file", LOGGING, *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)





def load_network(bundle_root: Path, **overrides) -> torch.nn.Module:
    """``network_def`` of inference.json (with overrides) with ``models/model.pt`` loaded, in eval mode."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update({"bundle_root": str(bundle_root), **overrides})
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(Path(bundle_root) / "models" / "model.pt", weights_only=True))
    return net.eval()


def check_torchscript(ts_path: Path, net: torch.nn.Module, shape) -> None:
    """The exported TorchScript gives the checkpoint's outputs (finite) on new inputs, batch 1 and 3."""
    ts = torch.jit.load(str(ts_path)).eval()
    for b in (1, 3):
        x = torch.rand(b, *shape, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            ref, out = net(x), ts(x)
        assert ref.shape == out.shape == (b, net.num_classes)
        assert torch.isfinite(ref).all(), "the checkpoint gives non-finite logits"
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def check_onnx(onnx_path: Path, net: torch.nn.Module, shape) -> None:
    """MONAI's own ``onnx_export`` (one output: the logits of ``network_def``) run by onnxruntime gives the
    checkpoint's outputs."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = net(x).numpy()
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
