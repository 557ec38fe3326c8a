"""
Start-up checks of a bundle run, called from the configs' ``initialize`` lists: typos in command-line overrides,
a checkpoint folder that cannot be written, a resume without a checkpoint, a training batch BatchNorm cannot use.
They fail before the first epoch rather than after it.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_das.engines.utils import flag, optional
from monai_das.utils.io import LockedError, UnreadableFileError

__all__ = ["bundle_cli_overrides", "bundle_meta_file", "check_launch", "check_overrides", "check_writable",
           "check_resume", "check_tracking_uri", "train_drop_last"]

logger = logging.getLogger(__name__)

#: arguments of ``monai.bundle run`` / ``ConfigWorkflow`` that are not config overrides
RUN_ARGUMENTS = frozenset({
    "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
    "workflow_type", "workflow_name", "properties_path", "help",
})


def _is_bundle_cli(argv: Sequence[str]) -> bool:
    """``argv`` of ``python -m monai.bundle run ...`` (or ``torchrun -m monai.bundle run ...``)."""
    if len(argv) < 2 or argv[1] != "run":
        return False
    first = Path(argv[0])
    return first.name == "__main__.py" and first.parent.name == "bundle" and first.parent.parent.name == "monai"


def _as_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):  # a list in an --args_file
        return [str(v) for v in value]
    value = str(value).strip()
    if value.startswith("["):
        try:
            return [str(v) for v in ast.literal_eval(value)]
        except (ValueError, SyntaxError):
            pass
    return [value]


def _bundle_cli_args(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Every ``--key value`` / ``--key=value`` of a ``python -m monai.bundle run`` command line; empty otherwise."""
    argv = list(sys.argv if argv is None else argv)
    if not _is_bundle_cli(argv):
        return {}
    args: dict[str, str] = {}
    i = 2
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--") and len(tok) > 2:
            key, eq, value = tok[2:].partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            args[key.replace("-", "_") if key.replace("-", "_") in RUN_ARGUMENTS else key] = value
        i += 1
    return args


def _bundle_run_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """
    Every argument of a ``python -m monai.bundle run`` command line, those of its ``--args_file`` (JSON/YAML, plain
    data, nothing evaluated) included; the command line wins, as in MONAI's ``run``. Empty for any other command line.
    """
    args: dict[str, Any] = dict(_bundle_cli_args(argv))
    if args.get("args_file"):
        from monai.bundle import ConfigParser

        extra = ConfigParser.load_config_file(args["args_file"])
        args = {**{str(k): v for k, v in extra.items()}, **args}
    return args


def bundle_cli_overrides(argv: Sequence[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """
    ``({key: value}, config_files)`` of a ``python -m monai.bundle run`` command line (``sys.argv`` by default):
    the ``--key value`` / ``--key=value`` overrides (keys of an ``--args_file`` JSON/YAML included) and the
    ``--config_file`` list. Empty for any other command line (e.g. a Python session calling ``monai.bundle.run``).
    """
    return _overrides_and_configs(_bundle_run_args(argv))


def _overrides_and_configs(args: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    configs = _as_list(args["config_file"]) if args.get("config_file") else []
    overrides = {k: str(v) for k, v in args.items() if k not in RUN_ARGUMENTS}
    return overrides, [c for c in configs if c]


def _known_ids(config: Mapping, prefix: str = "") -> set[str]:
    ids = set()
    for k, v in config.items():
        key = f"{prefix}{k}"
        ids.add(key)
        if isinstance(v, Mapping):
            ids |= _known_ids(v, key + "#")
        elif isinstance(v, list):
            ids |= {f"{key}#{i}" for i in range(len(v))}
            for i, item in enumerate(v):
                if isinstance(item, Mapping):
                    ids |= _known_ids(item, f"{key}#{i}#")
    return ids


def check_launch(kind: str, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """
    Refuse a bundle run launched in a way its configs cannot run, before any work. Every config's ``initialize``
    runs this (``kind``: that config, ``"train"``, ``"evaluate"``, ``"multi_gpu"`` or ``"inference"``); the last
    config's ``initialize`` replaces the others', so the ``--config_file`` list of the command line decides, in any
    order (evaluate.json listed before multi_gpu_train.json retrained under ``torchrun`` and moved the trained model
    aside; trial T64a):

    - evaluate.json with multi_gpu_train.json, or under ``torchrun`` with several processes (``WORLD_SIZE``): an
      evaluation runs in one process (each would evaluate the whole split and write the card); inference.json with
      multi_gpu_train.json (under ``torchrun`` alone batch inference shards the studies);
    - evaluate.json without train.json (it is read on top of it; alone it failed in MONAI's parser), unless another
      config (one's own copy of train.json) is listed;
    - evaluate.json listed before train.json (train.json's keys replace its "+" merge entries, and its run trains:
      it would retrain over the model to evaluate);
    - multi_gpu_train.json without a distributed launch (no ``RANK``/``WORLD_SIZE``: torch's rendezvous error);
    - train.json without multi_gpu_train.json under ``torchrun`` with several processes — every process would train
      the whole model on its own and all but one be refused the checkpoint folder.

    Without a command line (a Python session calling ``monai.bundle``), ``kind`` alone decides.

    Raises:
        ValueError: naming the launch and the command to use.
    """
    install_error_summary()  # the first step of the configs' initialize: its refusal is said in short
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE") or 1)
    except ValueError:
        world = 1
    names = [Path(f).name for f in bundle_cli_overrides(argv)[1]]
    given = set(names)
    listed = ", ".join(names)
    evaluate = "evaluate.json" in given or (not given and kind == "evaluate")
    multi = "multi_gpu_train.json" in given or (not given and kind == "multi_gpu")
    if evaluate and (world > 1 or multi):
        how = f"launched by torchrun with {world} processes" if world > 1 else "with multi_gpu_train.json"
        raise ValueError(
            f"evaluate.json runs in one process ({how}, each process would evaluate the whole split and write the "
            "model card): run `python -m monai.bundle run --config_file \"['<bundle>/configs/train.json',"
            "'<bundle>/configs/evaluate.json']\"` without torchrun and without multi_gpu_train.json.")
    if "inference.json" in given and multi:  # (under torchrun alone, batch inference shards the studies)
        raise ValueError(
            f"the configs ({listed}) have inference.json with multi_gpu_train.json, which trains: batch inference is "
            "inference.json alone (under torchrun each process predicts its own shard of the studies).")
    if "evaluate.json" in given and kind == "train":  # its "+" entries were replaced by train.json's keys
        raise ValueError(
            f"the configs ({listed}) list evaluate.json before train.json: the last config's run replaces the "
            "others', so this would train again (into the bundle's models/, over the model to evaluate) instead of "
            "evaluating. List train.json first: `python -m monai.bundle run --config_file \"['<bundle>/configs/"
            "train.json','<bundle>/configs/evaluate.json']\"`.")
    if "evaluate.json" in given and not given - {"evaluate.json", "inference.json", "multi_gpu_train.json"}:
        raise ValueError(
            f"evaluate.json was given without train.json (configs: {listed}): evaluate.json is read on top of "
            "train.json (the data, network and recipe are train.json's). Run `python -m monai.bundle run "
            "--config_file \"['<bundle>/configs/train.json','<bundle>/configs/evaluate.json']\"`; batch inference on "
            "new studies is inference.json alone.")
    if multi and not ("RANK" in env and "WORLD_SIZE" in env):
        raise ValueError(
            f"the configs ({listed or 'multi_gpu_train.json'}) have multi_gpu_train.json, which trains in processes "
            "a distributed launcher starts (RANK and WORLD_SIZE are not set): run `torchrun --nproc_per_node N -m "
            "monai.bundle run --config_file \"['<bundle>/configs/train.json','<bundle>/configs/"
            "multi_gpu_train.json']\" ...`, or drop multi_gpu_train.json to train in one process.")
    if world > 1 and not multi and ("train.json" in given or (not given and kind == "train")):
        raise ValueError(
            f"launched by torchrun with {world} processes, but the configs ({listed or 'train.json'}) have "
            "no multi_gpu_train.json: every process would train the whole model on its own. Add it: --config_file "
            "\"['<bundle>/configs/train.json','<bundle>/configs/multi_gpu_train.json']\"."
        )


#: former bundle keys and what replaced them: an override of one is refused naming both (it would go unused)
RENAMED_KEYS = {
    "num_samples": "--num_kept K (slices/frames kept per study at inference) or --num_items N (cap of the split's "
                   "items; the former meaning of num_samples in inference.json)",
}


def bundle_meta_file(bundle_root: str | os.PathLike | None = None, argv: Sequence[str] | None = None) -> str | None:
    """
    The bundle's ``metadata.json`` for this run, as MONAI finds it: ``--meta_file`` of a ``python -m monai.bundle run``
    command line (``sys.argv`` by default; the first of a list) or of its ``--args_file``, else the ``metadata.json``
    beside its first ``--config_file`` (MONAI's default), else ``<bundle_root>/configs/metadata.json``; ``None`` when
    none exists. The model card reads it as plain JSON (the parsed ``@_meta_`` would rewrite every ``#`` of its text
    to ``::``).
    A run started in Python (``ConfigWorkflow``) passes ``card_meta_file`` itself.
    """
    args = _bundle_run_args(argv)
    candidates = []
    if args.get("meta_file"):
        candidates.append(_as_list(args["meta_file"])[0])
    configs = _overrides_and_configs(args)[1]
    if configs:
        candidates.append(str(Path(configs[0]).parent / "metadata.json"))
    if bundle_root is not None:
        candidates.append(os.path.join(bundle_root, "configs", "metadata.json"))
    return next((os.path.abspath(c) for c in candidates if os.path.isfile(c)), None)


def install_error_summary() -> None:
    """
    Make an uncaught error of the run end its traceback with one line naming the error that caused it: a refusal in a
    bundle config's ``$`` expression (a datalist line, a resume with another ``--lr``) ends MONAI's 60-135 lines with
    ``RuntimeError: Failed to evaluate ConfigExpression: "$monai_das..."``, the message that says what to do being
    in the middle. A refusal of this package (:func:`refusal_site`: a missing file, a bad datalist line or option)
    prints where it was raised and that line instead of the traceback (trial T69a: 64 lines and two tracebacks
    before the one that mattered; ``MONAI_DAS_TRACEBACK=1`` keeps the traceback); any other error prints its
    traceback as before. Installed once per process (``check_launch`` and ``check_overrides``, the first steps of
    every bundle config's ``initialize``, call it; the launch first: a wrong launch is refused before overrides are
    judged against configs it left out). A ``SIGTERM`` gets its line too
    (:func:`_say_when_terminated`), and so does Ctrl-C (``KeyboardInterrupt``, without its traceback unless
    ``MONAI_DAS_TRACEBACK=1``; a bundle command line ends on ``SIGINT`` itself, as on ``SIGTERM``).
    """
    _say_when_terminated()
    if getattr(sys.excepthook, "monai_das_summary", False):
        return
    previous = sys.excepthook

    def summary_hook(kind, error, tb):
        from monai_das.utils.logs import first_cause

        cause = first_cause(error) if isinstance(error, BaseException) else error
        where = None if _traceback_wanted() else refusal_site(cause)
        interrupted = issubclass(kind, KeyboardInterrupt)
        if interrupted and not _traceback_wanted():  # Ctrl-C is no error: the line SIGTERM gets, no traceback
            print(f"\n{_stopped_line('Ctrl-C (SIGINT)')}", file=sys.stderr, flush=True)
            return
        if where is None:
            previous(kind, error, tb)
        else:  # a refusal of the run's input or options: its message, not 60-135 lines of MONAI's frames (T69a)
            print(f"monai_das: refused at {where} (the whole traceback: {TRACEBACK_ENV}=1)", file=sys.stderr,
                  flush=True)
        if interrupted:  # Ctrl-C: the line SIGTERM gets
            print(f"\n{_stopped_line('Ctrl-C (SIGINT)')}", file=sys.stderr, flush=True)
            return
        if cause is not error or where is not None:  # (an error that wraps none ends its traceback already)
            print(f"\nmonai_das: the run stopped: {type(cause).__name__}: {cause}", file=sys.stderr, flush=True)
        if _lost_a_process(cause):  # gloo's "Connection reset by peer ... GLHF!" said nothing of what to do
            by = ("the loss of another process of this torchrun launch (killed, out of memory, or stopped by an "
                  "error: see its log)")
            print(f"\n{_stopped_line(by)}", file=sys.stderr, flush=True)

    summary_hook.monai_das_summary = True  # type: ignore[attr-defined]
    sys.excepthook = summary_hook


#: environment variable that keeps the whole traceback of a refusal (:func:`install_error_summary`)
TRACEBACK_ENV = "MONAI_DAS_TRACEBACK"
#: the errors a refusal of input or options raises (a bug's TypeError, KeyError, ... keeps its traceback), and
#: ``LockedError``: another run writes into the same folder (its 60-135 lines hid the advice; trial T70c);
#: ``UnreadableFileError``: a datalist's image that cannot be read (a traceback before the list of them; trial T71c)
_REFUSALS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError,
             LockedError, UnreadableFileError)


def _traceback_wanted() -> bool:
    """:data:`TRACEBACK_ENV` as a boolean (``0``/``false`` off); a value that is no boolean keeps the traceback."""
    try:
        return flag(os.environ.get(TRACEBACK_ENV) or "false")
    except ValueError:
        return True


def refusal_site(error: BaseException) -> str | None:
    """
    ``"<module file>:<line>"`` where ``error`` was raised when it is a refusal of this package: a ``ValueError`` or a
    missing/misplaced-file error raised by a ``raise`` statement of a ``monai_das`` module (a datalist line, an
    option, a resume under other settings) and wrapping no other error; ``None`` for anything else (an error of
    MONAI, torch or a reader, an error a built-in raised in this package's code, a bug's ``TypeError``, a refusal
    raised from another error, e.g. a custom encoder's), which keeps its whole traceback. An ``ItemLoadError`` (a
    training or validation item that could not be cached, named with its datalist line) is one when the error at the
    bottom of it is: a cut clip, an evidence frame past the clip's end.
    """
    from monai_das.data.cache import ItemLoadError
    from monai_das.utils.logs import root_cause

    if isinstance(error, ItemLoadError):  # a cached item: a refusal when what stopped it is one (trial T71c)
        root = root_cause(error)
        return _raise_site(error) if root is not error and refusal_site(root) is not None else None
    if not isinstance(error, _REFUSALS):
        return None
    if error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        return None  # it wraps another error (a custom encoder's bug, a reader's): that traceback is kept (R69)
    return _raise_site(error)


def _raise_site(error: BaseException) -> str | None:
    """``"<module file>:<line>"`` of the ``raise`` statement of a ``monai_das`` module that raised ``error``, else
    ``None``."""
    import linecache

    if error.__traceback__ is None:
        return None
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.abspath(filename).startswith(package + os.sep):
        return None
    if not linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise "):
        return None
    return f"{os.path.relpath(filename, os.path.dirname(package))}:{tb.tb_lineno}"


def _lost_a_process(error: BaseException) -> bool:
    """Whether ``error`` is a collective's failure because another process of the launch went away: the
    ``RuntimeError`` (or torch ``DistError``) gloo and NCCL raise when a peer's connection breaks. A rendezvous or
    collective timeout, or a configuration error, is not one."""
    text = str(error)
    return isinstance(error, RuntimeError) and ("gloo" in text or "NCCL" in text or "Dist" in type(error).__name__) \
        and any(s in text for s in ("Connection reset by peer", "Connection closed by peer", "remote process exit"))


def _stopped_line(by: str) -> str:
    """The line a run stopped by a signal ends with: what is kept and how to go on."""
    return (f"monai_das: the run was stopped by {by}; what it finished is kept (checkpoints and prediction rows are "
            "written atomically): run the same command again to go on (a training with --resume True; an inference "
            "skips the studies it wrote).")


def _say_when_terminated() -> None:
    """
    A ``SIGTERM`` (a scheduler's preemption, ``kill``, a stopped container) ended a run without a line: print one
    saying what is kept and how to go on, then end the process as the signal does (same exit status). Only where
    ``SIGTERM`` has its default action (a launcher's or the user's own handler stays) and in the main thread.

    Ctrl-C (``SIGINT``) of a ``python -m monai.bundle run`` command ends the same way where it has Python's default
    handler: during validation its ``KeyboardInterrupt`` unwound through the evaluator and the trainer, and MONAI's
    ``StatsHandler`` of each logged its traceback before the interpreter printed a third (trial h72b). A Python
    session (a notebook, ``ConfigWorkflow``) keeps its ``KeyboardInterrupt``. Checkpoints are written atomically:
    the last one stays whole and ``--resume True`` goes on from it.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    signals = [signal.SIGTERM] if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else []
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler and _is_bundle_cli(list(sys.argv)):
        signals.append(signal.SIGINT)

    owner = os.getpid()  # a forked data-loader worker inherits the handler: only the run's own process speaks

    def stopped(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        by = f"Ctrl-C ({name}, pid {owner})" if signum == signal.SIGINT else f"{name} (pid {owner})"
        try:  # one raw write: no reentrant stream call, and a closed stderr must not keep the process alive
            if os.getpid() == owner:
                os.write(2, f"\n{_stopped_line(by)}\n".encode())
        except OSError:
            pass
        finally:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for signum in signals:
        signal.signal(signum, stopped)


def check_overrides(
    argv: Sequence[str] | None = None, config_files: Iterable[str] | None = None, cutoff: float = 0.75
) -> dict[str, str]:
    """
    Refuse command-line overrides that look like typos of a key the bundle defines: ``--max_epoch 1`` (for
    ``max_epochs``) would otherwise add an unused key and train with the default. An override whose key (the part
    before the first ``#``) is not defined by any of the run's config files, nor by the other configs beside them
    (one argument list usually serves train, evaluate and inference), raises ``ValueError`` when a defined key
    is close to it (``difflib``, ``cutoff``), naming both, and so does a former key of :data:`RENAMED_KEYS`; one
    with no close key is only logged as a warning (it may be meant for a config of the user's own), naming a defined
    key it contains or is part of (``--early_stop_patience``: ``patience``).
    ``train#dataset#cache_rate``-style keys are checked down to the deepest part that exists, and their last part
    against the keys beside it (``--validate#spilt``: ``validate#split``).

    Only a ``python -m monai.bundle run`` command line is checked (``argv``, default ``sys.argv``); the config files
    are read as plain JSON/YAML (nothing is evaluated). Returns the overrides that were checked. Also installs
    :func:`install_error_summary` (a run's last line names the error that stopped it).
    """
    install_error_summary()
    overrides, files = bundle_cli_overrides(argv)
    files = list(config_files) if config_files is not None else files
    if not overrides or not files:
        return overrides
    from monai.bundle import ConfigParser
    from monai.bundle.utils import MERGE_KEY

    known: set[str] = set()
    top: set[str] = set()
    tops: dict[str, set[str]] = {}  # top-level keys of each config read
    numbers: dict[str, Any] = {}  # top-level keys whose default is a number: what an override of them must be
    flags: set[str] = set()  # top-level keys whose default is true/false: an override must be a boolean
    # every config of the bundles involved counts: one list of arguments usually serves train, evaluate and inference
    siblings = sorted({str(p) for f in files for p in Path(f).parent.glob("*.json") if p.name != "metadata.json"})
    for f in [*files, *(s for s in siblings if s not in files)]:
        try:
            config = ConfigParser.load_config_file(f)
        except Exception as e:  # the workflow itself reports unreadable configs
            logger.debug(f"override check skipped {f}: {e}")
            continue
        if isinstance(config, Mapping):
            # evaluate.json merges into train.json's keys ("+validate": {...}): the keys it defines are the same
            config = {str(k).removeprefix(MERGE_KEY): v for k, v in config.items()}
            known |= _known_ids(config)
            tops[f] = {str(k).split("#")[0] for k in config}
            top |= tops[f]
            # the options that default to the training's (inference.json, evaluate.json) have their defaults there
            defaults = config.get("option_defaults")
            for section in (config, defaults if isinstance(defaults, Mapping) else {}):
                numbers.update({str(k): v for k, v in section.items() if isinstance(v, (int, float))
                                and not isinstance(v, bool) and str(k) not in numbers})
                flags.update(str(k) for k, v in section.items() if isinstance(v, bool))
            known |= {str(k) for k in config}  # "validate#split": "test"-style keys of merged configs
    own = set().union(*(tops.get(f, set()) for f in files))  # top-level keys of this run's own configs
    typed = _bundle_cli_args(argv)  # as typed on the command line (an --args_file's null is kept by MONAI)
    pair = ("num_kept", "keep_ratio")
    # with the training's config (train.json + evaluate.json) --keep_ratio also names the trained model's ratio, so
    # one argument list serves training and evaluation at another k; inference.json takes it as the frame budget
    trains = any("train" in tops.get(f, set()) for f in files)
    if (not trains and any(set(pair) <= tops.get(f, set()) for f in files)
            and all(typed.get(k, "None") not in ("None", "null", "$None") for k in pair)):
        # inference.json's frame budget given twice: num_kept won without a word (the Deploy app refuses the pair)
        raise ValueError(f"--num_kept {typed['num_kept']} and --keep_ratio {typed['keep_ratio']} both give "
                         "the number of frames kept: give one of them (--num_kept: k frames of each study; "
                         "--keep_ratio: that share of its T).")
    for key in overrides:
        parts = key.split("#")
        if typed.get(key) == "None":
            # MONAI's `bundle run` reads it as None and drops a None command-line override
            logger.warning(f"override --{key} None has no effect: `python -m monai.bundle run` drops a command-line "
                           f"override whose value is None, so the --args_file's or the config's own value is used. "
                           f"Give --{key} '$None' to set it to None where the key takes none.")
            continue
        if not (overrides[key] == "None" and key not in typed):  # an --args_file null is taken as None, as MONAI does
            _check_number(key, overrides[key], numbers)
            _check_flag(key, overrides[key], flags)
        if key in typed:
            _check_literals(key, typed[key])
        if parts[0] in top:
            parent = "#".join(parts[:-1])
            if key not in known and len(parts) > 1 and parent not in known and not parent.endswith("+"):
                raise ValueError(f"override --{key}: '{parent}' is not defined in {', '.join(files)}.")
            if key not in known and len(parts) > 1 and not parts[-1].isdigit():
                # a typo of a key inside a defined one (--validate#spilt for validate#split) was added unused
                siblings_of = sorted(k[len(parent) + 1:] for k in known
                                     if k.startswith(parent + "#") and k.count("#") == key.count("#"))
                close = difflib.get_close_matches(parts[-1], siblings_of, n=1, cutoff=cutoff)
                if close:
                    raise ValueError(f"unknown override --{key}: '{parent}' defines no '{parts[-1]}' in "
                                     f"{', '.join(files)}; did you mean --{parent}#{close[0]}?")
            if parts[0] not in own:  # e.g. --num_kept (inference.json) given to evaluate.json: silently unused
                by = [Path(f).name for f in siblings if f not in files and parts[0] in tops.get(f, ())]
                logger.warning(f"override --{key} has no effect in this run: only {', '.join(by)} defines "
                               f"'{parts[0]}', not {', '.join(Path(f).name for f in files)}.")
            continue
        if parts[0] in RENAMED_KEYS:
            raise ValueError(f"override --{key}: the bundle configs ({', '.join(files)}) no longer define "
                             f"'{parts[0]}'; use {RENAMED_KEYS[parts[0]]}.")
        close = difflib.get_close_matches(parts[0], sorted(top), n=1, cutoff=cutoff)
        if close:
            raise ValueError(
                f"unknown override --{key}: the bundle configs ({', '.join(files)}) define no '{parts[0]}'; "
                f"did you mean --{close[0]}?"
            )
        # a defined key inside it (--early_stop_patience for patience) or it inside one: named, not refused
        inside = sorted((k for k in top if len(k) >= 4 and k in parts[0]
                         or len(parts[0]) >= 4 and parts[0] in k), key=lambda k: (-len(k), k))
        hint = f" Did you mean --{inside[0]}?" if inside else ""
        logger.warning(f"override --{key} is not a key of the bundle configs ({', '.join(files)}); it is added, "
                       f"but nothing uses it unless another config refers to it.{hint}")
    return overrides


def _literal_strings(parsed: Any, exact: Any, path: str = "") -> list[str]:
    """Where ``exact`` (the text read as JSON) holds ``true``/``false``/``null`` and ``parsed`` (as the bundle CLI
    reads it) a string instead: ``["spread", ...]``."""
    if isinstance(exact, Mapping) and isinstance(parsed, Mapping):
        return [p for k, v in exact.items() for p in _literal_strings(parsed.get(k), v, f"{path}{k}#")]
    if isinstance(exact, list) and isinstance(parsed, (list, tuple)) and len(exact) == len(parsed):
        return [p for i, (a, b) in enumerate(zip(parsed, exact)) for p in _literal_strings(a, b, f"{path}{i}#")]
    if (exact is None or isinstance(exact, bool)) and isinstance(parsed, str):
        return [path.rstrip("#")]
    return []


def _check_literals(key: str, value: str) -> None:
    """
    Refuse a dict or list override written with JSON's ``true``/``false``/``null`` inside it: the bundle CLI
    (``fire``) reads them there as the strings ``'true'``, ``'false'``, ``'null'``, and a string ``'false'`` is
    true: ``--sampler_kwargs '{"spread": false}'`` trained with ``spread`` on, ``{"pretrained": false}`` downloaded
    weights. Python's ``True``/``False``/``None`` are read as meant.
    """
    text = value.strip()
    if not text.startswith(("{", "[")):
        return
    try:
        from fire.parser import DefaultParseValue

        exact, parsed = json.loads(text), DefaultParseValue(text)
    except (ValueError, ImportError):  # not JSON: nothing of JSON's literals to misread
        return
    wrong = _literal_strings(parsed, exact)
    if wrong:
        words = {"true": "True", "false": "False", "null": "None"}
        # the literals outside strings only; quoted as a whole in single quotes, as the JSON's own quotes are double
        python = re.sub(r'"(?:\\.|[^"\\])*"|\b(true|false|null)\b',
                        lambda m: words[m.group(1)] if m.group(1) else m.group(0), text)
        raise ValueError(
            f"override --{key} {text}: the bundle command line reads JSON's true/false/null inside a dict or list as "
            f"the strings 'true'/'false'/'null' (at {', '.join(repr(w) for w in wrong)}), and the string 'false' "
            f"counts as true. Write Python's True/False/None: --{key} '{python}'."
        )


#: keys with a number default that also take a name (``--slice_axis axial``)
_NAMED_NUMBERS = frozenset({"slice_axis"})


def _check_number(key: str, value: str, numbers: Mapping[str, Any]) -> None:
    """An override of a key whose default is a number must be one (or an expression/reference): ``--max_epochs 2x``
    failed later inside another key's expression, ``invalid literal for int()``, without naming it."""
    if key not in numbers or key in _NAMED_NUMBERS or value.strip().startswith(("$", "@", "%")):
        return
    try:
        float(value)
    except ValueError:
        none = value.strip().lower() in ("none", "null")
        raise ValueError(f"override --{key} {value!r} is not a number (the bundle's default is {numbers[key]!r})"
                         + (": the text is passed on as it is, not as None; a number is needed here." if none else
                            ".")) from None


def _check_flag(key: str, value: str, flags: Iterable[str]) -> None:
    """An override of a key whose default is true/false must be a boolean (or an expression/reference):
    ``--find_unused_parameters flase`` failed later inside MONAI's "Failed to evaluate ConfigExpression", naming the
    expression, not the option."""
    if key not in flags or value.strip().startswith(("$", "@", "%")):
        return
    try:
        flag(value)
    except ValueError:
        raise ValueError(f"override --{key} {value!r} is not a boolean: give true or false (also yes/no, on/off, "
                         "1/0).") from None


def check_writable(*folders: str | os.PathLike, option: str = "--bundle_root", create: bool = True) -> None:
    """
    Create each folder and write (then delete) a probe file in it, so that a read-only ``bundle_root`` fails at
    start-up with an error naming the folder, not after the first epoch when the checkpoint is saved (``option``: the
    command-line option the message tells the user to change). ``create=False``: a folder that does not exist yet is
    not made; the probe goes into its nearest existing parent (which must be a folder), where it would be made.
    """
    for folder in folders:
        path = Path(folder)
        try:
            where = path
            if create:
                path.mkdir(parents=True, exist_ok=True)
            else:  # the folder the run would make it in
                while not where.exists() and where != where.parent:
                    where = where.parent
            if not where.is_dir():
                raise NotADirectoryError(20, "not a folder", str(where))
            fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=where)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise PermissionError(  # the cause is said: a refusal of its own (short, refusal_site)
                f"cannot write to '{path}' ({e.strerror or e}): the run writes its outputs there; choose a writable "
                f"{option}."
            ) from None


#: MLflow tracking-store schemes, used where MLflow's own registry cannot be read (a ``dialect+driver`` scheme such as
#: ``postgresql+psycopg2`` counts by its dialect)
TRACKING_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc",
                    "uc")


def _tracking_schemes() -> tuple[str, ...]:
    """The schemes MLflow's tracking-store registry knows (plugins' included), else :data:`TRACKING_SCHEMES`."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        known = tuple(k for k in _tracking_store_registry._registry if k)
        return known or TRACKING_SCHEMES
    except Exception:  # another MLflow version: the list above
        return TRACKING_SCHEMES


def check_tracking_uri(tracking_uri: Any, enabled: Any = True, timeout: float = 3.0) -> None:
    """
    Refuse at start-up an MLflow ``tracking_uri`` the run could not log to, naming the option, instead of MLflow's
    own error after the model is built (a misspelt scheme, ``sqlte:///...``, reads "Model registry functionality is
    unavailable") or minutes of retries (an ``http://`` server that does not answer: MLflow retries for ~4 minutes
    before the first epoch). ``enabled`` false (``--mlflow False``): nothing is checked.

    MLflow's ``MLFLOW_TRACKING_URI``, when set, is what MONAI's handler logs to (it wins over ``tracking_uri``): that
    URI is checked instead, named as the variable, and a warning says where the run goes when it is not
    ``tracking_uri`` (a database it names that looks unfinished is left as it is, warned). Refused: an empty value, a
    folder or ``file:`` URI (MLflow's file store, which MLflow and MONAI no longer take), a URI without ``://``
    (``databricks``: MONAI's handler takes ``databricks://...``), a scheme MLflow's tracking-store registry does not
    know, an in-memory ``sqlite://`` database (the run would be lost), a ``sqlite:///`` path that is not a file (a
    folder, ``/dev/null``), whose folder cannot be made or written, or that is not an SQLite database, and
    an ``http(s)`` server that does not answer a request within ``timeout`` seconds (any HTTP status counts, and a
    TLS handshake whose certificate is not trusted here: MLflow's own settings decide that; sent as MLflow sends it,
    through ``HTTP(S)_PROXY`` when set). A relative ``sqlite:///`` path is warned about (it is relative to the
    current folder, not ``bundle_root``). Credentials in the URI are not repeated in the message. A ``sqlite:///``
    database is made whole before the run (:func:`prepare_sqlite_tracking`).
    """
    if not flag(enabled) or (tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI")):
        return
    from urllib.parse import urlparse

    def shown(uri: str) -> str:
        parsed = urlparse(uri)
        return uri.replace(f"{parsed.username or ''}:{parsed.password}@", "***@") if parsed.password else uri

    from monai_das.engines.inference import launcher_shard

    speaks = launcher_shard()[0] == 0  # one warning per run, not one per torchrun process
    uri, option = "" if tracking_uri is None else str(tracking_uri), "--tracking_uri"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:  # MONAI's MLFlowHandler logs there, whatever tracking_uri says
        same = env == uri or ((database := _sqlite_file(env)) is not None and database == _sqlite_file(uri))
        if not same and speaks:
            logger.warning(f"MLFLOW_TRACKING_URI is set: MLflow logs this run to '{shown(env)}', not to "
                           f"--tracking_uri '{shown(uri)}' (unset the variable to log there).")
        uri, option = env, "MLFLOW_TRACKING_URI"
    where = f"{option} '{shown(uri)}'"
    choices = ("sqlite:///<file.db> (no server), http(s)://<server>, or a database URI; --mlflow False trains "
               "without tracking")
    if not uri.strip():
        raise ValueError(f"{option} is empty: give {choices}.")
    scheme = urlparse(uri).scheme.lower()
    known = tuple(k for k in _tracking_schemes() if k != "file")  # the file store: refused below
    if "://" not in uri or scheme == "file":  # what MONAI's MLFlowHandler refuses, after the model is built
        written = scheme if scheme in known else uri.strip().lower() if uri.strip().lower() in known else None
        if written:  # databricks, sqlite:x.db, http:host: MONAI takes only <scheme>://...
            raise ValueError(f"{where}: MONAI's MLflow handler takes '{written}://...' URIs only (e.g. "
                             f"{'sqlite:///<file.db>' if written == 'sqlite' else written + '://<host or profile>'}); "
                             f"--mlflow False trains without tracking.")
        hint = (f" (a database file? sqlite:///{os.path.abspath(uri)})" if scheme != "file"
                and uri.lower().endswith((".db", ".sqlite", ".sqlite3")) else "")
        raise ValueError(f"{where} is a folder (MLflow's file store, which MLflow and MONAI no longer take){hint}: "
                         f"give {choices}.")
    if scheme.split("+")[0] not in known:
        near = difflib.get_close_matches(scheme, known, n=1)
        raise ValueError(f"{where}: unknown scheme '{scheme}:'" + (f" (did you mean '{near[0]}:'?)" if near else "")
                         + f"; MLflow logs to {choices}; MLflow's stores: {sorted(known)}.")
    if scheme == "sqlite":
        path = _sqlite_file(uri)
        if path is None:
            raise ValueError(f"{where} is an in-memory database: the run would be lost when it ends. Give "
                             "sqlite:///<file.db>.")
        if not path.is_absolute() and speaks:
            logger.warning(f"{where} is a path relative to the current folder, not to bundle_root: the database is "
                           f"'{path.absolute()}' (sqlite:////<absolute path> names it wherever the run starts).")
        prepare_sqlite_tracking(uri, option)
    elif scheme in ("http", "https"):
        import requests

        try:
            requests.head(uri, timeout=timeout, allow_redirects=False)
        except requests.exceptions.SSLError:  # a server answered; whether its certificate is trusted is MLflow's
            return  # setting (MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH), not this check's
        except (requests.RequestException, ValueError) as e:
            raise ConnectionError(
                f"{where}: no MLflow server answers ({type(e).__name__}); start it, give another {option} "
                "(sqlite:///<file.db> needs no server) or train without tracking (--mlflow False)."
            ) from None


def warn_open_run(tracking_uri: Any, experiment_name: Any, run_name: Any, enabled: Any, resume: Any,
                  last_ckpt: Any) -> None:
    """
    Warn when a training resumed with ``--mlflow false`` (``enabled`` false, ``resume`` true and ``last_ckpt`` there)
    leaves unfinished the MLflow run the interrupted training logged to (``run_name`` in ``experiment_name`` of a
    ``sqlite:///`` ``tracking_uri`` that exists; nothing is created or opened otherwise): that run stays ``RUNNING``
    in the MLflow UI, its epochs stopping where the kill left them, without a word (trial T68a). Said once, naming
    the run and how to go on logging into it or end it; a database that cannot be read is passed over.
    """
    from monai_das.engines.inference import launcher_shard

    if flag(enabled) or not flag(resume) or last_ckpt is None or not os.path.isfile(str(last_ckpt)):
        return
    uri = os.environ.get("MLFLOW_TRACKING_URI") or ("" if tracking_uri is None else str(tracking_uri))
    database = _sqlite_file(uri) if launcher_shard()[0] == 0 else None
    if database is None or not database.is_file():
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(str(experiment_name))
        runs = [] if experiment is None else [  # filtered here: a quote in the name would break a filter string
            r for r in client.search_runs([experiment.experiment_id])
            if r.info.run_name == str(run_name) and r.info.status == "RUNNING"]
    except Exception:  # not MLflow's, locked, another schema: MLflow's own business
        return
    for run in runs:
        logger.warning(
            f"MLflow run '{run_name}' ({run.info.run_id}) in {uri} is still RUNNING: the interrupted training logged "
            "to it, and this resume with --mlflow false logs nothing there, so it stays RUNNING with the epochs before "
            "the interruption. Resume with --mlflow true to go on logging into it, or end it (FINISHED: a later "
            "resume with MLflow then makes a new run): python -c \"from mlflow.tracking import MlflowClient; "
            f"MlflowClient({uri!r}).set_terminated({run.info.run_id!r})\".")


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI (SQLAlchemy's form: ``sqlite:////abs`` or
    ``sqlite:///relative``); ``None`` for an in-memory database."""
    from urllib.parse import unquote

    path = uri[len("sqlite:///"):].split("?")[0] if uri.lower().startswith("sqlite:///") else ""
    # percent-encoded as monai.utils.path_to_sqlite_uri writes it (the bundles' tracking_uri), decoded by SQLAlchemy
    return Path(unquote(path)) if path and path != ":memory:" else None


def _unfinished_tracking_db(path: Path) -> str | None:
    """
    Why the MLflow database ``path`` is unfinished (its tables being created when the run that created it was
    killed: MLflow then fails on every later run, "table ... already exists"), or ``None``: a database holding runs,
    or whose schema is MLflow's latest, is MLflow's (its own messages); so is a file that is no SQLite database.
    """
    import sqlite3
    from urllib.parse import quote

    try:
        con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "runs" in tables and con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
            return None
        row = con.execute("SELECT version_num FROM alembic_version").fetchone() if "alembic_version" in tables else None
    except sqlite3.Error:
        return None
    finally:
        con.close()
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        head = _get_latest_schema_revision()
    except Exception:  # another MLflow version: its own checks
        return None
    version = row[0] if row else None
    return None if version == head else f"schema version {version}, not MLflow's {head}; no runs"


def prepare_sqlite_tracking(uri: str, option: str = "--tracking_uri") -> None:
    """
    Create the SQLite MLflow database of ``uri`` whole, or not at all: MLflow creates its ~30 tables in place, over
    seconds, so a run killed then left a half-made ``mlflow.db`` on which every later run into that bundle_root failed
    ("table trace_info already exists"; trial T59b), and two runs started at once raced on it. The tables are made in
    a temporary file beside it, which is then linked to the name only if no other run made one meanwhile. A database
    left unfinished that way by an earlier version (no runs, not MLflow's latest schema) is moved aside to
    ``<name>.unfinished-<time>-<pid>`` (warned) and made anew; a database holding runs is left to MLflow. Only rank 0
    of a ``torchrun`` launch (:func:`~monai_das.engines.inference.launcher_shard`: a stray ``RANK`` alone is no
    launch) makes it. A temporary file of a run killed while making one, untouched for 5 minutes, is removed.

    Raises:
        ValueError: the database's folder cannot be made, the file is not an SQLite database, or its tables cannot be
            made (a full disk), naming ``option`` (the setting the URI came from) and the file.
    """
    from monai_das.engines.inference import launcher_shard

    path = _sqlite_file(uri)
    if path is None or launcher_shard()[0] != 0:
        return  # (only rank 0 tracks)
    import time

    path = path.absolute()
    if path.exists() and not path.is_file():  # a folder, /dev/null, a pipe: never read, renamed or linked over
        raise ValueError(f"{option} '{uri}': '{path}' is not a file: give sqlite:///<file.db> or --mlflow False.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a new bundle_root: its folder is made later otherwise
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PermissionError(13, "no permission to write in its folder")
        with open(path, "rb") if path.is_file() else contextlib.nullcontext(None) as f:
            head = f.read(16) if f is not None else b""
    except OSError as e:
        raise ValueError(f"{option} '{uri}': the MLflow database '{path}' cannot be made or read "
                         f"({e.strerror or type(e).__name__}); give another {option} or --mlflow False.") from None
    if head and head != b"SQLite format 3\x00":
        raise ValueError(f"{option} '{uri}': '{path}' is not an SQLite database (MLflow's is): give another file "
                         f"or --mlflow False.")
    for old in path.parent.glob(f".{path.name}.*.tmp") if path.parent.is_dir() else ():
        try:  # a run killed while making one: its temporary file, untouched for 5 minutes
            if time.time() - old.stat().st_mtime > 300:
                old.unlink()
        except OSError:
            pass
    aside = seen = None
    if path.exists():
        seen = path.stat()
        why = _unfinished_tracking_db(path)
        if why is None:
            return
        if option != "--tracking_uri":  # a shared store the environment names: never moved aside from here
            logger.warning(f"{option}'s MLflow database '{path}' looks unfinished ({why}); left as it is (MLflow "
                           "may fail on it: 'table ... already exists').")
            return
        aside = path.with_name(f"{path.name}.unfinished-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    from monai.utils import path_to_sqlite_uri
    from mlflow.tracking import MlflowClient

    from monai_das.utils.io import _FILE_MODE

    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # a new name each time:
    os.close(fd)  # MLflow keeps a store per URI, whose tables it believes made
    tmp = Path(name)
    try:
        try:
            client = MlflowClient(tracking_uri=path_to_sqlite_uri(tmp))
            client.search_experiments(max_results=1)  # makes the tables
        except Exception as e:  # sqlite's "disk I/O error" under 40 lines of SQL named no file (trial T70a)
            first = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
            raise ValueError(f"{option} '{uri}': the MLflow database '{path}' could not be made ({type(e).__name__}: "
                             f"{first}): a full disk, or a folder that cannot be written? Free space, give another "
                             f"{option}, or --mlflow False.") from None
        engine = getattr(getattr(client, "_tracking_client", None), "store", None)
        if getattr(engine, "engine", None) is not None:
            engine.engine.dispose()  # the temporary file's connections
        os.chmod(tmp, _FILE_MODE)  # a plain new file's permissions (mkstemp's are the owner's alone)
        if aside is not None:
            now = path.stat() if path.exists() else None
            if now is not None and (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
                return  # another run replaced it meanwhile: that one is whole
            if now is not None:
                os.replace(path, aside)
            logger.warning(f"MLflow database '{path}' was unfinished ({why}: a run killed while MLflow created its "
                           f"tables?); moved to '{aside}' and made anew.")
        try:
            os.link(tmp, path)  # the name appears with every table made, and never over another run's database
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_resume(resume: Any, last_ckpt: str | os.PathLike, best_ckpt: str | os.PathLike | None = None) -> bool:
    """
    ``True`` when the run resumes from ``last_ckpt``. ``resume`` true without that file logs a warning and starts
    from scratch (so one command both starts and continues a run); ``resume`` false with that file logs a warning
    that the earlier run is replaced. Whether the checkpoint folder can be written is
    :func:`check_writable`'s job (the configs' ``initialize``).

    ``best_ckpt`` (the run's best-model file, ``model.pt``): when ``last_ckpt`` records that a best model was kept,
    that file must be there and readable, else the resume is refused before anything is written (a resumed run
    without it finished with no model, its model card stripped of its metrics; trial T59b). Without ``last_ckpt``,
    an earlier ``best_ckpt`` that this run would replace is warned about.
    """
    if not flag(resume):
        if Path(last_ckpt).is_file():  # a user who meant to continue would lose the earlier run without a word
            logger.warning(f"'{last_ckpt}' holds an earlier run of this bundle_root: this run starts from scratch "
                           "(resume false) and replaces it, and the trained model beside it, when it saves. To "
                           "continue that run give --resume True; to keep it, give another --bundle_root.")
        return False
    if not Path(last_ckpt).is_file():
        logger.warning(f"resume requested but there is no checkpoint '{last_ckpt}': starting from scratch"
                       + (f"; the model '{best_ckpt}' already there is replaced when this run saves its best "
                          "model (give another --bundle_root to keep it)" if best_ckpt and Path(best_ckpt).is_file()
                          else "") + ".")
        return False
    if best_ckpt is not None:
        _check_best_model(last_ckpt, best_ckpt)
    logger.info(f"resuming from '{last_ckpt}'.")
    return True


def check_resumable(resume: Any, last_ckpt: str | os.PathLike, settings: Any) -> None:
    """
    Before any data is cached: refuse a resume whose ``last_ckpt`` was written with other settings than this run's
    ``settings`` (its :class:`~monai_das.handlers.RunSettings`, the check the checkpoint's loading makes again). A
    changed datalist was refused only once the training data had been cached, ending in a traceback (trial T63a).
    Nothing to check without ``resume`` or without that file (:func:`check_resume` says so).
    """
    if not flag(resume) or not Path(last_ckpt).is_file():
        return
    from monai_das.utils.io import read_checkpoint

    saved = (read_checkpoint(last_ckpt) or {}).get("settings")
    if isinstance(saved, Mapping):
        settings.check(saved, warn=False)  # the warnings are the loading's


def _check_best_model(last_ckpt: str | os.PathLike, best_ckpt: str | os.PathLike) -> None:
    """Refuse a resume whose ``last_ckpt`` says a best model was kept when ``best_ckpt`` is missing or unreadable."""
    from monai_das.utils.io import read_checkpoint

    best = (read_checkpoint(last_ckpt) or {}).get("best_checkpoint") or {}
    if not best.get("_saved"):  # no validation kept a model yet: nothing to find
        return
    kept = f"the best model of the run that '{last_ckpt}' continues (epoch {best.get('best_epoch') or '?'})"
    after = ("a resumed run would end without a model, its model card without metrics. Put the file back, or "
             "start a new run (--resume False, or another --bundle_root).")
    if not Path(best_ckpt).is_file():
        raise FileNotFoundError(f"'{best_ckpt}', {kept}, is missing: {after}")
    try:
        read_checkpoint(best_ckpt)
    except Exception as e:
        raise ValueError(f"'{best_ckpt}', {kept}, cannot be read ({e}): {after}") from None


def train_drop_last(num_items: int, batch_size: int, network: Any = None) -> bool:
    """
    ``drop_last`` for a training data loader: ``True`` when the last batch would hold a single item (BatchNorm
    statistics of one item are meaningless, and with one kept frame BatchNorm fails outright). Raises
    ``ValueError`` up front when every batch would hold a single frame (``batch_size × k = 1``, ``k`` the frames
    the network's sampler keeps), naming both.
    """
    batch_size, num_items = int(batch_size), int(num_items)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    k = _kept_frames(network)
    if batch_size * (k or 2) < 2:
        raise ValueError(
            f"training with batch_size {batch_size} and k={k} kept frame(s) per item gives BatchNorm one frame per "
            "batch, which it cannot train on: use batch_size >= 2 or a larger keep_ratio."
        )
    drop = num_items > batch_size and num_items % batch_size == 1
    if drop:
        logger.info(f"{num_items} training items with batch_size {batch_size}: the one-item last batch is dropped "
                    "each epoch (a different item each epoch when shuffling).")
    return drop


def _kept_frames(network: Any) -> int | None:
    from monai_das.networks.utils import unwrap_network

    sampler = getattr(unwrap_network(network, require_sampler=False), "sampler", None) if network is not None else None
    k = getattr(sampler, "num_samples", None)
    return int(k) if optional(k) is not None else None
