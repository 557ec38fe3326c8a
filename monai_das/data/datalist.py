"""
User datalists for "train on your own data": a MONAI datalist JSON (Decathlon style) or a CSV of
``image,label[,group][,evidence][,split]`` rows, read into ``{"image", "label", "label_name", "group", "source_line"}`` items
with every bad row refused by file and line; a patient-level training/validation split; and the data facts
(channels, shapes, frame counts) read from the image headers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import shlex
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_das.data.listing import _label_index
from monai_das.data.video_io import VIDEO_EXTENSIONS, check_dicom_pixel_data, is_dicom, read_dicom_header
from monai_das.utils.config import MAX_CLASS_NAME_LENGTH, hidden_characters, parser_rewrites
from monai_das.utils.io import UnreadableFileError, file_digest
from monai_das.utils.logs import MAX_NAMED, bounded_repr

__all__ = [
    "DATALIST_SPLITS",
    "STUDY_LAYOUTS",
    "load_datalist",
    "datalist_splits",
    "datalist_classes",
    "classes_of_labels",
    "check_class_name",
    "check_class_names",
    "split_training",
    "check_study_shapes",
    "check_no_copies",
    "VOLUMES_ONLY",
]

logger = logging.getLogger(__name__)

#: the lists a MONAI datalist JSON may hold (a CSV holds the ``training`` list only)
DATALIST_SPLITS = ("training", "validation", "test")
#: ``"volume"``: channel-first ``C×D×H×W`` images; ``"video"``: ``T×C×H×W`` clips (as in ``SubsampledClassifier``)
STUDY_LAYOUTS = ("volume", "video")

_INT_RE = re.compile(r"^[+-]?\d+$")
#: a whole number written with a decimal point ("2.0"): what a spreadsheet or pandas writes for an integer column
_WHOLE_FLOAT_RE = re.compile(r"^[+-]?\d+\.0*$")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


# ---------------------------------------------------------------------------------------------------- reading files
def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"datalist '{path}' must be a MONAI datalist .json or a .csv file, got suffix {suffix!r}.")


def utf8_failure(path: str | os.PathLike, e: UnicodeDecodeError) -> tuple[int | None, str]:
    """
    ``(line, what)`` of the first byte of the text file ``path`` that is not UTF-8: ``what`` its value and offset in
    the file, and its line as Windows-1252 (a spreadsheet's 'CSV (comma delimited)' on Windows) reads it. ``e`` is a
    text reader's error, whose offset counts from the chunk it was decoding (8 KiB), not from the file: a ``é`` at
    byte 16524 (line 602) was named "at offset 140" (trial h72e); the file is read again to place it. ``line`` is
    ``None`` for UTF-16 text (said so), or (``what`` from ``e``) when the file cannot be read again or now decodes.
    """
    try:
        data = Path(path).read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as whole:
        start = whole.start
    except OSError:
        start = None
    else:
        start = None
    if start is None:
        return None, f"byte 0x{e.object[e.start]:02x}"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, "UTF-16 text, a spreadsheet's 'Unicode Text'"  # every line
    begin, end = data.rfind(b"\n", 0, start) + 1, data.find(b"\n", start)
    text = data[begin:end if end >= 0 else len(data)].rstrip(b"\r").decode("cp1252", errors="replace")
    shown = text if len(text) <= 80 else text[:77] + "..."
    return data.count(b"\n", 0, start) + 1, (f"byte 0x{data[start]:02x} at offset {start}, in {shown!r} as "
                                             "Windows-1252 reads it")


def _not_utf8(path: Path, e: UnicodeDecodeError) -> ValueError:
    """The refusal of a datalist/listing ``path`` that is not UTF-8 text, naming the file, line and byte."""
    line, what = utf8_failure(path, e)
    how = " (a spreadsheet's 'CSV UTF-8' format)" if Path(path).suffix.lower() != ".json" else ""
    return ValueError(f"{path}{'' if line is None else f':{line}'}: not UTF-8 text ({what}); save it as UTF-8{how}.")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook`` refusing an object with a key twice: ``json.load`` keeps the last silently (a second
    ``"training"`` list dropped the first's studies, ``"label": 0, "label": 1`` trained label 1; trial T64b)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key, out[key], value)
        out[key] = value
    return out


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno}).") from None
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    except _DuplicateKey as e:
        key, first, second = e.args
        shown = [v if isinstance(v, (str, int, float, bool)) or v is None else f"<{type(v).__name__}>"
                 for v in (first, second)]
        raise ValueError(f"{path}: an object has the key {key!r} twice ({shown[0]!r}, then {shown[1]!r}); JSON "
                         "readers keep one of them silently: keep one.") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a datalist (JSON arrays or objects within each other "
                         "beyond Python's recursion limit).") from None
    except ValueError as e:  # Python's own limits: an integer of more than 4300 digits
        raise ValueError(f"{path}: not readable as a datalist: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: datalist JSON must be an object with a 'training' list, not {type(data).__name__}.")
    return data


def csv_header(fieldnames: Sequence[str | None] | None, known: Sequence[str], where: str) -> list[str]:
    """
    The columns of a CSV header as every CSV reader here takes them: names stripped (``image, label``), and those of
    ``known`` in any case written in lower case (a spreadsheet's ``Image``, ``LABEL``). A column named twice (a known
    one in any case) is refused naming ``where`` (e.g. ``"<file>:1"``): ``csv`` keeps the last of a name, so labels
    would be read from a column the user did not mean (``Label`` and ``label``: which one would be a guess).
    """
    written = [(c or "").strip() for c in (fieldnames or [])]
    columns = [c.casefold() if c.casefold() in known else c for c in written]
    twice = next((c for c in columns if c and columns.count(c) > 1), None)
    if twice is not None:
        names = [w for w, c in zip(written, columns) if c == twice]
        case = ", its name read in any case" if len(set(names)) > 1 else ""
        raise ValueError(f"{where}: the CSV header has the column {twice!r} {columns.count(twice)} times "
                         f"({bounded_repr(names)}{case}): keep one.")
    return columns


def csv_rows(reader: csv.DictReader, path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """
    ``(line, row)`` of every row of ``reader`` as every CSV list here reads them (datalists, study lists): ``line``
    the physical line where the row starts (header = line 1; a quoted cell spanning lines named the row by its last
    line), a row whose every cell is blank skipped (a spreadsheet's trailing ``,,,,`` rows hold no item: they were
    refused as "the image is blank", trial T69a), said once at the end naming their lines.
    """
    blank = []
    for row in reader:
        cells = [v for v in row.values() if isinstance(v, str)] + [v for v in row.get(None) or [] if isinstance(v, str)]
        if not any(v.strip() for v in cells):
            blank.append(reader.line_num)
            continue
        yield reader.line_num - sum(v.count("\n") for v in cells), row
    if blank and (str(path), "blank rows") not in _warned_keys:
        _warned_keys.add((str(path), "blank rows"))
        shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
        logger.warning(f"{path}: {len(blank)} row(s) whose every cell is blank skipped (line(s) {shown}): no item.")


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` pairs (header = line 1), every cell stripped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: spreadsheets write a BOM
            reader = csv.DictReader(fh)
            columns = csv_header(reader.fieldnames, CSV_COLUMNS, f"{path}:1")
            missing = [c for c in ("image", "label") if c not in columns]
            if missing:
                other = next((sep for sep in (";", "\t", "|") if len(columns) == 1 and sep in columns[0]), None)
                hint = (f" Its cells are separated by {other!r}: a datalist CSV is comma-separated (save it as "
                        "'CSV (comma delimited)')." if other else "")
                raise ValueError(
                    f"{path}:1: the CSV header lacks the column(s) {missing}; it has {columns}. Expected a header "
                    f"'image,label[,group][,evidence][,split]'.{hint}"
                )
            reader.fieldnames = columns  # so that " label" or "Label" in a hand-written header counts as "label"
            rows = []
            for line, row in csv_rows(reader, path):
                if None in row:  # more cells than header columns: a shifted row would lose its group silently
                    raise ValueError(
                        f"{path}:{line}: {len(columns) + len(row[None])} cells for the {len(columns)} "
                        f"header columns {columns} (extra: {row[None]}); quote a value that holds a comma."
                    )
                rows.append((line, {k: (v or "").strip() for k, v in row.items()}))
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    return rows


def missing_list_hint(path: Path, split: str) -> str:
    """How a datalist of ``path``'s kind gives the ``split`` list (for errors about a missing one)."""
    if _kind(path) == "csv":
        return "a CSV gives it with a 'split' column (training, validation or test)"
    return f"a JSON datalist gives it as its {split!r} list"


def _file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist file '{path}' does not exist.")
    return path


def datalist_splits(path: str | os.PathLike) -> list[str]:
    """
    The lists that a datalist holds, in :data:`DATALIST_SPLITS` order (a CSV: ``["training"]``, or the values of its
    ``split`` column).

    Args:
        path: a MONAI datalist ``.json`` or a ``.csv`` file.

    Returns:
        e.g. ``["training", "test"]``: no ``"validation"`` means :func:`split_training` should make one.
    """
    path = _file(path)
    if _kind(path) == "csv":
        return [s for s in DATALIST_SPLITS if s in _raw_rows(path)]
    data = _read_json(path)
    return [s for s in DATALIST_SPLITS if s in data]


#: item keys (CSV columns) that name an item's patient, in order of precedence, matched in any case: ``group`` (MONAI
#: datalists' and this package's name) and the names patient columns have elsewhere (MONAI Label's image info,
#: ``read_video_listing``'s ``patient_id``, DICOM's ``PatientID``); a datalist naming its patients otherwise was split
#: by image, putting one patient in training and validation without a word
GROUP_KEYS = ("group", "patient_id", "PatientID", "patient", "subject_id", "subject")
_GROUP_KEYS_FOLDED = tuple(k.casefold() for k in GROUP_KEYS)


def _group_key(item: Mapping) -> str | None:
    """The key of ``item`` that names its patient (:data:`GROUP_KEYS`, any case), ``None`` when it has none."""
    keys = {str(k).casefold(): k for k in item}
    return next((keys[k] for k in _GROUP_KEYS_FOLDED if k in keys), None)


def _group_entry(item: Mapping) -> tuple[Any, Any]:
    """``(key, value)`` of the patient of ``item`` (:func:`_group_key`); ``(None, None)`` when it names none."""
    key = _group_key(item)
    return key, (item.get(key) if key is not None else None)


def _group_text(given: Any) -> str | None:
    """A patient value (:func:`_group_entry`) stripped; ``None`` when missing or blank: the patient is then the image
    itself (never ``str(None)``: a shared "None" group would join unrelated patients)."""
    text = str(given).strip() if given is not None else ""
    return text or None


def _given_group(item: Mapping) -> str | None:
    """An item's patient (``group``, or another of :data:`GROUP_KEYS`), stripped (:func:`_group_text`)."""
    return _group_text(_group_entry(item)[1])


def _check_patients_in_one_list(path: Path, rows: dict[str, list[tuple[str, dict]]], root: str) -> None:
    """Refuse a patient (``group``) or an image that is in two lists of the datalist, naming both places. The image is
    checked whether or not its rows give a group: the same file grouped in one list and not (or otherwise) in another
    is still one study on both sides."""
    first: dict[str, tuple[str, str]] = {}  # patient or image → (split, location)
    spelt: dict[str, tuple[str, str]] = {}  # a patient id folded (case, spaces) → (its first spelling, location)
    for split, entries in rows.items():
        for loc, item in entries:
            key, given = _group_entry(item)  # found once: checked, then read
            whole = isinstance(given, float) and given.is_integer()  # pandas writes an id column with gaps so
            if given is not None and (isinstance(given, bool) or not (isinstance(given, (str, int)) or whole)):
                # ["p1"] was the patient "['p1']", another than "p1"; NaN a patient "nan" (trial T64b)
                raise ValueError(f"{path}:{loc}: the patient ({key!r}) {given!r} is a {type(given).__name__}: a "
                                 "patient id is a text or a whole number.")
            group, image = _group_text(given), item.get("image")
            keys = []
            if group is not None:
                # 'PT002' and 'pt002 ' are one patient: read as two, they were split between training and test
                # (or training and validation) without a word (trial T58b); refused as class names that differ
                # only in case are
                folded = "".join(group.casefold().split())
                other = spelt.setdefault(folded, (group, loc))
                if other[0] != group:
                    raise ValueError(
                        f"{path}:{loc}: patient (group) {group!r} and {other[0]!r} ({path}:{other[1]}) differ only "
                        "in case or spaces: one patient spelt two ways would be read as two (its studies could land "
                        "in training and in validation or test). Spell each patient id one way."
                    )
                keys.append(("group:" + group, f"patient (group) {group!r}"))
            if isinstance(image, str) and image.strip():  # a blank image is reported with its line by load_datalist
                keys.append(("image:" + os.path.normpath(os.path.join(root, image.strip())),
                             f"image {image.strip()!r}"))
            for key, what in keys:
                seen = first.setdefault(key, (split, loc))
                if seen[0] != split:
                    raise ValueError(
                        f"{path}:{loc}: {what} is in the '{split}' list and in the '{seen[0]}' list "
                        f"({path}:{seen[1]}); keep each patient's studies in one list (split by patient, never by "
                        "study or frame)."
                    )


# ------------------------------------------------------------------------------------------------------- classes
def _raw_label(value: Any, where: str) -> str:
    """A label cell/value as a stripped string ("" when missing); lists, floats and booleans are refused."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{where}: label {value!r} must be a class name or an integer class index.")
    return str(value).strip()


def check_class_name(name: str, where: str) -> str:
    """
    ``name`` when it is a plain class name; ``ValueError`` naming ``where`` when MONAI's ``ConfigParser`` would not read
    it as itself (:func:`~monai_das.utils.config.parser_rewrites`: ``$``, ``%`` or ``@`` at its start, ``%#`` or
    ``@#`` in it): class names go into the model card, which MONAI bundle tools read with that parser (``$``
    expressions, ``%file#key`` macros that copy another file in, ``@`` references); or when it holds a character that
    prints as something else or nothing (:func:`~monai_das.utils.config.hidden_characters`: a newline, a
    right-to-left override), or when it is longer than :data:`MAX_CLASS_NAME_LENGTH` characters.
    """
    why = parser_rewrites(name)
    if why is not None:
        raise ValueError(f"{where}: class name {name!r} {why}; class names go into the model card: rename the class.")
    hidden = hidden_characters(name)
    if hidden:
        raise ValueError(f"{where}: class name {ascii(name)} holds characters that print as something else or "
                         f"nothing ({', '.join(hidden)}): it would read as another name, or another line, in logs and "
                         "reports; rename the class.")
    if len(name) > MAX_CLASS_NAME_LENGTH:  # written into every report, log line and predictions row
        raise ValueError(f"{where}: class name {name[:40]!r}... is {len(name)} characters long, more than "
                         f"{MAX_CLASS_NAME_LENGTH}; rename the class.")
    return name


def _json_label_names(path: Path, data: dict) -> list[str] | None:
    """The top-level ``"labels"`` of a Decathlon ``dataset.json`` (``{"0": "name", ...}`` or a list) as a list."""
    labels = data.get("labels")
    if labels is None:
        return None
    if isinstance(labels, list):
        names = [str(n) for n in labels]
    elif isinstance(labels, Mapping):
        by_index = {int(k): v for k, v in labels.items() if _INT_RE.match(str(k).strip())}
        if len(by_index) != len(labels) or sorted(by_index) != list(range(len(by_index))):
            raise ValueError(
                f"{path}: 'labels' must map the indices 0..N-1 to class names, got keys "
                f"{bounded_repr(sorted(labels, key=str))}."
            )
        names = [str(by_index[i]) for i in range(len(by_index))]
    else:
        raise ValueError(f"{path}: 'labels' must be an object {{\"0\": name, ...}} or a list, got "
                         f"{bounded_repr(labels)}.")
    return check_class_names(names, f"{path}: 'labels'")


def check_class_names(names: Sequence[Any], where: str, strip: bool = False, spelling: bool = False) -> list[str]:
    """
    ``names`` as a list of class names when they are distinct, non-blank names the model card can hold
    (:func:`check_class_name`): the one check of the classes a datalist, ``label_names``, a model card or MONAI
    Label's ``--conf labels`` give.

    Args:
        names: the class names, in class index order (each taken as ``str``).
        where: where they came from, named by every error (``"label_names"``, ``"--conf labels"``, a file's key).
        strip: strip each name of surrounding blanks first (names typed by a user); the names of a file or card are
            checked as they are, for they must stay the model's.
        spelling: also refuse two names that differ only in case, spaces, ``_``, ``-`` or ``.`` (``Normal,normal``),
            as a datalist's labels are refused (:func:`classes_of_labels`): for names a user gives for a new
            training; a model card's names are the model's, trained so, and stay readable.

    Raises:
        ValueError: no name, a blank name or a name given twice; a name :func:`check_class_name` refuses; with
            ``spelling``, two names spelled alike.
    """
    given = [str(n).strip() if strip else str(n) for n in names]
    blank = [i for i, n in enumerate(given) if not n.strip()]
    twice = [n for n, c in Counter(given).items() if c > 1]
    if not given or blank or twice:
        why = ("none given" if not given else f"name {blank[0] + 1} is blank" if blank
               else f"{bounded_repr(twice[0])} is given {Counter(given)[twice[0]]} times")
        raise ValueError(f"{where} must be distinct, non-blank class names ({why}), got {bounded_repr(given)}.")
    checked = [check_class_name(n, where) for n in given]
    twins = _spelling_twins(checked) if spelling else None
    if twins is not None:
        (first, second), how = twins
        raise ValueError(f"{where}: the class names {first!r} and {second!r} differ only in {how}: two classes, or "
                         f"one spelled two ways? Spell each class one way (a datalist's labels are refused so too).")
    return checked


#: values of a CSV's optional ``split`` column (case-insensitive; blank: training)
CSV_SPLIT_VALUES = {"": "training", "training": "training", "train": "training", "validation": "validation",
                    "val": "validation", "test": "test"}


def _raw_rows(path: Path) -> dict[str, list[tuple[str, dict]]]:
    """``split → [(location, raw item), ...]`` without any checks beyond the file's structure."""
    if _kind(path) == "csv":
        out: dict[str, list[tuple[str, dict]]] = {}
        for line, row in _read_csv(path):
            value = row.get("split", "").lower()
            if value not in CSV_SPLIT_VALUES:
                raise ValueError(
                    f"{path}:{line}: split {row['split']!r} is not one of {sorted(set(CSV_SPLIT_VALUES) - {''})} "
                    "(blank: training)."
                )
            out.setdefault(CSV_SPLIT_VALUES[value], []).append((str(line), row))
        return out or {"training": []}
    data = _read_json(path)
    out = {}
    for split in DATALIST_SPLITS:
        if split in data:
            entries = data[split]
            if not isinstance(entries, list):
                raise ValueError(f"{path}: '{split}' must be a list, got {type(entries).__name__}.")
            # a Decathlon "test" list may hold plain image paths
            out[split] = [(f"{split}[{i}]", e if isinstance(e, dict) else {"image": e}) for i, e in enumerate(entries)]
    return out


def _classes_of(path: Path, rows: dict[str, list[tuple[str, dict]]], names: list[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    values: dict[str, str] = {}  # label → first location, for the error message
    counts: Counter[str] = Counter()
    for split, entries in rows.items():
        for loc, item in entries:
            value = _raw_label(item.get("label"), f"{path}:{loc}")
            if value and not (split == "test" and value == "-1"):  # -1 marks an unlabelled test item
                values.setdefault(value, f"{path}:{loc}")
                counts[value] += 1
    return classes_of_labels(values, str(path), counts)


def _one_typo_apart(a: str, b: str) -> bool:
    """``b`` is ``a`` with one character inserted, deleted or replaced (a digit by a digit does not count:
    ``grade1``/``grade2`` are meant), or two neighbouring characters swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return not (a[diff[0]].isdigit() and b[diff[0]].isdigit())
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


_SPELLING_RE = re.compile(r"[\s_.\-]+")


def _spelling_twins(names: Sequence[str]) -> tuple[tuple[str, str], str] | None:
    """The first two of ``names`` that differ only in case, spaces, ``_``, ``-`` or ``.`` (``non-covid``/``Non_Covid``)
    and how (``"case"`` or ``"case, spaces or punctuation"``), else ``None``."""
    folded: dict[str, str] = {}
    for v in names:
        other = folded.setdefault(_SPELLING_RE.sub("", v.casefold()), v)
        if other != v:
            return (other, v), "case" if other.casefold() == v.casefold() else "case, spaces or punctuation"
    return None


def misspelt_class(name: str, classes: Sequence[str]) -> str | None:
    """
    The class of ``classes`` (other than ``name``) that the label ``name`` is most likely a misspelling of: one typo
    apart once case, spaces and punctuation are folded (``_one_typo_apart``), else ``None``. Short names (both under 4
    characters) count only a character typed twice or left out (``bb`` for ``b``), not one replaced: ``a``/``c`` or
    ``T1``/``T2`` are names of their own.
    """
    if _INT_RE.match(name):  # class indices: '10' beside '0' is no typo
        return None
    folded = _SPELLING_RE.sub("", name.casefold())
    for other in classes:
        spelt = _SPELLING_RE.sub("", other.casefold())
        if other == name or not spelt or not _one_typo_apart(folded, spelt):
            continue
        if max(len(folded), len(spelt)) >= 4 or len(folded) != len(spelt):
            return other
    return None


def classes_of_labels(values: Mapping[str, str], source: str, counts: Mapping[str, int] | None = None) -> list[str]:
    """
    Class names from the distinct labels of a listing (``values``: label → where it first occurs, for errors):
    integer labels are class indices, ``["0", ..., str(max)]`` (every index must occur); else the names sorted.
    Refuses a mix of indices and names, and two names that differ only in case, spaces, ``_``, ``-`` or ``.``
    (``non-covid``/``Non_Covid``). With ``counts`` (label → number of items) it warns about a name of at most 2
    items that is one typo away from a name of at least 5 and 5× as many items (``malignnt`` beside ``malignant``,
    ``brigth`` once beside 7 ``bright`` in a small study: it would become a class of its own); a warning, not an
    error, since real classes can be that close (``EMCI``/``LMCI``, ``Grade II``/``Grade IV``).
    """
    if not values:
        return []
    for v, where in values.items():
        if not _INT_RE.fullmatch(v):  # a class index, not a name: one of too many digits is named as such below
            check_class_name(v, where)
    ints = [v for v in values if _INT_RE.match(v)]
    whole = [v for v in values if _WHOLE_FLOAT_RE.match(v)]
    if whole and len(ints) + len(whole) == len(values):  # as names they would sort "0.0", "1.0", "10.0", "2.0"
        shown = sorted(values, key=float)
        raise ValueError(
            f"{source}: the labels {shown[:12]}{' ...' if len(shown) > 12 else ''} are whole numbers written with a "
            f"decimal point ({whole[0]!r} at {values[whole[0]]}; a spreadsheet or pandas writes an integer column "
            "that held a blank cell that way). Class indices are integers: write them as 0, 1, 2, ...; if they are "
            "class names, give label_names in the order you want them."
        )
    if len(ints) == len(values):  # integer labels are class indices: classes "0".."max"
        huge = next((v for v in ints if len(v.lstrip("+-")) > 9), None)
        if huge is not None:  # not a class index, and int() of more than 4300 digits fails without a name
            raise ValueError(f"{source}: the label {huge[:12]}{'...' if len(huge) > 12 else ''} at {values[huge]} is "
                             f"no class index (an integer of {len(huge.lstrip('+-'))} digits).")
        top = max(int(v) for v in ints)
        unused = [i for i in range(top + 1) if str(i) not in values]
        if unused:  # labels 1, 2 (a 1-based grading) would add an empty class 0 and a NaN macro AUC
            raise ValueError(
                f"{source}: integer labels are class indices 0..{top}, but no item has class {bounded_repr(unused)} "
                f"(labels {bounded_repr(sorted(ints, key=int))}). A test list of a model trained before: give "
                "label_names with the model's classes in its order (each label an index into them). Otherwise "
                "renumber them from 0, or name the classes (a top-level 'labels' in the JSON, or label_names) so that "
                "every index is meant."
            )
        return [str(i) for i in range(top + 1)]
    twins = _spelling_twins(list(values))
    if twins is not None:
        (other, v), how = twins
        raise ValueError(
            f"{source}: the labels {other!r} ({values[other]}) and {v!r} ({values[v]}) differ only in {how}: two "
            "classes, or one spelled two ways? Spell each class one way."
        )
    if counts:  # a rare name one typo from a frequent one: most likely misspelt (but EMCI/LMCI are both classes)
        spelled = {v: _SPELLING_RE.sub("", v.casefold()) for v in values}  # case, spaces and punctuation folded
        frequent = [v for v in values if counts.get(v, 0) >= 5]
        for rare in sorted(v for v in values if counts.get(v, 0) <= 2 and not _INT_RE.match(v)):
            n = counts.get(rare, 0)
            for common in sorted(frequent, key=lambda v: (-counts[v], v)):
                a, b = spelled[rare], spelled[common]
                if counts[common] >= 5 * n and max(len(a), len(b)) >= 4 and _one_typo_apart(a, b):
                    logger.warning(
                        f"{source}: the label {rare!r} ({values[rare]}) occurs in {n} item{'s' * (n > 1)} and is one "
                        f"typo away from {common!r} ({counts[common]} items, first at {values[common]}): if it is "
                        f"misspelt, fix it, or {rare!r} becomes a class of its own (now {len(values)} classes); if "
                        "both are classes, nothing to do."
                    )
                    break
    if ints:
        name = next(v for v in values if v not in ints)
        raise ValueError(
            f"{source}: labels mix class indices and class names ({ints[0]!r} at {values[ints[0]]}, {name!r} at "
            f"{values[name]}); write every label the same way: all class names, or all indices (a JSON datalist "
            "may name the indices in a top-level 'labels': {\"0\": name, ...}; a CSV's classes are its own labels)."
        )
    if all(_is_number(v) for v in values):  # grades 1.5, 2.0, 10.0: by value ("10.0" sorts before "2.0" as text)
        return sorted(values, key=float)
    names = sorted(values)
    if names != sorted(values, key=lambda v: (v.casefold(), v)):  # "Yes" before "no": capitals sort first
        logger.warning(
            f"{source}: the classes are the labels sorted by character code, capitals first: "
            f"{', '.join(f'{i} {n!r}' for i, n in enumerate(names[:MAX_NAMED]))}"
            f"{' ...' if len(names) > MAX_NAMED else ''}"
            f"{' (class 1 is the positive class of sensitivity and specificity)' if len(names) == 2 else ''}. If "
            "another order is meant, give label_names in that order."
        )
    return names


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def classes_declared(path: str | os.PathLike) -> bool:
    """Whether a datalist names its classes itself (a JSON's top-level ``"labels"``), so that no label of an item
    can make a class of its own (a CSV's classes are its labels)."""
    path = _file(path)
    return _kind(path) == "json" and _json_label_names(path, _read_json(path)) is not None


def datalist_classes(path: str | os.PathLike, dataset_dir: str | os.PathLike | None = None,
                     label_names: Sequence[str] | None = None) -> list[str]:
    """
    The class names of a datalist, taken from the whole file (every split), so that the training, validation and
    test items of one file agree on the label indices.

    Args:
        path: a MONAI datalist ``.json`` or a ``.csv`` file (see :func:`load_datalist`).
        dataset_dir: accepted so that this call takes the same arguments as :func:`load_datalist`; class names do
            not depend on where the images are.
        label_names: the classes in the order the user wants them (index = position; the bundle's
            ``label_names``): how a CSV, which has no ``"labels"``, names its class order (e.g. ``["normal",
            "abnormal"]``: ``abnormal`` is class 1, where sorted names would make it 0). String labels must be
            among them and integer labels index them (checked item by item by :func:`load_datalist`). Refused when
            they are not distinct non-blank names, or when a JSON's own ``"labels"`` name other classes (one source
            of class names, never two that disagree); the same classes in another order are read by name
            (:func:`load_datalist`: an integer label indexes the file's own list).

    Returns:
        ``label_names`` when given; else the JSON's top-level ``"labels"`` (``{"0": "name", ...}`` as in a
        Decathlon ``dataset.json``) when given; else, when every label is an integer, ``["0", ..., str(max
        label)]``; else the distinct label names sorted. Blank labels and the ``-1`` of unlabelled test items are not
        classes.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is neither JSON nor CSV, a CSV header without ``image``/``label``, malformed
            ``"labels"``, labels that mix names and integers without class names, or ``label_names`` as above.
    """
    del dataset_dir  # see the docstring: class names are a property of the file alone
    path = _file(path)
    names = _json_label_names(path, _read_json(path)) if _kind(path) == "json" else None
    if label_names is None:
        return _classes_of(path, _raw_rows(path), names)
    if isinstance(label_names, str) or not isinstance(label_names, Sequence) or len(label_names) < 2:
        raise ValueError(f"label_names must list the class names in order (at least 2), got "
                         f"{bounded_repr(label_names)}.")
    given = check_class_names(label_names, "label_names", strip=True)
    if names is not None and sorted(names) != sorted(given):
        # what differs, named: both lists shown bounded may end before it (more than MAX_NAMED classes; review r72f)
        only = {"'labels'": sorted(set(names) - set(given)), "label_names": sorted(set(given) - set(names))}
        differ = "; ".join(f"only in {k}: {bounded_repr(v)}" for k, v in only.items() if v)
        raise ValueError(f"{path}: its top-level 'labels' name the classes {bounded_repr(names)}, label_names gives "
                         f"{bounded_repr(given)} ({differ}): give one of them (or the same classes, in any order).")
    return given


def _by_json_name(raw: str, names: Sequence[str] | None, classes: Sequence[str]) -> str:
    """An item's label ``raw`` as a class name of ``classes`` when the JSON's own ``"labels"`` (``names``) list the
    same classes in another order: an integer label indexes the file's own list, so it is read by its name there
    (an external test list coded ``{"0": "malignant", "1": "benign"}`` for a model trained on ``benign, malignant``:
    its ``--label_names`` was refused, trial T68b); otherwise ``raw`` as it is."""
    if names is None or list(names) == list(classes) or not _INT_RE.match(raw):
        return raw
    return names[int(raw)] if 0 <= int(raw) < len(names) else raw


# ------------------------------------------------------------------------------------------------------ datalists
def _inside(path: str, root: str) -> bool:
    """Whether ``path`` lies in the folder ``root``: as written (a symbolic link inside ``root`` is allowed), or with
    both resolved (the folder written through a link on one side and by its own path on the other: macOS's ``/tmp``
    and ``/private/tmp``, a mounted drive; trial T69c)."""
    def within(p: str, r: str) -> bool:
        p, r = os.path.normcase(p), os.path.normcase(r)  # Windows: C:\Data and c:\data are one folder (R69)
        try:
            return os.path.commonpath([p, r]) == r
        except ValueError:  # different drives (Windows) or a mix of absolute and relative paths
            return False

    return within(path, root) or within(os.path.realpath(path), os.path.realpath(root))


def dataset_root(path: str | os.PathLike, dataset_dir: str | os.PathLike | None = None) -> str:
    """The folder every image of the list ``path`` (a datalist, a CSV study list) must lie in: ``dataset_dir``, else
    the list's folder; absolute and normalised (``os.path.normpath``: the check is on written paths, not symlink
    targets).

    Raises:
        FileNotFoundError: it is not a folder.
    """
    root = os.path.normpath(os.path.abspath(dataset_dir if dataset_dir is not None else Path(path).parent))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset_dir '{root}' (root of the images of '{path}') is not a folder.")
    return root


def inside_rule(images: Sequence[str], listed_in: str = "datalist") -> str:
    """The rule an image outside the dataset folder breaks, with the ``--dataset_dir`` that holds every one of
    ``images`` (absolute, normalised paths): one wording for datalists and CSV study lists (``listed_in``)."""
    return (f"images must lie inside dataset_dir (the {listed_in}'s folder unless --dataset_dir gives another: a "
            f"folder that holds every image, e.g. --dataset_dir {_common_folder(images)}).")


def _evidence(value: Any, where: str) -> list[int] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value.split(";") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)):
        raise ValueError(f"{where}: evidence {value!r} must be a list of slice indices (CSV: '3;4;7').")
    out = []
    for p in parts:
        s = p.strip() if isinstance(p, str) else p
        if isinstance(s, bool) or not (isinstance(s, int) or (isinstance(s, str) and _INT_RE.match(s))) or int(s) < 0:
            several = isinstance(p, str) and (len(p.split()) > 1 or "," in p)  # '3 4 7' or '3,4,7'
            hint = " (separate the indices with ';', e.g. '3;4;7')" if several else ""
            raise ValueError(f"{where}: evidence {value!r} holds {p!r}, not a slice or frame index (an integer >= 0)"
                             f"{hint}.")
        out.append(int(s))
    return out


#: the item keys (JSON) / columns (CSV) a datalist's items are read by; any other is ignored
ITEM_KEYS = ("image", "label", "group", "evidence")
CSV_COLUMNS = (*ITEM_KEYS, "split")
_warned_keys: set[tuple[str, str]] = set()  # (datalist, key): each misspelt key is warned about once per process


def _warn_misspelt_keys(path: Path, rows: Mapping[str, list[tuple[str, dict]]], split: str = "training") -> None:
    """Warn, once per datalist and key, about an item key (a CSV column) that is one typo from a key the datalist is
    read by (``"evidnce": [1, 2]``, a JSON item's ``Label``; a CSV's columns are read in any case): it would be
    ignored, as other keys are, and the item read as one without that key (no evidence, say), with no sign. One
    typo from a patient key when no key names the patients is refused when the ``training`` list is read (its
    validation list would be drawn, and the lists checked, with every item a patient of its own); a list read for
    prediction is warned about as other keys are."""
    known = (*CSV_COLUMNS, *GROUP_KEYS[1:]) if _kind(path) == "csv" else (*ITEM_KEYS, *GROUP_KEYS[1:])
    first: dict[str, str] = {}  # unknown key → the first item (or CSV line) that has it
    for entries in rows.values():
        for loc, item in entries:
            for key in item:
                if isinstance(key, str) and key not in known and key.casefold() not in _GROUP_KEYS_FOLDED:
                    first.setdefault(key, "1 (the header)" if _kind(path) == "csv" else loc)
    has_patients = any(_group_key(item) is not None for entries in rows.values() for _, item in entries)
    for key, loc in first.items():
        near = next((k for k in known if key.casefold() == k or _one_typo_apart(key.casefold(), k)), None)
        what = "column" if _kind(path) == "csv" else "item key"
        if near is not None and near.casefold() in _GROUP_KEYS_FOLDED and not has_patients and split == "training":
            # not a warning: every item would be a patient of its own, one patient's items split between training
            # and validation (or a test list) without a sign but an optimistic score
            raise ValueError(
                f"{path}:{loc}: the {what} {key!r} is one typo from {near!r} (an item's patient) and no item names "
                f"its patient otherwise: read as it is, every item would be a patient of its own, and one patient's "
                f"items could land in training and in validation. Rename it to {near!r} (patient keys read: "
                f"{list(GROUP_KEYS)}, any case)."
            )
        if near is None or (str(path), key) in _warned_keys:
            continue
        _warned_keys.add((str(path), key))
        logger.warning(f"{path}:{loc}: the {what} {key!r} is not one the datalist is read by and is one typo from "
                       f"{near!r}: it is ignored (its values are not read as {near!r}: an item without {near!r} is "
                       f"read as one without it). Rename it to {near!r} (the keys read: {list(known)}).")


def _warn_unread_patient_key(path: Path, rows: Mapping[str, list[tuple[str, dict]]], split: str = "training") -> None:
    """Warn, once per datalist, when no item names its patient (:data:`GROUP_KEYS`) but a key the datalist is not read
    by repeats values across the training items (a CSV column ``MRN``, ``case_id``): every item is then a patient of
    its own, and if that key names the patients, one patient's items can be split between training and validation
    (or a test list) with no sign but an optimistic score (trial T58: 30 patients' 50 clips drawn as 50 "patients").
    Only a key of many values, each shared by a few items, is named (not a category such as sex, view or site); it
    may still be something else (a scanner serial, an accession of several series): a warning, not a refusal."""
    if split != "training" or "training" not in rows:
        return
    entries = rows["training"]
    if any(_group_key(item) is not None for _, item in entries):
        return
    known = {k.casefold() for k in (*CSV_COLUMNS, *ITEM_KEYS, "label_name", "source_line")}
    values: dict[str, list[str]] = {}
    for _, item in entries:
        for key, value in item.items():
            if isinstance(key, str) and key.casefold() not in known and isinstance(value, (str, int)) \
                    and not isinstance(value, bool) and str(value).strip():
                values.setdefault(key, []).append(str(value).strip())
    # like a patient id: values shared by a few items each, many of them (not a category such as sex, view, site:
    # few values, the most common one held by many items)
    repeating = {k: v for k, v in values.items()
                 if len(v) >= 4 and max(3, len(v) / 10) <= len(set(v)) < len(v)
                 and Counter(v).most_common(1)[0][1] <= max(2, len(v) / 4)}
    if not repeating or (str(path), "unread patient key") in _warned_keys:
        return
    _warned_keys.add((str(path), "unread patient key"))
    what = "column" if _kind(path) == "csv" else "item key"
    named = ", ".join(f"{k!r} ({len(set(v))} values over {len(v)} items)" for k, v in repeating.items())
    logger.warning(
        f"{path}: no training item names its patient (keys read as the patient: {list(GROUP_KEYS)}, any case), so "
        f"every item counts as a patient of its own: the validation list is drawn by item, and one patient's items "
        f"can be split between training and validation (or test), an optimistic score. The {what}(s) {named} repeat "
        f"values across items: if one names the patient, rename it to 'patient_id' (or 'group')."
    )


def load_datalist(
    path: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    split: str = "training",
    label_names: Sequence[str] | None = None,
    missing_ok: bool = False,
    warn_missing: bool = False,
) -> list[dict]:
    """
    Read one list of a user datalist, checking every item.

    Two formats:

    - a MONAI datalist JSON (read with :func:`monai.data.load_decathlon_datalist`): ``"training"``,
      ``"validation"`` and ``"test"`` lists of ``{"image": path, "label": name or index, "group": patient id,
      "evidence": [slice indices]}`` (``group`` and ``evidence`` optional; a ``"test"`` list may also hold plain
      image paths), and optionally the class names as a top-level ``"labels": {"0": "name", ...}`` as in a
      Decathlon ``dataset.json``;
    - a CSV with the header ``image,label[,group][,evidence][,split]`` (``evidence`` as ``;``-separated slice
      indices, e.g. ``3;4;7``; ``split`` ``training``/``train``, ``validation``/``val`` or ``test``, blank or no
      column: training).

    A patient (``group``, or another key of :data:`GROUP_KEYS` in any case, e.g. a CSV column ``patient_id``; without
    one, the image) is in one list only: one in two lists is refused, naming both
    places (a patient split across training and test would measure memory, not generalisation).

    Other JSON keys and CSV columns are ignored, so that every item has the same keys (MONAI collates a batch key by
    key); one that is one typo from a key read (``"evidnce"``, ``"Label"``) is warned about, once per datalist and
    key, naming the item (CSV: the header line). Relative image paths are relative to ``dataset_dir``; every image,
    also one given as an absolute path, must lie inside ``dataset_dir``: a path that leaves it (``../``, or an
    absolute path elsewhere) is refused, so a datalist cannot make training read files outside the dataset. The check
    works on the written paths (``os.path.normpath``), not on symlink targets, so a symlinked folder inside
    ``dataset_dir`` is allowed; a path that lies inside once both sides are resolved (the folder written through a
    link on one side) is inside too.

    Args:
        path: the ``.json`` or ``.csv`` file.
        dataset_dir: the dataset root (default: the datalist file's folder).
        split: ``"training"``, ``"validation"`` or ``"test"``.
        label_names: class names (index = position); default: :func:`datalist_classes` of the file (the JSON's
            ``"labels"``, else the labels of all its splits). String labels are looked up among the names, integer
            labels are indices into them.
        missing_ok: an image that does not exist is no error: its item is kept (the study layer, which predicts a
            datalist's studies, reports it as a study that cannot be read while the others go on; a model card
            stands in for a training's images, :class:`monai_das.engines.BundleData`).
        warn_missing: with ``missing_ok``, one warning names the missing images as the error would (with the
            ``--dataset_dir`` that reads them, where there is one): the study layer's, whose items are predicted.

    Returns:
        one dict per item, in file order: ``{"image": absolute path, "label": int, "label_name": str,
        "group": str, "source_line": "<file>:<CSV line>" or "<file>:<split>[<index>]", "evidence": [int, ...]}``
        (``"evidence"`` when any item of the list gives it, ``[]`` for the others, so every item has the same keys; the
        bundles map it onto the network input's slices with :class:`~monai_das.transforms.MapEvidenced`). ``group`` defaults to the image path (each image its own
        patient). Unlabelled ``"test"`` items (no label, blank, or ``-1``) get label ``-1`` and label_name ``""``.

    Raises:
        FileNotFoundError: the datalist, or (without ``missing_ok``) an image (file, or DICOM series folder) does not
            exist.
        ValueError: naming the file and the CSV line (header = line 1) or ``<split>[<index>]`` of the item: a CSV
            header without ``image``/``label`` (with the columns it has), a blank image, an image outside
            ``dataset_dir``, a blank or unknown label, an integer label outside ``0..len(classes)-1``, an image
            listed twice in the split, malformed evidence; also a missing or empty list; reading the ``training``
            list, a key one typo from a patient key when no key names the patients.
    """
    path = _file(path)
    kind = _kind(path)
    if split not in DATALIST_SPLITS:
        raise ValueError(f"split must be one of {DATALIST_SPLITS}, got {split!r}.")
    root = dataset_root(path, dataset_dir)
    rows = _raw_rows(path)
    _warn_misspelt_keys(path, rows, split)
    _warn_unread_patient_key(path, rows, split)
    named_by = sorted({_group_key(item) for entries in rows.values() for _, item in entries} - {None, "group"})
    if named_by and (str(path), "group keys") not in _warned_keys:
        _warned_keys.add((str(path), "group keys"))
        logger.info(f"{path}: the patient of an item is read from {named_by} (no 'group'): the lists are checked and "
                    "the validation list drawn by it.")
    _check_patients_in_one_list(path, rows, root)
    if split not in rows:
        raise ValueError(f"{path}: has no '{split}' list (it has {sorted(rows)}); {missing_list_hint(path, split)}.")
    entries = rows[split]
    if not entries:
        raise ValueError(f"{path}: the '{split}' list is empty" + (" (a header, no rows)." if kind == "csv" else "."))
    json_names = _json_label_names(path, _read_json(path)) if kind == "json" else None
    if label_names is not None:  # as datalist_classes checks them (a name twice would map two classes to one)
        classes = check_class_names(label_names, "label_names", strip=True)
    else:
        classes = _classes_of(path, rows, json_names)

    for loc, item in entries:  # checked here: load_decathlon_datalist would fail without naming the item
        image = item.get("image")
        if not isinstance(image, str) or not image.strip():
            what = "is blank" if image is None or isinstance(image, str) else f"must be one path, got {image!r}"
            raise ValueError(f"{path}:{loc}: the image {what}.")
    resolved = _resolved_images(path, root, split, entries)
    missing = []
    for (loc, item), image in zip(entries, resolved):
        if not _inside(image, root):
            raise ValueError(f"{path}:{loc}: image {item['image']!r} resolves to '{image}', outside the dataset folder "
                             f"'{root}'; {inside_rule(resolved)}")
        if not os.path.exists(image):
            missing.append((f"{path}:{loc}", image, str(item["image"])))
    if missing and missing_ok:  # said once, with the --dataset_dir that reads them where there is one (trial T70c)
        if warn_missing:  # not where a model card stands in for a training's images, which nothing reads (R70g)
            logger.warning(f"{_missing_images(missing, root, len(entries))} Each is kept as an item whose image does "
                           "not exist (the study layer makes it an error row).")
    elif missing:  # with those of the file's other lists: one run names every file to mend (trial T69a)
        others = [s for s in datalist_splits(path) if s != split]
        counts = {split: len(missing)}
        for other in others:
            found = _missing_of(path, root, other, rows.get(other) or [])
            missing += found
            counts[other] = len(found)
        listed = len(entries) + sum(len(rows.get(other) or []) for other in others)
        raise FileNotFoundError(_missing_images(missing, root, listed, counts if others else None))

    items: list[dict] = []
    seen: dict[str, str] = {}
    for (loc, item), image in zip(entries, resolved):
        where = f"{path}:{loc}"
        if image in seen:
            raise ValueError(f"{where}: image '{image}' is listed twice in '{split}' (first at {seen[image]}).")
        seen[image] = where
        raw = _raw_label(item.get("label"), where)
        if split == "test" and raw in ("", "-1"):
            label, name = -1, ""
        else:
            label = _label_index(_by_json_name(raw, json_names, classes), classes, where)
            name = classes[label]
        out = {"image": image, "label": label, "label_name": name, "group": _given_group(item) or image,
               "source_line": where}
        evidence = _evidence(item.get("evidence"), where)
        if evidence is not None:
            out["evidence"] = evidence
        items.append(out)
    if any("evidence" in it for it in items):  # every item the same keys: MONAI collates a batch key by key
        for it in items:
            it.setdefault("evidence", [])
    logger.info("%s: %d '%s' items, %d classes %s", path, len(items), split, len(classes), classes)
    return items


def _resolved_images(path: Path, root: str, split: str, entries: Sequence[tuple]) -> list[str]:
    """The absolute, normalised image paths of the ``split`` list's ``entries`` (``(location, item)``, every item
    of that list) of the datalist ``path``, relative ones read from ``root``."""
    if _kind(path) == "json":
        from monai.data import load_decathlon_datalist

        # only "image" is taken from MONAI's reader: for every other key it turns any value that happens to name an
        # existing file or folder under base_dir into a path (a label "benign" next to a folder benign/, say)
        resolved = [it["image"] for it in load_decathlon_datalist(path, False, split, base_dir=root)]
        # MONAI wraps every item of a "test" list whose first entry is a plain path; a dict after it is then not
        # resolved (its "image" stays a dict): join that one here, as MONAI does for the others
        resolved = [
            r if isinstance(r, str) else os.path.join(root, it["image"]) for r, (_, it) in zip(resolved, entries)
        ]
    else:
        resolved = [os.path.join(root, item["image"]) for _, item in entries]
    return [os.path.normpath(os.path.abspath(image)) for image in resolved]


def _missing_of(path: Path, root: str, split: str, entries: Sequence[tuple]) -> list[tuple[str, str, str]]:
    """The images of the ``split`` list (``entries``: all of its items) that do not exist, as :func:`load_datalist`
    collects them; an item it would refuse for another reason (a blank image, one outside ``root``), or a list it
    cannot resolve, is left to it: refused in its own words when that list is read."""
    try:
        resolved = _resolved_images(path, root, split, entries)
    except Exception:
        return []
    return [(f"{path}:{loc}", image, str(item["image"])) for (loc, item), image in zip(entries, resolved)
            if isinstance(item.get("image"), str) and item["image"].strip() and _inside(image, root)
            and not os.path.exists(image)]


def _common_folder(images: Sequence[str]) -> str:
    """The deepest folder that holds every one of ``images`` (absolute paths), shell-quoted (the file system's root
    when they share no folder: paths on two Windows drives)."""
    try:
        common = os.path.commonpath(images)
    except ValueError:
        return shlex.quote(os.path.abspath(os.sep))
    return shlex.quote(common if os.path.isdir(common) else os.path.dirname(common))


def _missing_images(missing: Sequence[tuple[str, str, str]], root: str, listed: int = 0,
                    counts: Mapping[str, int] | None = None) -> str:
    """The error of a datalist's images that do not exist (``(where, image, as written)``): the first one, how many
    others and where (up to ``_ERRORS_SHOWN``), how many of each list (``counts``, the list read first first) when the
    file holds several; when
    the written paths name files from the working directory (paths are relative to ``root``, the dataset folder),
    the ``--dataset_dir`` that reads them, or, when none of the ``listed`` images exists, where they are read from;
    for paths written with ``\\`` (a list made on Windows), how to write them here."""
    where, image, _ = missing[0]
    text = f"{where}: image '{image}' does not exist."
    if len(missing) > 1:
        shown = ", ".join(Path(w).name for w, _, _ in missing[1:_ERRORS_SHOWN])  # 'labels.csv:7', 'x.json:training[3]'
        more = f", and {len(missing) - _ERRORS_SHOWN} more" if len(missing) > _ERRORS_SHOWN else ""
        text += f" {len(missing) - 1} more image(s) do not exist either (at {shown}{more})."
    if counts:  # a user who fixed one list's met the others' in a second run, and a third (trials T63a, T69a)
        text += " Missing in every list of the file: " + ", ".join(f"{n} in '{s}'" for s, n in counts.items()) + "."
    from_cwd = [os.path.abspath(written) for _, _, written in missing if not os.path.isabs(written)
                and os.path.exists(written)]
    if from_cwd and Path.cwd().resolve() != Path(root).resolve():
        text += (f" Relative image paths are read from the dataset folder '{root}' (the datalist's folder unless "
                 f"--dataset_dir gives another); {len(from_cwd)} of them exist from the working directory "
                 f"'{os.getcwd()}' (e.g. '{from_cwd[0]}'): give --dataset_dir {shlex.quote(os.getcwd())}, or write "
                 "the paths relative to the datalist's folder.")
    elif len(missing) == listed and not os.path.isabs(missing[0][2]) and "\\" not in missing[0][1]:  # elsewhere?
        text += (f" Relative image paths are read from the dataset folder '{root}' (the datalist's folder unless "
                 "--dataset_dir gives another): if they are relative to another folder, give it as --dataset_dir.")
    windows = [im for _, im, _ in missing if "\\" in im]
    if os.sep == "/" and windows:
        text += (" Their paths hold '\\' separators, a list written on Windows? Here paths are separated by '/': "
                 f"write them with '/' (e.g. '{Path(windows[0]).name.replace(chr(92), '/')}').")
    return text


# ---------------------------------------------------------------------------------------------------- splitting
def _class_key(name: str) -> tuple:
    """Sort key of a class name: integer names by value (``"2"`` before ``"10"``), then the others by name."""
    return (0, int(name), "") if name.isdecimal() else (1, 0, name)


def class_name_order(names: Sequence[str]) -> list[str]:
    """The order in which :func:`split_training` takes the classes ``names``: by name (integer names by value),
    whatever their index. Up to version 0.6.16 of the volume bundle (0.6.18 video) it took them by index, which gives
    the same split exactly when this order is the index order."""
    return sorted((str(n) for n in names), key=_class_key)


def split_training(items: Sequence[dict], val_fraction: float = 0.2, seed: int = 0, every_class: bool = True,
                   return_added: bool = False) -> tuple:
    """
    Split training items into training and validation by ``group`` (patient), for datalists without a
    ``"validation"`` list: all items of a group land in the same part.

    Each group gets the most common label of its items (ties: the first in class order); per label, about
    ``val_fraction`` of its groups, picked by a shuffle seeded with ``seed``, go to validation (largest-remainder
    rounding, so that ``round(val_fraction × number of groups)`` groups go in all, plus those of ``every_class``),
    and each label keeps at least one group in training where it has any. The fraction counts groups, not items, so
    patients with many images weigh more.
    With ``every_class``, a label of two or more groups that the rounding left without a validation group gets one
    (its first in the shuffle; the other labels' picks stay as they were): without it the validation AUC is
    undefined in every epoch and the best model is not chosen by it (2 of 18 patients of a rare class, val_fraction
    0.2: none validated, trial X).
    The same items, ``val_fraction``, ``seed`` and ``every_class`` always give the same split. Labels are taken
    by class name (an item's ``label_name``, else its label), in :func:`class_name_order`, not by class index: the
    same studies as a JSON with its own ``labels`` order or as a CSV (classes sorted) get the same split (they got
    different validation patients, trial T57).

    Args:
        items: dicts with ``"label"`` (int) and ``"group"``, e.g. from :func:`load_datalist`.
        val_fraction: share of the groups for validation, in ``(0, 1)``; default 0.2.
        seed: seed of the group shuffle; default 0.
        every_class: give every label of two or more groups a validation group; default ``True``.
        return_added: also return the labels ``every_class`` gave a validation group (those whose split differs from
            the one without the rule).

    Returns:
        ``(train, val)``: the items (the same dicts) in their input order, each part with at least one group;
        ``(train, val, added)`` with ``return_added``.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)``, an item without a group, or fewer than 2 groups.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    blank = [it for it in items if it.get("group") is None or not str(it["group"]).strip()]
    if blank:
        raise ValueError(f"{len(blank)} item(s) have no 'group' (e.g. {blank[0].get('source_line', blank[0])}).")
    labels_of: dict[str, Counter] = {}
    for it in items:
        labels_of.setdefault(str(it["group"]), Counter())[str(it.get("label_name", int(it["label"])))] += 1
    if len(labels_of) < 2:
        raise ValueError(
            f"cannot split {len(items)} item(s) of {len(labels_of)} group(s) into training and validation: at least "
            "2 groups (patients) are needed; add a 'validation' list or more patients."
        )
    strata: dict[str, list[str]] = {}
    for g in sorted(labels_of):  # sorted first: the shuffle then depends on the seed only, not on the item order
        counts = labels_of[g]
        strata.setdefault(min(counts, key=lambda lab: (-counts[lab], _class_key(lab))), []).append(g)
    rng = np.random.default_rng(seed)
    for lab in sorted(strata, key=_class_key):
        order = rng.permutation(len(strata[lab]))
        strata[lab] = [strata[lab][i] for i in order]

    n_groups = len(labels_of)
    n_val = min(max(round(float(val_fraction) * n_groups), 1), n_groups - 1)
    want = {lab: float(val_fraction) * len(gs) for lab, gs in strata.items()}
    # keep one group of every label in training while the total allows it
    cap = {lab: max(len(gs) - 1, 0) for lab, gs in strata.items()}
    quota = {lab: min(math.floor(want[lab]), cap[lab]) for lab in strata}
    for relax in (False, True):  # second pass: give up the one-group-per-label rule when nothing else is left
        by_remainder = sorted(strata, key=lambda lab: (-(want[lab] - quota[lab]), _class_key(lab)))
        while sum(quota.values()) < n_val:
            room = [lab for lab in by_remainder if quota[lab] < (len(strata[lab]) if relax else cap[lab])]
            if not room:
                break
            quota[room[0]] += 1
            by_remainder = sorted(strata, key=lambda lab: (-(want[lab] - quota[lab]), _class_key(lab)))
    added = [lab for lab in sorted(strata, key=_class_key)
             if every_class and quota[lab] == 0 and len(strata[lab]) >= 2]
    for lab in added:
        quota[lab] = 1
    if added:
        logger.info(f"split_training: label(s) {added} had no validation group at val_fraction {val_fraction}: one of "
                    "their groups validates, so that the validation AUC is defined.")
    val_groups = {g for lab, gs in strata.items() for g in gs[: quota[lab]]}
    train = [it for it in items if str(it["group"]) not in val_groups]
    val = [it for it in items if str(it["group"]) in val_groups]
    logger.info(
        "split_training(val_fraction=%s, seed=%s): %d groups → %d training (%d items), %d validation (%d items)",
        val_fraction, seed, n_groups, n_groups - len(val_groups), len(train), len(val_groups), len(val),
    )
    return (train, val, added) if return_added else (train, val)


# ------------------------------------------------------------------------------------------------ data facts
def _where(item: Any, image: str) -> str:
    loc = item.get("source_line") if isinstance(item, Mapping) else None
    return f"{loc}: '{image}'" if loc else f"'{image}'"


def _nifti_shape(path: str, axcodes: str | None = None, pixdim=None) -> tuple[int, list[int]]:
    """``(channels, spatial)`` from the header, as MONAI's ``NibabelReader`` sees it (channels last, if any); with
    ``axcodes`` the spatial shape after ``Orientation(axcodes)`` (the header's affine says which stored axis becomes
    which: a file stored z, x, y is 20×41×41 as stored and 41×41×20 in RAS), with ``pixdim`` after
    ``Spacing(pixdim)`` too (MONAI's own shape rule, applied to the header's affine without reading a voxel).
    A header that declares more voxels than there is memory for, resampling to ``pixdim`` included, is refused
    (:func:`~monai_das.data.studies.check_study_memory`)."""
    import nibabel as nib

    from monai_das.data.studies import check_study_memory

    img = nib.load(path)
    check_study_memory(path, img, pixdim)  # before training's reader decompresses gigabytes a hostile header declares
    shape = [int(s) for s in img.shape]
    if axcodes is not None or pixdim is not None:  # the affine MONAI's NibabelReader uses (it may replace an sform
        from monai.data.utils import correct_nifti_header_if_necessary  # that pixdim contradicts)

        img = correct_nifti_header_if_necessary(img)
    spatial, rest = shape[:3], shape[3:]
    while rest and rest[-1] == 1:  # NibabelReader squeezes trailing singleton non-spatial dims
        rest.pop()
    if len(rest) > 1:
        raise ValueError(f"has shape {shape}: more than one non-spatial dimension (expected X×Y×Z[×C]).")
    if pixdim is not None and len(spatial) == 3:
        spatial = _resampled_shape(spatial, img.affine, axcodes, pixdim)
    elif axcodes is not None and len(spatial) == 3:
        from monai_das.data.studies import oriented_axes

        spatial = oriented_axes(spatial, img.affine, axcodes)
    return (rest[0] if rest else 1), spatial


def _nifti_geometry(path: str, axcodes: str | None) -> tuple[list[float], list[float]]:
    """``(extent, voxel size)`` in mm of a NIfTI volume per axis after ``Orientation(axcodes)``, from its header (the
    affine MONAI's ``NibabelReader`` uses), as the study layer measures a study at inference."""
    import nibabel as nib
    from monai.data.utils import correct_nifti_header_if_necessary

    from monai_das.data.studies import oriented_geometry

    img = correct_nifti_header_if_necessary(nib.load(path))
    shape = [int(s) for s in img.shape[:3]]
    return oriented_geometry(shape + [1] * (3 - len(shape)), img.affine, axcodes)  # a 2D image: one slice


def _series_geometry(folder: Path, axcodes: str) -> tuple[list[float], list[float]] | None:
    """``(extent, voxel size)`` in mm per axis after ``Orientation(axcodes)`` of a DICOM series folder, from its image
    headers through :func:`_series_affine` (the affine training's reader gives it), as the study layer measures a
    series at inference (its reader's affine, oriented alike); ``None`` when its headers do not give it."""
    from monai_das.data.studies import _is_localizer, _is_non_image_object, oriented_geometry

    try:
        headers = [_dicom_header(f) for f in sorted(folder.iterdir()) if f.is_file() and is_dicom(f)]
        headers = [h for h in headers if not _is_non_image_object(h) and not _is_localizer(h)]
        if len(headers) < 2 or any(h.get("ImagePositionPatient") is None for h in headers):
            return None
        rows, cols = int(headers[0].get("Rows")), int(headers[0].get("Columns"))
        return oriented_geometry([cols, rows, len(headers)], _series_affine(headers), axcodes)
    except (RuntimeError, ValueError, TypeError):  # extra information: the series' own errors are said elsewhere
        return None


def _resampled_shape(spatial: Sequence[int], affine, axcodes: str | None, pixdim) -> list[int]:
    """The spatial shape MONAI's ``Orientation(axcodes)`` and ``Spacing(pixdim)`` give a volume of ``spatial`` shape
    and ``affine``: the transforms run lazily on a stand-in of no memory (a broadcast zero), so the rule is MONAI's."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    img = MetaTensor(torch.zeros(()).expand(1, *[int(s) for s in spatial]),
                     affine=torch.as_tensor(np.asarray(affine), dtype=torch.float64))
    if axcodes is not None:
        img = Orientation(axcodes=axcodes, labels=None, lazy=True)(img)
    if pixdim is not None:
        img = Spacing(pixdim=pixdim, lazy=True)(img)
    return [int(s) for s in img.peek_pending_shape()]


def _series_affine(headers: Sequence) -> np.ndarray:
    """
    The affine (RAS) MONAI's ``ITKReader`` gives a DICOM series read as ``[columns, rows, slices]`` (training's reader
    of a series folder): the directions of ``ImageOrientationPatient`` (columns along its row cosine, rows along its
    column cosine, slices along their cross product, as ITK sorts them) scaled by ``PixelSpacing`` and, as ITK does,
    the distance from the first to the last slice's ``ImagePositionPatient`` over the steps between them, LPS turned
    to RAS. A header without geometry counts as axial, 1 mm.
    """
    iop = headers[0].get("ImageOrientationPatient")
    row_dir, col_dir = ((np.asarray([float(v) for v in iop[:3]]), np.asarray([float(v) for v in iop[3:6]]))
                        if iop is not None and len(iop) == 6 else (np.eye(3)[0], np.eye(3)[1]))
    row_dir, col_dir = row_dir / (np.linalg.norm(row_dir) or 1.0), col_dir / (np.linalg.norm(col_dir) or 1.0)
    normal = np.cross(row_dir, col_dir)
    spacing = headers[0].get("PixelSpacing")
    row_step, col_step = ((float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) == 2
                          else (1.0, 1.0))  # PixelSpacing: between rows, between columns
    positions = sorted((np.asarray([float(v) for v in h.ImagePositionPatient]) for h in headers
                        if h.get("ImagePositionPatient") is not None and len(h.ImagePositionPatient) == 3),
                       key=lambda x: float(np.dot(x, normal)))
    # ITK's series reader: the distance from the first to the last slice over the steps between them (a tilted
    # series' slices step along their positions, not the normal; a missing slice widens every step); positions that
    # repeat (an Enhanced MR of several time points at each position) are one step
    steps = len({round(float(np.dot(x, normal)), 3) for x in positions}) - 1
    gap = float(np.linalg.norm(positions[-1] - positions[0])) / steps if steps > 0 else 0.0
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = row_dir * col_step, col_dir * row_step, normal * (gap if gap > 0 else 1.0)
    if positions:  # the first slice's corner (the shape MONAI's Spacing gives rounds world coordinates)
        lps[:3, 3] = positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _npy_shape(path: str) -> tuple[int, list[int]]:
    """``(channels, spatial)``: a 2D/3D array has no channel axis, a 4D one is channel-first ``C×D×H×W``."""
    from monai_das.data.readers import read_npy_header

    shape = read_npy_header(path)[0]  # the header, no pixel data; an object array or a cut copy refused
    if len(shape) <= 3:
        return 1, shape
    if len(shape) == 4:
        return shape[0], shape[1:]
    raise ValueError(f"has shape {shape}: expected D×H×W or C×D×H×W.")


#: the DICOM elements the shape check reads (the functional groups: an Enhanced CT/MR file's geometry, read in the
#: same pass; a single-frame image has none)
_SHAPE_TAGS = ("NumberOfFrames", "SeriesInstanceUID", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
               "Modality", "InstanceNumber", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
               "SOPInstanceUID", "SeriesNumber", "SeriesDescription", "ImageType", "SharedFunctionalGroupsSequence",
               "PerFrameFunctionalGroupsSequence")


def _dicom_header(path: Path):
    try:
        return read_dicom_header(path, _SHAPE_TAGS, pixel_length=True)  # with the length for check_dicom_pixel_data
    except Exception as e:
        raise RuntimeError(f"cannot read the DICOM header of '{path}': {e}") from e


def _dicom_patient(path: Path) -> str | None:
    """The ``PatientID`` of a DICOM file or of the first DICOM file of a series folder (``None``: none, or blank)."""
    try:
        first = path if path.is_file() else next((f for f in sorted(path.iterdir()) if f.is_file() and is_dicom(f)),
                                                 None)
        value = read_dicom_header(first, ("PatientID",)).get("PatientID") if first is not None else None
    except Exception:  # noqa: BLE001 - a patient id is extra information; the file's errors are said elsewhere
        return None
    return str(value).strip() or None if value is not None else None


def _dicom_channels(ds) -> int:
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        return 3  # read_video expands the palette to RGB
    return int(ds.get("SamplesPerPixel", 1) or 1)


def _dicom_rows_cols(ds, path: Path) -> tuple[int, int]:
    if "Rows" not in ds or "Columns" not in ds:
        raise ValueError(f"DICOM file '{path}' has no image (no Rows/Columns).")
    return int(ds.Rows), int(ds.Columns)


def _sop_uids(headers: Sequence) -> list[str]:
    """The ``SOPInstanceUID`` of each DICOM image (blank ones left out): what names its content, whatever the copy's
    file or folder name."""
    return [uid for uid in (str(h.get("SOPInstanceUID", "") or "").strip() for h in headers) if uid]


def _dicom_facts(path: Path, axcodes: str | None = None, pixdim=None
                 ) -> tuple[str, int, list[int], list[str], str | None]:
    """
    ``("clip", C, [T, H, W], uids)`` for a multi-frame DICOM file (``"slices"`` instead of ``"clip"`` when its
    modality is one of :data:`~monai_das.data.studies.VOLUME_MODALITIES`: an Enhanced CT/MR file, whose frames are
    slices; with ``axcodes``/``pixdim`` such a file is ``("volume", C, shape)``, the shape after ``Orientation`` and
    ``Spacing`` from its functional groups' geometry, when every frame has a position), ``("volume", C, [W, H, N],
    uids)`` for a folder of single-frame DICOM files (one series; MONAI's
    readers' order: columns, rows, slices; with ``axcodes``/``pixdim`` the shape after
    ``Orientation(axcodes)`` and ``Spacing(pixdim)``, from the headers' geometry: a sagittal series is not
    ``[columns, rows, slices]`` in RAS) or one such file; ``uids``: the images' ``SOPInstanceUID``
    (:func:`_sop_uids`); a fifth value: the images' ``Modality`` (upper case; ``None`` when blank).
    """
    from monai_das.data.studies import check_declared_memory, declared_dicom, modality_of

    if path.is_dir():
        from monai_das.data.studies import _is_non_image_object, _study_at, check_series_stack, is_hidden, sizes_named

        # the folder's own files, as the training recipe's LoadImage reads a series folder (not the study layer's
        # discovery, which also walks sub-folders: a series one level down would pass here and fail in LoadImage);
        # as discovery: no hidden file (an archive's '._x.dcm'), no DICOMDIR index (a DICOM file without an image)
        entries = sorted(e for e in path.iterdir() if not is_hidden(e.name))
        files = [f for f in entries if f.is_file() and f.name.upper() != "DICOMDIR" and is_dicom(f)]
        if not files:
            subs = [e.name for e in entries if e.is_dir() and any(
                f.is_file() and not is_hidden(f.name) and is_dicom(f) for f in e.iterdir())]
            if subs:  # a patient or study folder: its series lie one level down
                raise ValueError(f"holds no DICOM file of its own, but its sub-folders hold DICOM files "
                                 f"({_some(subs)}): give one series folder as the image (training's reader reads a "
                                 "folder's own files).")
            raise ValueError("is a folder without DICOM files (expected one DICOM series).")
        if any(e.is_dir() for e in entries):
            # LoadImage would read the series and ignore the sub-folders, but inference and the Deploy app (the study
            # layer) take a folder as a study only when everything under it is one study: refuse now what they would
            study = _study_at(path.name, path)
            if study.kind == "invalid":
                raise ValueError(f"{str(study.error).removeprefix(repr(str(path)) + ' ')} Inference and the Deploy "
                                 "app would refuse it: move the other studies out of the series folder.")
        headers = [_dicom_header(f) for f in files]
        check_declared_memory(f"DICOM series '{path}'", declared_dicom(headers), pixdim)
        for f, h in zip(files, headers):  # as the study layer: a header declaring more than its data is refused (T69b)
            check_dicom_pixel_data(f, h)
        frames = [int(h.get("NumberOfFrames", 1) or 1) for h in headers]
        if len(files) == 1 and frames[0] > 1:
            return _dicom_facts(files[0], axcodes, pixdim)
        if max(frames) > 1:
            raise ValueError(f"mixes multi-frame DICOM ('{files[frames.index(max(frames))]}') and other files.")
        # a report (SR) or key object beside the slices: not read (ITK's series lookup passes over it), as the
        # study layer's discovery skips it; the folder's images are the series (a folder of only such files is not)
        images = [(f, h) for f, h in zip(files, headers) if not _is_non_image_object(h)]
        if images and len(images) < len(files):
            files, headers = [f for f, _ in images], [h for _, h in images]
        from monai_das.data.studies import check_no_localizers

        check_no_localizers(files, headers, f"DICOM series '{path}'")  # not "slices of different sizes (a localizer?)"
        sizes = {_dicom_rows_cols(h, f) for f, h in zip(files, headers)}  # first: a truncated file is named
        series: dict[str, list[Path]] = {}
        for f, h in zip(files, headers):
            series.setdefault(str(h.get("SeriesInstanceUID", "")), []).append(f)
        if len(series) > 1:
            labels = {uid: _describe_series(headers[files.index(m[0])]) for uid, m in series.items()}
            twice = {v for v in labels.values() if list(labels.values()).count(v) > 1}  # two series numbered alike
            named = "; ".join(f"{len(m)} file(s) of series {labels[uid]}"
                              + (f" (UID ...{uid[-12:]})" if labels[uid] in twice else "") + f" ('{m[0].name}', ...)"
                              for uid, m in sorted(series.items(), key=lambda kv: len(kv[1]), reverse=True))
            raise ValueError(f"holds {len(series)} DICOM series: {named}; give one folder per series (a localizer "
                             "is a series of its own: move it out).")
        if len(sizes) > 1:
            named = sizes_named((_dicom_rows_cols(h, f), f) for f, h in zip(files, headers))
            raise ValueError(f"holds DICOM slices of different sizes (rows × columns): {named}; a localizer or "
                             "another reconstruction stored with the series? Remove the files that do not belong to "
                             "it.")
        channels = {_dicom_channels(h) for h in headers}
        if len(channels) > 1:
            raise ValueError(f"holds DICOM slices with different SamplesPerPixel {sorted(channels)}.")
        # one stack, as inference and the Deploy app require (numbered slices, one plane, one pixel size, one slice
        # per position; gaps and a gantry tilt warned): a model is not trained on what they would refuse
        check_series_stack(files, headers, f"DICOM series '{path}'")
        _check_itk_reads_all(path, files)
        (rows, cols), = sizes
        dims = [cols, rows, len(files)]
        if axcodes is not None or pixdim is not None:  # as training's Orientation and Spacing turn it
            dims = _resampled_shape(dims, _series_affine(headers), axcodes, pixdim)
        return "volume", channels.pop(), dims, _sop_uids(headers), modality_of(headers)
    ds = _dicom_header(path)
    rows, cols = _dicom_rows_cols(ds, path)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    uids = _sop_uids([ds])
    from monai_das.data.studies import BYTES_PER_CLIP_VALUE, VOLUME_MODALITIES

    clip = n > 1 and str(ds.get("Modality", "")).upper() not in VOLUME_MODALITIES
    if clip:  # as the clip reader decodes it
        check_declared_memory(f"'{path}'", declared_dicom([ds]), per_value=BYTES_PER_CLIP_VALUE)
    else:
        check_declared_memory(f"'{path}'", declared_dicom([ds]), pixdim)
    check_dicom_pixel_data(path, ds)  # before a reader fills what the data lacks with zeros (security review T69b)
    if n > 1:
        kind = "clip" if clip else "slices"
        if kind == "slices" and (axcodes is not None or pixdim is not None):  # as training's Orientation and Spacing
            frames = _enhanced_frame_headers(ds, n)  # turn an Enhanced CT/MR file (read with its geometry)
            if frames is not None:
                dims = _resampled_shape([cols, rows, n], _series_affine(frames), axcodes, pixdim)
                return "volume", _dicom_channels(ds), dims, uids, modality_of([ds])
        return kind, _dicom_channels(ds), [n, rows, cols], uids, modality_of([ds])
    return "volume", _dicom_channels(ds), [cols, rows], uids, modality_of([ds])


def _enhanced_frame_headers(ds: Any, num_frames: int) -> list | None:
    """
    One header per frame of the Enhanced (multi-frame) DICOM file whose header is ``ds`` (read with
    :data:`_SHAPE_TAGS`) with the geometry :func:`_series_affine` reads of a series' slices
    (``ImageOrientationPatient``, ``PixelSpacing``, ``ImagePositionPatient``), from its functional groups (per frame,
    else shared), as MONAI's ``ITKReader`` reads the file's geometry; ``None`` when a frame has no position (the
    stored order is then all there is).
    """
    from pydicom.dataset import Dataset

    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    if len(per_frame) != num_frames:
        return None

    def item(group: Any, sequence: str, keyword: str) -> Any:
        for g in (group, shared):
            seq = g.get(sequence)
            if seq and seq[0].get(keyword) is not None:
                return seq[0].get(keyword)
        return None

    headers = []
    for group in per_frame:
        position = item(group, "PlanePositionSequence", "ImagePositionPatient")
        if position is None or len(position) != 3:
            return None
        h = Dataset()
        h.ImagePositionPatient = list(position)
        orientation = item(group, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = item(group, "PixelMeasuresSequence", "PixelSpacing")
        if orientation is not None:
            h.ImageOrientationPatient = list(orientation)
        if spacing is not None:
            h.PixelSpacing = list(spacing)
        headers.append(h)
    return headers


def _describe_series(h: Any) -> str:
    """A series as a reader of its header would name it: number and description, else the end of its UID."""
    from monai_das.data.studies import _series_label  # the label discovery gives the series (#series_<label>)

    text = str(h.get("SeriesDescription", "") or "").strip()
    label = "#" + _series_label(h, str(h.get("SeriesInstanceUID", "") or ""))
    return f"{label} {text!r}" if text else label


def _check_itk_reads_all(folder: Path, files: Sequence[Path]) -> None:
    """
    Refuse a series folder of which training's reader (MONAI's ``ITKReader``: GDCM's series lookup) would stack
    other files than its ``files`` (the DICOM images, as inference reads them by position): it silently leaves out a
    file it cannot read (a truncated slice) and splits a series whose slices write a header value differently (e.g.
    ``SliceThickness`` "2.5" and "2.50"), and stacks an image stored under the name ``DICOMDIR``, which inference skips.
    """
    from monai_das.data.studies import _undecodable_dicom, itk_series_files

    read = {os.path.realpath(f) for f in itk_series_files(folder)}
    images = {os.path.realpath(f) for f in files}
    if read == images:
        return
    left_out = sorted(os.path.basename(f) for f in images - read)
    extra = sorted(os.path.basename(f) for f in read - images)
    what = [f"leaves out {len(left_out)} ({_some(left_out)})"] if left_out else []
    what += [f"adds {_some(extra)}, which inference skips"] if extra else []
    # the first left-out file that does not decode says so itself (the cause was only guessed at; trial T58b)
    bad = _undecodable_dicom(sorted(images - read)[:3])
    if bad:
        what[0] += f": '{os.path.basename(bad[0])}' does not decode ({bad[1][:160]})"
    raise ValueError(
        f"would be read otherwise by training's reader: MONAI's ITKReader (GDCM's series lookup) stacks {len(read)} "
        f"file(s) as the series where the folder holds {len(images)} DICOM image file(s), and {' and '.join(what)}, "
        "where inference and the Deploy app read every image file: a file it cannot read (truncated or corrupt), or "
        "header values written differently between the slices (e.g. SliceThickness '2.5' and '2.50', another "
        "SeriesDate), split it. Repair or re-export the series (or remove the files that do not belong to it)."
    )


def _video_facts(path: str) -> tuple[int, list[int], float | None]:
    """``(3, [T, H, W], frame rate)`` from the container header (OpenCV decodes every container to BGR; the rate in
    frames per second, ``None`` when the header gives none)."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            if path.lower().endswith(".gif"):  # read_video falls back to Pillow for GIFs OpenCV cannot open
                from PIL import Image

                with Image.open(path) as im:
                    return 3, [int(getattr(im, "n_frames", 1)), int(im.height), int(im.width)], None
            raise RuntimeError("OpenCV cannot open it (unsupported codec or corrupt file).")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        h, w = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if n <= 0:  # some containers do not store the count: step through the packets without decoding them
            n = 0
            while cap.grab():
                n += 1
        return 3, [n, h, w], (fps if math.isfinite(fps) and fps > 0 else None)
    finally:
        cap.release()


def _loaded_facts(path: str, reader) -> tuple[int, list[int]]:
    """``(C, spatial)`` by loading the image with MONAI (for formats without a header-only reader here)."""
    from monai.transforms import LoadImage

    logger.debug("check_study_shapes: loading all of '%s' (no header-only reader for this format)", path)
    img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(path)
    shape = [int(s) for s in img.shape]
    return shape[0], shape[1:]


_CLIPS_ONLY = (f"a video model trains on video files ({', '.join(VIDEO_EXTENSIONS)}) and multi-frame DICOM files; "
               "train volumes with a volume model (das_volume_classification).")
#: why a volume recipe refuses a video file (``clips_only``, ``layout="volume"``)
VOLUMES_ONLY = ("a volume model trains on and classifies volumes (NIfTI, NRRD, MetaImage, .npy, DICOM series, "
                "multi-frame DICOM); train clips with a video model (das_video_classification).")


#: files up to this size are hashed whole by :func:`content_key`; larger ones by samples of their bytes
_WHOLE_HASH = 1 << 20
_EDGE, _SAMPLE = 256 << 10, 16 << 10


def content_key(path: str | os.PathLike) -> str:
    """
    ``"file:<size>:<sha256>"`` of a file's bytes, naming its content for :func:`check_no_copies`: the whole file up to
    1 MiB, else its first and last 256 KiB and 16 evenly spaced 16 KiB blocks (``~`` before the digest; at most
    768 KiB read per file, so a large dataset is not read twice at start-up; two such keys that match are confirmed
    on the whole files before a copy is reported).
    """
    p = Path(path)
    size = p.stat().st_size
    if size <= _WHOLE_HASH:
        return f"file:{size}:{file_digest(p)}"
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        starts = [0, size - _EDGE] + [(size - _SAMPLE) * i // 17 for i in range(1, 17)]
        for start, length in zip(starts, [_EDGE, _EDGE] + [_SAMPLE] * 16):
            f.seek(start)
            digest.update(f.read(length))
    return f"file:{size}:~{digest.hexdigest()}"


def _study_facts(image: str, layout: str, slice_axis: int, reader, clips_only: bool = False, min_frames: int = 2,
                 axcodes: str | None = None, pixdim=None
                 ) -> tuple[int, tuple[int, ...], int, list[str], str | None, float | None]:
    """``(channels, shape in the layout's order, number of frames/slices, content ids, modality, frame rate)`` of one
    image, the ids being the SOPInstanceUIDs of DICOM images or the :func:`content_key` of another file, the modality a
    DICOM image's (``None`` for other files), the frame rate a video file's header declares (``None`` for others)
    (``clips_only``: refuse a volume rather than read it as a clip)."""
    from monai_das.data.studies import check_study_memory

    p = Path(image)
    name = p.name.lower()
    if not p.exists():
        raise FileNotFoundError("does not exist.")
    if p.is_file() and p.stat().st_size == 0:  # not "unsupported codec or corrupt file": say what it is
        raise ValueError("is an empty file (0 bytes): an interrupted copy or export?")
    if clips_only and layout == "video" and not (name.endswith(VIDEO_EXTENSIONS) or (p.is_file() and is_dicom(p))):
        raise ValueError(f"is no clip ({'a folder' if p.is_dir() else 'neither a video nor a DICOM file'}): "
                         f"{_CLIPS_ONLY}")
    if clips_only and layout == "volume" and name.endswith(VIDEO_EXTENSIONS) and not (p.is_file() and is_dicom(p)):
        raise ValueError(f"is a video file, not a volume: {VOLUMES_ONLY}")  # the volume recipe's reader cannot read it
    clip: list[int] | None = None  # [T, H, W] of a clip
    rate: float | None = None  # frames per second a video file's header declares
    uids: list[str] = []
    modality: str | None = None
    if p.is_file() and not is_dicom(p):  # a copy of this file in another list (another name or folder): its bytes
        uids.append(content_key(p))
    if name.endswith(_NIFTI_SUFFIXES):
        c, spatial = _nifti_shape(image, *((axcodes, pixdim) if layout == "volume" else (None, None)))
    elif name.endswith(".npy"):
        check_study_memory(image, pixdim=pixdim if layout == "volume" else None)  # its header read and checked
        c, spatial = _npy_shape(image)
    elif p.is_dir() or is_dicom(p):
        kind, c, dims, uids, modality = _dicom_facts(p, *((axcodes, pixdim) if layout == "volume" else (None, None)))
        clip, spatial = (dims, []) if kind != "volume" else (None, dims)
        if kind == "slices" and layout == "volume":
            # an Enhanced CT/MR file is a volume: columns, rows, frames, as LoadImage reads it (and the study layer)
            clip, spatial = None, [dims[2], dims[1], dims[0]]
    elif name.endswith(VIDEO_EXTENSIONS):
        c, clip, rate = _video_facts(image)
    else:  # an ITK file (.nrrd, .mha, ...) is read whole here: its header first
        check_study_memory(image, pixdim=pixdim if layout == "volume" else None)
        c, spatial = _loaded_facts(image, reader)

    if layout == "video":
        if clip is None and clips_only:  # a single-frame DICOM file
            if min_frames > 1:
                raise ValueError(f"is a single-frame DICOM image ({spatial[1]}×{spatial[0]}): a still image, fewer "
                                 f"than min_frames={min_frames} frames; min_frames 1 accepts it (repeated to T frames).")
            clip = [1, spatial[1], spatial[0]]  # frames, rows, columns
        if clip is None:  # a volume read as a clip: frames along its first spatial axis (as StudyLoader does)
            clip = spatial if len(spatial) >= 3 else [1, *spatial]
            if len(clip) != 3:
                raise ValueError(f"has spatial shape {spatial}: expected a 3D volume or a clip.")
        t, h, w = clip
        if t < 1:  # no min_frames accepts it (it said "min_frames 1 accepts it", also to min_frames 1)
            raise ValueError(f"is a clip of 0 frames ({h}×{w}): no frame decodes (an empty or damaged file?).")
        if t < min_frames:
            raise ValueError(f"is a clip of {t} frame(s) ({h}×{w}), fewer than min_frames={min_frames}: "
                             + ("a still image is not a clip; min_frames 1 accepts it (repeated to T frames)." if t <= 1
                                else f"too short; min_frames {t} or lower accepts it (resampled to T frames)."))
        return c, (t, c, h, w), t, uids, modality, rate
    if clip is not None:  # a clip read as a volume: its frames are the slices along slice_axis
        t, h, w = clip
        spatial = [h, w]
        spatial.insert(slice_axis, t)
    if len(spatial) == 2 and min_frames <= 1:  # a one-slice volume, as the recipe's RequireVolume makes it
        spatial = [*spatial, 1]
    if 0 in spatial:  # no min_frames accepts it (it said "min_frames 1 accepts it as a one-slice volume")
        raise ValueError(f"is a volume of 0 slices (spatial shape {spatial}): no slice decodes (an empty or damaged "
                         "file?).")
    if len(spatial) != 3 or min(spatial) < min_frames:
        what = ("not a 3D volume" if len(spatial) > 3 else "a 2D image" if len(spatial) < 3
                else f"a volume of {min(spatial)} slice(s) along an axis, fewer than min_frames={min_frames}")
        hint = "" if len(spatial) > 3 else "; min_frames 1 accepts it as a one-slice volume"
        raise ValueError(f"is {what} (spatial shape {spatial}, {c} channel(s)): expected a 3D volume{hint}.")
    return c, (c, *spatial), spatial[slice_axis], uids, modality, rate


#: unusable images named in one error of :func:`check_study_shapes` (and missing ones of :func:`load_datalist`)
_ERRORS_SHOWN = MAX_NAMED


def check_study_shapes(
    items: Sequence[Mapping | str],
    layout: str,
    reader=None,
    max_items: int | None = None,
    slice_axis: int = 0,
    clips_only: bool = False,
    mixed_channels: bool = False,
    min_frames: int = 2,
    axcodes: str | None = None,
    pixdim=None,
) -> dict:
    """
    The data facts a model needs (channels, shapes, frame counts), read from the image headers without decoding
    the pixel data where the format allows it.

    Header readers: NIfTI (``.nii``/``.nii.gz``) ``nibabel.load(path).shape``; ``.npy`` ``np.load(path,
    mmap_mode="r").shape`` (2D/3D arrays have no channel axis, a 4D array is ``C×D×H×W``); DICOM (a folder of one
    series of single-frame files, or a multi-frame file as a clip) pydicom with ``stop_before_pixels=True``
    (Rows, Columns, NumberOfFrames, SamplesPerPixel, number of files); video containers (:data:`VIDEO_EXTENSIONS`)
    OpenCV's frame count, width and height, counted as 3 channels since OpenCV decodes them to BGR (a
    ``LoadVideo(grayscale=True)`` pipeline turns them into 1). Other formats (``.mha``, ``.nrrd``, ...) are loaded in
    full with :class:`monai.transforms.LoadImage` and ``reader``.

    Args:
        items: datalist items (dicts with ``"image"``, e.g. from :func:`load_datalist`; their ``"source_line"``
            goes into error messages) or plain paths.
        layout: ``"volume"`` (images as channel-first ``C×D×H×W``; a clip becomes a volume whose slices along
            ``slice_axis`` are its frames) or ``"video"`` (clips as ``T×C×H×W``; a volume becomes a clip whose frames
            are the slices along its first spatial axis), as in ``SubsampledClassifier``.
        reader: the MONAI image reader (name, class or instance, as for ``LoadImage``) for formats without a
            header-only reader here; ``None``: ``LoadImage``'s choice by suffix.
        max_items: check only the first ``max_items`` items (``None``: all).
        slice_axis: spatial axis (0, 1, 2) whose slices are the frames of a volume (``layout="volume"``).
        clips_only: ``layout="video"``: refuse what is not a clip file (a volume file, a folder, a
            single-frame DICOM file) instead of reading it as a clip, as a training recipe that decodes clips
            (:class:`~monai_das.transforms.LoadVideod`) must; files that are neither video nor DICOM are refused
            before any reading. ``layout="volume"``: refuse a video file (the volume recipe's image readers cannot
            decode one) instead of reading it as a volume of frames (trial T68b).
        mixed_channels: accept images of different channel counts (a video recipe makes every clip grey or RGB
            itself); ``in_channels`` is then the largest count.
        axcodes: ``layout="volume"``: the orientation the recipe turns volumes to (``Orientation(axcodes)``): the
            shapes of NIfTI files and DICOM series folders are given in it (their header's affine, or the series'
            ImageOrientationPatient, says which stored axis becomes which: a sagittal series is stored columns ×
            rows × slices = A/P × S/I × L/R), so that a median grid and the slice count along ``slice_axis`` are
            those of the oriented volumes; ``None``: the stored order (other formats are always in their reader's
            order). Three capital letters, one of L/R,
            A/P and S/I each (:func:`~monai_das.transforms.check_axcodes`): another value is refused before any file
            is read, naming ``axcodes``.
        pixdim: ``layout="volume"``: the voxel size the recipe resamples to after orienting (``Spacing(pixdim)``;
            one number or three, :func:`~monai_das.transforms.check_pixdim`): the shapes of NIfTI files and DICOM
            series folders are then those after resampling, so that a median grid is that of the volumes the network
            is given (other formats: as read); ``None``: no resampling.
        min_frames: the fewest frames of a clip (slices along each axis of a volume; a 2D image has one) accepted,
            as the recipe's ``min_frames``: 1 accepts a still (a single-frame DICOM as a one-frame clip, a 2D image
            as a one-slice volume).

    Returns:
        ``{"in_channels": int, "shapes": {image: shape}, "num_frames_range": (min, max), "content_ids": {id: where},
        "content_paths": {id: file}, "modalities": {modality: [image, ...]}}``,
        shapes in the layout's order as above (spatial axes of NIfTI/NumPy/DICOM-series volumes in the order MONAI's
        readers give them, NIfTI's and DICOM series' after ``axcodes`` and ``pixdim``; before any resizing), frames =
        slices along ``slice_axis`` (volume) or clip length (video); ``content_ids``: the ``SOPInstanceUID`` of every DICOM image
        (each file of a series folder, a multi-frame file) and the :func:`content_key` of every other file → its item
        (datalist line and path), for :func:`check_no_copies` across lists (``content_paths``: the file of each
        content key); ``modalities``: the DICOM images' ``Modality`` (upper case) → the images of it (other files have
        none); ``geometry``: ``layout="volume"``, each NIfTI image's ``(extent, voxel size)`` in mm per axis after
        ``axcodes`` (:func:`~monai_das.data.studies.oriented_geometry`; other files have none); ``frame_rates``:
        the frame rate each video file's header declares (DICOM cines and files that declare none are left out).

    Raises:
        FileNotFoundError: a missing image.
        ValueError: naming the item's file (and datalist line): a 2D image (or one slice) where a volume is
            expected, a single-frame clip where a clip is expected (a volume with ``clips_only``), mixed channel
            counts across the items (naming two files and their counts; unless ``mixed_channels``), an empty item
            list or a bad ``layout``/``slice_axis``; two items that hold the same DICOM image (a copy in another
            folder: :func:`check_no_copies`; two parts of one series, other images, are not copies).
        UnreadableFileError: (a ``RuntimeError``) a file whose header cannot be read.
    """
    if layout not in STUDY_LAYOUTS:
        raise ValueError(f"layout must be one of {STUDY_LAYOUTS}, got {layout!r}.")
    from monai_das.transforms.preprocessing import check_axcodes, check_pixdim

    axcodes = check_axcodes(axcodes)  # once, naming the option, not "Not all axis codes" for every image
    check_pixdim(pixdim)
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}.")
    if max_items is not None and int(max_items) < 1:
        raise ValueError(f"max_items must be a positive number or None, got {max_items!r}.")
    chosen = list(items)[: None if max_items is None else int(max_items)]
    if not chosen:
        raise ValueError("check_study_shapes: no items to check.")
    shapes: dict[str, tuple[int, ...]] = {}
    first_with: dict[int, str] = {}  # channel count → the first image that has it
    frames = []
    uids: dict[str, str] = {}
    paths: dict[str, str] = {}  # content key → its file (a match is confirmed on the whole files)
    patients: dict[str, list[str]] = {}  # a DICOM study's PatientID → its items (BundleData compares the lists')
    twice: list[str] = []  # files of this list with the same content
    unoriented: list[str] = []  # NIfTI files whose header gives no orientation
    modalities: dict[str, list[str]] = {}  # DICOM modality → its images
    geometry: dict[str, tuple[list[float], list[float]]] = {}  # NIfTI volume → (extent, voxel size) in mm
    frame_rates: dict[str, float] = {}  # video file → the frame rate its header declares
    from monai_das.data.studies import nifti_without_orientation
    # every unusable image is named in one error, not one per run (a 1-frame clip, a truncated and an empty file in
    # one list took three runs to find)
    errors: list[tuple[type, str]] = []
    for item in chosen:
        image = str(item["image"] if isinstance(item, Mapping) else item)
        try:
            c, shape, t, item_uids, modality, rate = _study_facts(image, layout, slice_axis, reader, clips_only,
                                                                  min_frames, axcodes, pixdim)
            if layout == "volume" and image.lower().endswith(_NIFTI_SUFFIXES):
                geometry[image] = _nifti_geometry(image, axcodes)
            elif layout == "volume" and axcodes is not None and Path(image).is_dir():  # a DICOM series (T58b)
                found = _series_geometry(Path(image), axcodes)
                if found is not None:
                    geometry[image] = found
            if rate is not None:
                frame_rates[image] = rate
        except (FileNotFoundError, ValueError) as e:
            errors.append((type(e) if isinstance(e, FileNotFoundError) else ValueError, f"{_where(item, image)} {e}"))
            continue
        except Exception as e:  # RuntimeError or a reader's own error type (MemoryError: said): still name the file
            from monai_das.data.studies import error_text

            errors.append((UnreadableFileError, f"{_where(item, image)} cannot be read: {error_text(e)}"))
            continue
        if first_with and c not in first_with and not mixed_channels:
            other_c, other = next(iter(first_with.items()))

            def fourth(path: str, n: int) -> str:  # a 4D NIfTI's 4th axis is channels (trial T69a: not said)
                from monai_das.data.studies import FOURTH_AXIS_NOTE

                return f" ({FOURTH_AXIS_NOTE})" if n > 1 and path.lower().endswith(_NIFTI_SUFFIXES) else ""

            errors.append((ValueError,
                           f"mixed channel counts: '{other}' has {other_c} channel(s){fourth(other, other_c)}, "
                           f"{_where(item, image)} has {c}{fourth(image, c)}; all images need the same number of "
                           "channels (the network's in_channels)."))
            continue
        first_with.setdefault(c, image)
        shapes[image] = shape
        patient = _dicom_patient(Path(image)) if modality is not None or Path(image).is_dir() else None
        if patient:
            patients.setdefault(patient, []).append(_where(item, image))
        if modality:
            modalities.setdefault(modality, []).append(image)
        if layout == "volume" and axcodes is not None and nifti_without_orientation(image):  # only when reoriented
            unoriented.append(_where(item, image))
        frames.append(t)
        mine = dict.fromkeys(item_uids, _where(item, image))
        files = {k: image for k in item_uids if k.startswith("file:")}
        # within one list a copied file counts twice; across lists (BundleData's validation/test check,
        # check_no_copies) it is trained on and scored; both warned (placeholder files of one value are alike too)
        repeated = {k: w for k, w in mine.items() if k in files and k in uids and _same_files(paths[k], files[k], k)}
        if repeated:
            twice.extend(f"{w} = {uids[k]}" for k, w in repeated.items())
        try:
            check_no_copies(uids, {k: w for k, w in mine.items() if k not in files})
        except ValueError as e:  # a DICOM image twice: named with the other unusable images
            errors.append((ValueError, str(e)))
            continue
        uids.update({k: w for k, w in mine.items() if k not in uids})
        paths.update({k: f for k, f in files.items() if k not in paths})
    if unoriented:
        logger.warning(f"{len(unoriented)} NIfTI image(s) have no orientation in their header (qform_code and "
                       f"sform_code 0): {_some(unoriented)}. Their axes are taken as stored, so orientation, spacing "
                       "and the slice direction may not be the anatomy's (nor the same as other files'). Save them "
                       "with their affine.")
    if twice:
        logger.warning(f"{len(twice)} image(s) have the same content (byte for byte) as another of the same list, so "
                       f"they count twice: {_some(twice)}. List each study once.")
    if errors:
        if len(errors) == 1:
            raise errors[0][0](errors[0][1])
        shown = [m for _, m in errors[:_ERRORS_SHOWN]]
        more = f"\n  ... and {len(errors) - _ERRORS_SHOWN} more" if len(errors) > _ERRORS_SHOWN else ""
        raise errors[0][0](f"{len(errors)} of the {len(chosen)} images checked cannot be used:\n  "
                           + "\n  ".join(shown) + more)
    return {"in_channels": max(first_with), "shapes": shapes, "num_frames_range": (min(frames), max(frames)),
            "content_ids": uids, "content_paths": paths, "modalities": modalities, "geometry": geometry,
            "patients": patients, "frame_rates": frame_rates}


def _some(named: Sequence[str], shown: int = 5) -> str:
    """The first ``shown`` of ``named`` joined by ``; `` (`` ...`` when there are more), for a warning."""
    return "; ".join(named[:shown]) + (" ..." if len(named) > shown else "")


def _same_files(a: str, b: str, key: str) -> bool:
    """Whether two files whose :func:`content_key` is ``key`` hold the same bytes (a sampled key is confirmed)."""
    return "~" not in key or file_digest(a) == file_digest(b)


def check_no_copies(known: Mapping[str, str], new: Mapping[str, str], known_paths: Mapping[str, str] | None = None,
                    new_paths: Mapping[str, str] | None = None) -> int:
    """
    Refuse an item of ``new`` that holds a DICOM image of an item of ``known`` (``content_ids`` of
    :func:`check_study_shapes`, ``SOPInstanceUID`` → item), or the same file content (a :func:`content_key`; with
    ``known_paths``/``new_paths``, key → file, a match of sampled bytes is confirmed on the whole files), naming both:
    a copy of a series, cine, clip or volume in another folder or under another name would count twice in training, or
    be trained on and validated/tested on (as the same path in two lists is refused by :func:`load_datalist`). A DICOM
    image (its UID) is refused; a file of the same bytes is warned about (placeholder files holding one value, as
    test data often are, are byte-identical too). How many files were warned about.
    """
    copies = []
    for uid, where in new.items():
        if uid not in known or known[uid] == where:
            continue
        if uid.startswith("file:"):
            a, b = (known_paths or {}).get(uid), (new_paths or {}).get(uid)
            if a and b and not _same_files(a, b, uid):
                continue  # same size and sampled bytes, other content
            copies.append(f"{where} = {known[uid]}")
            continue
        raise ValueError(f"{where} holds the same DICOM image as {known[uid]} (SOPInstanceUID {uid}): a copy; list "
                         "each study once, "
                         "in one list (split by patient, never by study or frame).")
    if copies:  # warned, not refused: placeholder files of one value (test data) are byte-identical too
        logger.warning(f"{len(copies)} image(s) have the same content (byte for byte) as an image of another list "
                       f"read before (training/validation): {_some(copies)}"
                       ". A study in two lists is trained on and scored too: its metrics are optimistic. List each "
                       "study once, in one list (split by patient).")
    return len(copies)
