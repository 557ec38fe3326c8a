"""Helpers of the bundles' command-line values and distributed set-up (monai_das.engines.utils)."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from monai_das.engines import distributed_sampler


def test_a_split_smaller_than_the_process_count_is_refused_by_name(monkeypatch):
    """Trial T62a: --num_val 1 under torchrun --nproc_per_node 2 stopped with MONAI's "the dataset length is less than
    the number of participating ranks", naming neither the split nor the way out."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    with pytest.raises(ValueError, match=r"the validation split holds 1 item\(s\), fewer than the 2 processes of this "
                                         r"run \(torchrun --nproc_per_node\).*\(--num_val, val_fraction\) or start "
                                         r"fewer processes"):
        distributed_sampler([0], "validation", shuffle=False, even_divisible=False)
    sampler = distributed_sampler([0, 1, 2], "validation", shuffle=False, even_divisible=False)
    assert list(sampler) == [1]  # MONAI's sampler: rank 1 of 2, no padding
    assert list(distributed_sampler([0], "training", shuffle=False, even_divisible=True)) == [0]  # padded, as MONAI
