"""``monai_das.utils.logs``."""

import logging

import pytest

from monai_das.utils import quiet_loggers
from monai_das.utils.logs import bounded_repr


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


def test_cause_chain_follows_the_traceback_python_shows():
    """``raise ... from None`` replaces the error under it: the chain stopped there only for ``__cause__``; a load
    error raised ``from None`` (a NIfTI too large for the memory) was named by the suppressed error under it in a
    cache's message. Implicit context is followed, explicit cause first."""
    from monai_das.utils.logs import cause_chain, first_cause, root_cause

    def raised(f):
        try:
            f()
        except Exception as e:
            return e
        raise AssertionError("nothing raised")

    def suppressed():
        try:
            raise MemoryError()
        except MemoryError:
            raise RuntimeError("study 'a': a 2048x2048x256 float32 volume needs 4 GiB") from None

    def implicit():
        try:
            raise OSError("the reader's own error")
        except OSError:
            raise ValueError("cannot read 'a.nii.gz'")

    def wrapped():
        try:
            suppressed()
        except RuntimeError as e:
            raise RuntimeError("applying transform <LoadStudyd>") from e

    e = raised(suppressed)
    assert cause_chain(e) == [e] and root_cause(e) is e
    e = raised(implicit)
    assert [type(x) for x in cause_chain(e)] == [ValueError, OSError]
    e = raised(wrapped)
    assert [str(x) for x in cause_chain(e)] == ["applying transform <LoadStudyd>",
                                                 "study 'a': a 2048x2048x256 float32 volume needs 4 GiB"]
    assert first_cause(e) is root_cause(e) is e.__cause__


def test_bounded_repr_of_what_a_user_gave():
    """Errors echo what a datalist, a model card or a user gave: a million class names or a 10 MB name must give a
    short message (first items, the count; the first characters, the length), a short value its plain repr."""
    assert bounded_repr(["a", "b"]) == "['a', 'b']" and bounded_repr(("a",)) == "('a',)" and bounded_repr(1.5) == "1.5"
    assert bounded_repr({"k": [1, 2]}) == "{'k': [1, 2]}" and bounded_repr(set()) == "set()"
    names = [f"class{i}" for i in range(10**6)]
    assert bounded_repr(names, 3) == "['class0', 'class1', 'class2', ... (1000000 in all)]"
    assert len(bounded_repr(names)) < 400 and bounded_repr(names).endswith(", 'class19', ... (1000000 in all)]")
    assert bounded_repr("y" * 10**7, max_chars=4) == "'yyyy'... (10000000 characters)"
    assert bounded_repr(["y" * 10**7]) == "['" + "y" * 80 + "'... (10000000 characters)]"
    nested = bounded_repr([[list(range(100))] * 100] * 100)  # a nested container: 20 x 3 items, none deeper
    assert nested.startswith("[[[... (100 in all)], [... (100 in all)], [... (100 in all)], ... (100 in all)], ")
    assert nested.count("[... (100 in all)]") == 20 * 3 and len(nested) < 2000
