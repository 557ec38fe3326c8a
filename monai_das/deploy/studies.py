"""
The deployment's view of the study layer (:mod:`monai_das.data.studies`, shared with bundle inference and the MONAI
Label app): the preprocessing recipe of a :class:`~monai_das.deploy.spec.ModelSpec` and a :class:`StudyLoader`
bound to it. Discovery (:func:`discover_studies`), :class:`StudySource` and :class:`Study` are the study layer's,
re-exported here for the deployment package's API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai_das.data.studies import LoadStudy, Study, StudySource, discover_studies
from monai_das.deploy.spec import ModelSpec

__all__ = ["RECIPE_OPTIONS", "spec_recipe", "StudyLoader", "Study", "StudySource", "discover_studies"]

logger = logging.getLogger(__name__)

#: recipe keys a deployment may override (the grid, layout and slice axis come from the :class:`ModelSpec`)
RECIPE_OPTIONS = ("min_frames", "axcodes", "pixdim", "intensity_range", "percentiles", "output_range", "resize",
                  "temporal_mode", "grayscale")
#: options that only volumes use: a clip's frames are decoded to [0, 1] and resized by area interpolation
VOLUME_ONLY_OPTIONS = ("axcodes", "pixdim", "intensity_range", "percentiles", "resize")


def spec_recipe(spec: ModelSpec, **options: Any) -> dict:
    """
    The preprocessing recipe of the network described by ``spec`` (see :func:`monai_das.transforms.check_recipe`).

    The grid comes from the spec (``layout``, ``spatial_size``, ``slice_axis``; for ``video`` ``num_frames`` and the
    frame size, ``grayscale`` when ``in_channels`` is 1). The other steps come from the spec's ``recipe``
    (:attr:`ModelSpec.recipe`: the bundle's own, recorded in the model card; unknown keys are ignored with a warning)
    or, without one, the bundles' defaults (RAS orientation, native spacing, 0.5–99.5
    percentile scaling to ``[0, 1]``, stretch resize, ``min_frames=2``, uniform temporal resampling); ``options``
    (keys of :data:`RECIPE_OPTIONS`) override them.

    Raises:
        ValueError: an unknown option, an option of :data:`VOLUME_ONLY_OPTIONS` for a ``video`` spec (it would be
            ignored: a clip's frames are decoded to ``[0, 1]`` and resized by area interpolation), or a spec recipe of
            another layout than the spec's.
    """
    unknown = sorted(k for k in options if k not in RECIPE_OPTIONS)
    if unknown:
        raise ValueError(f"unknown preprocessing option(s) {unknown}; the options are {list(RECIPE_OPTIONS)}.")
    unused = [k for k in VOLUME_ONLY_OPTIONS if k in options] if spec.layout == "video" else []
    if unused:
        raise ValueError(f"preprocessing option(s) {unused} apply to volume models only; this is a video model, whose "
                         "clips are decoded to [0, 1] (grey or RGB) and resized by area interpolation: remove them.")
    recipe: dict[str, Any] = {"axcodes": "RAS", "pixdim": None, "intensity_range": None, "percentiles": [0.5, 99.5],
                              "output_range": [0.0, 1.0], "resize": "stretch", "temporal_mode": "uniform",
                              "min_frames": 2}
    own = getattr(spec, "recipe", None)
    if isinstance(own, Mapping) and own:
        if own.get("layout", spec.layout) != spec.layout:
            raise ValueError(f"the model's recipe has layout {own.get('layout')!r}, its network {spec.layout!r}.")
        from monai_das.transforms.preprocessing import RECIPE_KEYS

        grid = ("layout", "spatial_size", "slice_axis", "num_frames")
        ignored = sorted(str(k) for k in own if k not in RECIPE_KEYS)
        if ignored:
            logger.warning("ignoring unknown key(s) %s of the model's recipe (the keys are %s).", ignored,
                           list(RECIPE_KEYS))
        recipe.update({k: v for k, v in own.items() if k in RECIPE_KEYS and k not in grid})
    if spec.layout == "volume":
        recipe.update(layout="volume", spatial_size=list(spec.spatial_size), slice_axis=int(spec.slice_axis))
        recipe.pop("grayscale", None)
    else:
        recipe.update(layout="video", num_frames=int(spec.num_frames), spatial_size=list(spec.frame_size),
                      grayscale=int(spec.in_channels) == 1)
    before = recipe.get("percentiles")
    recipe.update(options)
    if options.get("percentiles") is not None and recipe.get("intensity_range") is not None:
        # a fixed window wins over percentiles (volume_preprocessing): the option given would change nothing, and
        # the recipe keeps the value it had (the reports' model.recipe listed the option as if it were applied)
        logger.warning(f"percentiles {list(options['percentiles'])} has no effect: the recipe's fixed window "
                       f"intensity_range {list(recipe['intensity_range'])} scales the intensities (it wins over "
                       "percentiles); give intensity_range None as well to scale by percentiles.")
        recipe["percentiles"] = before
    return recipe


class StudyLoader(LoadStudy):
    """
    :class:`monai_das.data.LoadStudy` for the network described by ``spec``: its recipe is :func:`spec_recipe`
    (``spec`` + ``options``), its channels ``spec.in_channels``.

    Args:
        spec: the network's :class:`~monai_das.deploy.spec.ModelSpec`.
        allowed_modalities: DICOM modalities accepted (``None``: every image modality; see :class:`LoadStudy`).
        options: recipe overrides (:data:`RECIPE_OPTIONS`: ``min_frames``, ``axcodes``, ``pixdim``,
            ``intensity_range``, ``percentiles``, ``output_range``, ``resize``, ``temporal_mode``).

    An option that changes a step of the spec's own recipe (the training's, :attr:`ModelSpec.recipe`) is said in
    :attr:`overridden`, logged and added to every loaded study's ``warnings``: any changed step, ``temporal_mode``
    (short clips are filled with other frames) and a lower ``min_frames`` (studies training refused are classified)
    included; not a higher ``min_frames`` (it only refuses more short studies, each with an error report naming it)
    nor ``percentiles`` under a fixed ``intensity_range`` (not used).

    :meth:`load` (a :class:`StudySource` or a path) returns a :class:`Study`; errors as for :class:`LoadStudy`.
    """

    def __init__(self, spec: ModelSpec, allowed_modalities: Sequence[str] | None = None, **options: Any) -> None:
        self.spec = spec
        super().__init__(spec_recipe(spec, **options), in_channels=spec.in_channels,
                         allowed_modalities=allowed_modalities)
        own = getattr(spec, "recipe", None)
        self.guessed_intensity: str | None = None
        if (spec.layout == "volume" and not (isinstance(own, Mapping) and own)
                and not {"intensity_range", "percentiles"} & set(options)):
            # the grid is never guessed; a volume's intensity scaling would be, and a wrong one gives confident
            # wrong answers (a [0, 1]-window model read 0.5-99.5 percentiles: class 0 at p = 1.0)
            self.guessed_intensity = (
                "the model records no preprocessing recipe (no das_model#recipe in its model card, e.g. an export "
                "made with the bundle's template metadata.json), so its intensity scaling is not known: the default "
                "0.5-99.5 percentile scaling to [0, 1] was used. Give the training's --intensity-range or "
                "--percentiles, or use the model card its training wrote.")
            logger.warning(self.guessed_intensity)
        #: the options that change a step of the model's own recipe (as its training applied it), in words
        self.overridden: str | None = None
        if isinstance(own, Mapping) and own:
            def plain(v: Any) -> Any:  # (-1000.0, 400.0) as the recipe check normalises it, [-1000, 400] as written
                if not isinstance(v, (list, tuple)):
                    return v
                return [float(x) if isinstance(x, (int, float)) else x for x in v]

            # a window wins over percentiles (not used with one)
            unused = {"percentiles"} if self.recipe.get("intensity_range") is not None else set()
            changed = {k: (plain(own.get(k)), plain(self.recipe.get(k))) for k in options
                       if k in own and k in self.recipe and k not in unused
                       and plain(own.get(k)) != plain(self.recipe.get(k))}
            # a higher min_frames only refuses more short studies, each with an error report naming it: the studies
            # classified look as in training. A lower one classifies studies training never saw (a still repeated to
            # T frames), and another temporal_mode fills short clips with other frames: both are said
            before, after = changed.get("min_frames", (None, None))
            if isinstance(before, int) and isinstance(after, int) and after > before:
                del changed["min_frames"]
            t = f"T={self.recipe['num_frames']}" if self.recipe.get("num_frames") else "T"
            why = {"min_frames": " (studies with fewer slices/frames than training accepted are classified)",
                   "temporal_mode": f" (clips shorter than {t} frames are filled with other frames)"}
            if changed:
                self.overridden = (
                    "preprocessing other than the model's training recipe: "
                    + "; ".join(f"{k} trained {a!r}, used {b!r}{why.get(k, '')}" for k, (a, b) in changed.items())
                    + ": the network sees inputs unlike those it learnt from, and its answers may be wrong without "
                    "any other sign (the report's model.recipe is the one used).")
                logger.warning(self.overridden)

    def load(self, study: StudySource | str | os.PathLike) -> Study:
        loaded = super().load(study)
        extra = [w for w in (self.guessed_intensity, self.overridden) if w]
        if extra:
            loaded.info["warnings"] = [*loaded.info.get("warnings", []), *extra]
        return loaded
