"""``python -m monai_das.deploy --input ... --output ... --model ...``: run the DAS MONAI Deploy application."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence


class _Once(argparse.Action):
    """An option given at most once: ``-i a -i b`` is a usage error, not ``b`` alone with ``a`` silently dropped."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)!r} and {values!r}): give one "
                         "(a folder holds many studies; a CSV study list or a datalist lists them).")
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m monai_das.deploy",
        description="Classify studies (NIfTI, DICOM series, multi-frame DICOM, video) with an exported DAS bundle "
        "and write one JSON report per study (MONAI Deploy App SDK application, CPU by default).",
    )
    p.add_argument("-i", "--input", action=_Once, help="study file, folder of studies, CSV study list or datalist JSON "
                   "(default: $HOLOSCAN_INPUT_PATH or 'input')")
    p.add_argument("--dataset_dir", "--dataset-dir", action=_Once, metavar="DIR",
                   help="the folder every image of a CSV study list or datalist must lie in (default: the list's "
                   "folder; a row outside it, '../' or an absolute path elsewhere, refuses the list naming its line); "
                   "a datalist's relative paths start there, a CSV's from its own folder")
    p.add_argument("-o", "--output", action=_Once, help="report folder (default: $HOLOSCAN_OUTPUT_PATH or 'output')")
    p.add_argument("-m", "--model", action=_Once, help="bundle folder, ONNX file, TorchScript file or checkpoint "
                   "(default: $HOLOSCAN_MODEL_PATH or 'models')")
    p.add_argument("--config", help="bundle config with network_def, for a bare checkpoint")
    p.add_argument("--engine", choices=("onnxruntime", "torchscript", "eager"), default=None,
                   help="onnxruntime (default: models/model.onnx), torchscript (models/model.ts) or eager "
                   "(models/model.pt + configs/inference.json); a bundle without that engine's file falls back with "
                   "a warning")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--num_kept", "--num-kept", type=int, metavar="K",
                        help="frames (slices) kept per study at inference, 1 <= K <= T (default: the trained k of "
                        "the model card; another k needs the ONNX export or the checkpoint)")
    budget.add_argument("--keep_ratio", "--keep-ratio", type=float, metavar="R",
                        help="the same as a fraction of T: k = max(1, round(R*T)), 0 < R <= 1")
    p.add_argument("--prefer", choices=("torchscript", "checkpoint"), default=None,
                   help="former option: --prefer torchscript = --engine torchscript, checkpoint = --engine eager")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--sr", action="store_true", help="also write a DICOM Basic Text SR for each classified DICOM study")
    p.add_argument("--modalities", nargs="+", metavar="MOD",
                   help="accepted DICOM modalities, e.g. CT MR US (default: every image modality)")
    p.add_argument("--min-frames", type=int,
                   help="refuse studies with fewer slices/frames; 1 accepts a single slice or still image "
                   "(default: the model's recipe, 2; a lower one than the training's is warned about)")
    p.add_argument("--axcodes", help="orientation volumes are brought to, 'none' to keep the file's "
                   "(default: the model's recipe, RAS)")
    p.add_argument("--intensity-range", nargs=2, type=float, metavar=("MIN", "MAX"),
                   help="fixed intensity window scaled to [0, 1] (e.g. CT: -1000 400); default: the model's recipe "
                   "(a datalist model's options; [0, 1] for the synthetic data, [0, 255] for MedMNIST3D: files of "
                   "raw 0..255 values; min-max in cards before volume bundle 0.6.7)")
    p.add_argument("--percentiles", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="percentile window scaled to [0, 1] when no intensity range (default: the model's recipe, "
                   "0.5 99.5)")
    p.add_argument("--resize", choices=("stretch", "pad"),
                   help="volume resize mode (default: the model's recipe): stretch resizes each axis to the grid; pad "
                   "scales all axes by one factor (the ratio of the voxel counts is kept, which is the ratio in mm "
                   "only for isotropic voxels) and pads with zeros / crops to the grid; padding slices are reported as "
                   "'padding', never as a slice of the file")
    p.add_argument("--temporal-mode", choices=("uniform", "loop", "edge"),
                   help="how clips shorter than the network's T frames are lengthened (default: the model's recipe, "
                   "uniform; another one than the training's is warned about in the log and every report)")
    p.add_argument("--spatial-size", nargs=3, type=int, metavar=("D", "H", "W"),
                   help="override the network input grid (video: T H W) from the model card/metadata: another T than "
                   "the trained one is refused; another frame size is warned about in the log and every report (an "
                   "ONNX export takes only its own grid: --engine eager)")
    p.add_argument("-l", "--log-level", default="INFO", help="Python log level (default INFO)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the application. Exit status: 0 when every study was classified, 3 when some got error reports, 1 when the
    application could not run (model not loadable, input missing or empty).
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse's bare "unrecognized arguments": name the option meant (trial T58b: --num-keep)
        import difflib

        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
        hints = []
        for arg in (u.split("=", 1)[0] for u in unknown if u.startswith("-")):
            close = difflib.get_close_matches("--" + arg.lstrip("-").replace("_", "-"), options, n=1, cutoff=0.75)
            hints += [f"{arg}: did you mean {close[0]}?"] if close else []
        parser.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else ""))
    from monai_das.transforms.preprocessing import check_axcodes, check_intensity

    for flag, key in (("--intensity-range", "intensity_range"), ("--percentiles", "percentiles")):
        if getattr(args, key) is not None:  # a swapped window would invert every study: refused before anything runs
            try:
                check_intensity(**{key: getattr(args, key)})
            except ValueError as e:
                parser.error(f"{flag}: {e}")
    if args.axcodes is not None:  # 'RAX' would fail every study, one error report each, without naming --axcodes
        try:
            check_axcodes(args.axcodes, "--axcodes")
        except ValueError as e:
            parser.error(str(e))
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN")
    from monai_das.deploy.app import DASClassifierApp

    # only what was given: the rest comes from the model's preprocessing recipe (deploy.studies.spec_recipe)
    given = {
        "min_frames": args.min_frames,
        "axcodes": args.axcodes,
        "intensity_range": args.intensity_range,
        "percentiles": args.percentiles,
        "resize": args.resize,
        "temporal_mode": args.temporal_mode,
    }
    loader_options = {k: v for k, v in given.items() if v is not None}
    if str(loader_options.get("axcodes", "")).lower() == "none":
        loader_options["axcodes"] = None
    loader_options["allowed_modalities"] = args.modalities
    try:
        app = DASClassifierApp(
            input_path=args.input, output_path=args.output, model_path=args.model, config_file=args.config,
            dataset_dir=args.dataset_dir,
            engine=args.engine, prefer=args.prefer, device=args.device, write_sr=args.sr,
            loader_options=loader_options, num_kept=args.num_kept, keep_ratio=args.keep_ratio,
            spec_overrides={"spatial_size": args.spatial_size} if args.spatial_size else None,
        )
        app.run()
    except (OSError, ValueError, RuntimeError) as e:  # OSError: a missing file, an output that cannot be written
        logging.getLogger("monai_das.deploy").error("%s: %s", type(e).__name__, e)
        return 1
    n_err = sum(r["status"] != "ok" for r in app.reports)
    print(json.dumps({"output": str(app.output_path), "num_studies": len(app.reports), "num_errors": n_err}))
    return 3 if n_err else 0


if __name__ == "__main__":
    sys.exit(main())
