"""``monai_das.utils.logs``."""

import logging

import pytest

from monai_das.utils import quiet_loggers


def test_quiet_loggers_raises_levels_for_the_block_and_restores_them():
    loud, quiet = logging.getLogger("monai_das.test.loud"), logging.getLogger("monai_das.test.quiet")
    loud.setLevel(logging.DEBUG)
    quiet.setLevel(logging.CRITICAL)
    with pytest.raises(RuntimeError), quiet_loggers({loud.name: logging.WARNING, quiet.name: logging.WARNING}):
        assert loud.level == logging.WARNING and not loud.isEnabledFor(logging.INFO)
        assert quiet.level == logging.CRITICAL  # already quieter than asked: left as it is
        raise RuntimeError("restored even when the block fails")
    assert loud.level == logging.DEBUG and quiet.level == logging.CRITICAL


def test_log_once_lets_each_message_through_once(caplog):
    import logging

    from monai_das.utils.logs import log_once

    log_once("monai_das.test.noisy")
    log_once("monai_das.test.noisy")  # no second filter
    noisy = logging.getLogger("monai_das.test.noisy")
    assert len(noisy.filters) == 1
    with caplog.at_level(logging.WARNING, logger="monai_das.test.noisy"):
        for _ in range(3):
            noisy.warning("library X is not installed")
        noisy.warning("another notice")
    assert caplog.text.count("library X is not installed") == 1 and "another notice" in caplog.text


def test_quiet_other_ranks(monkeypatch):
    """Under torchrun every rank read the datalist and logged its checks and data facts: ranks > 0 keep errors only."""
    import logging

    import torch.distributed as dist

    from monai_das.utils.logs import quiet_other_ranks

    logger = logging.getLogger("monai_das_test_ranks")
    logger.setLevel(logging.INFO)
    assert not quiet_other_ranks(("monai_das_test_ranks",))  # no process group: nothing changes
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    assert not quiet_other_ranks(("monai_das_test_ranks",)) and logger.level == logging.INFO
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    assert quiet_other_ranks(("monai_das_test_ranks",)) and logger.level == logging.ERROR
