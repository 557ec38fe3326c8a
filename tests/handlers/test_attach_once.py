"""attach_once: a handler attached twice runs once per event (MONAI's has_event_handler guard)."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events

from monai_das.handlers import PredictionWriter
from monai_das.handlers.utils import attach_once


def test_attach_once():
    calls = []
    engine = Engine(lambda e, b: None)
    for _ in range(2):
        attach_once(engine, Events.EPOCH_COMPLETED(every=1), calls.append)
        attach_once(engine, Events.STARTED, calls.append)
    engine.run([0], max_epochs=2)
    assert len(calls) == 3  # started once, two epochs


def test_a_handler_attached_twice_writes_each_row_once(tmp_path):
    """A bundle handler list naming a writer twice (or a config's writer attached again by hand) wrote every row
    twice per batch and counted each study twice (review R67d)."""

    def step(engine, batch):
        engine.state.batch = [{"id": i, "source": f"/data/{i}", "fingerprint": i, "error": ""} for i in batch]
        return [{"pred": torch.tensor([0.2, 0.8]), "indices": torch.tensor([1, 4])} for _ in batch]

    engine = Engine(step)
    writer = PredictionWriter(tmp_path / "predictions.csv", ["neg", "pos"])
    writer.attach(engine)
    writer.attach(engine)
    engine.run([["a", "b"], ["c"]], max_epochs=1)
    assert writer.num_written == 3
    assert (tmp_path / "predictions.csv").read_text().count("/data/") == 3
