"""Classification metrics for the engines (ignite metrics, gathered across ranks under DDP)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.utils import IgniteInfo, min_version, optional_import

ConfusionMatrix, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ConfusionMatrix")

__all__ = ["BalancedAccuracy", "balanced_accuracy_from_confusion"]


def balanced_accuracy_from_confusion(cm: torch.Tensor) -> float:
    """
    Mean per-class recall of a ``C×C`` confusion matrix (rows: true class), over the classes that occur
    (as ``sklearn.metrics.balanced_accuracy_score``). NaN when no class occurs.
    """
    cm = torch.as_tensor(cm, dtype=torch.float64)
    support = cm.sum(dim=1)
    present = support > 0
    if not bool(present.any()):
        return float("nan")
    return float((cm.diagonal()[present] / support[present]).mean())


class BalancedAccuracy(ConfusionMatrix):
    """
    Balanced accuracy (mean per-class recall) of logits/probabilities ``B×C`` against integer labels ``B``,
    built on ignite's ``ConfusionMatrix`` (so it is all-reduced across ranks in distributed runs).

    Args:
        num_classes: number of classes ``C``.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
        device: where the running confusion matrix lives.
    """

    def __init__(
        self, num_classes: int, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(num_classes=num_classes, average=None, output_transform=output_transform, device=device)

    def update(self, output) -> None:  # type: ignore[override]
        y_pred, y = output[0], output[1]
        if isinstance(y_pred, (list, tuple)):  # decollated items (MONAI engines): C-long predictions, scalar labels
            y_pred = torch.stack([torch.as_tensor(p).reshape(-1) for p in y_pred])
        if isinstance(y, (list, tuple)):
            y = torch.stack([torch.as_tensor(t).reshape(-1)[0] for t in y])
        super().update((torch.as_tensor(y_pred).float(), torch.as_tensor(y).long().reshape(-1)))

    def compute(self) -> float:  # type: ignore[override]
        return balanced_accuracy_from_confusion(super().compute())
