"""What MONAI's bundle ``ConfigParser`` would not keep as plain text: one rule for the data that reaches it (model
cards read by ``ckpt_export``, config overrides built from a card, class names that go into cards)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CARD_KEY", "MAX_CLASS_NAME_LENGTH", "optional", "parser_rewrites", "find_config_code", "hidden_characters"]

#: the model card's section of a ``metadata.json`` (``monai_das.handlers.ModelCardSaver`` writes it; plain data that
#: the export, the Deploy app and the bundles read)
CARD_KEY = "das_model"

#: the longest class name: a model card's names go into every report, log line and predictions row (a received
#: card's 10 MB name made each study's report 20 MB; trial T71g)
MAX_CLASS_NAME_LENGTH = 256


def optional(value: Any) -> Any:
    """``None`` for ``None``, ``""``, ``"none"`` and ``"null"`` (any case: a bundle command line passes strings); the
    value otherwise. The one rule for an option a user may leave unset."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    return value


def hidden_characters(text: str) -> list[str]:
    """The characters of ``text`` that print as something else or nothing: control characters (a newline, a tab,
    ``\\x1b`` terminal escapes), format characters (right-to-left overrides, zero-width spaces; not the zero-width
    joiner and non-joiner of Persian and Indic spellings) and line/paragraph separators, as ``ascii`` escapes
    (``['\\n']``). A class name holding one reads as another name, or as another log line (security review T69b:
    ``'a\\nFAKE LOG LINE'``), in logs, reports and MONAI Label's answers."""
    import unicodedata

    return [ascii(c)[1:-1] for c in dict.fromkeys(text)
            if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in _JOINERS]


#: zero-width non-joiner and joiner: format characters that are part of spellings (Persian, Indic scripts), not hidden
_JOINERS = ("\u200c", "\u200d")


#: keys MONAI's ``ConfigParser`` reads as directives (instantiate a class, import, ...), not as data
CONFIG_DIRECTIVES = ("_target_", "_requires_", "_disabled_", "_mode_", "_desc_")


def parser_rewrites(text: str, separator: bool = True) -> str | None:
    """
    Why MONAI's ``ConfigParser`` would read the string ``text`` as something other than itself, or ``None`` when it
    keeps it as it is: at its start ``$`` (a Python expression, evaluated), ``%`` (a macro: replaced by the content
    of another file, ``"%/path/file.json#key"``) or ``@`` (a reference to another entry); anywhere, ``%#`` or ``@#`` (a
    relative id, rewritten inside the text: ``"k%#z"`` at id ``a#b`` is parsed as ``"k%a::z"``) and, with
    ``separator``, any ``#``
    (the parser's old id separator, rewritten to ``::``: ``"grade #2"`` is parsed as ``"grade ::2"``, also in the
    metadata ``ckpt_export`` embeds). An ``@`` inside other text is kept.
    """
    if text.startswith("$"):
        return "starts with '$' (MONAI's config parser evaluates it as Python)"
    if text.startswith("%"):
        return "starts with '%' (a macro: MONAI's config parser replaces it by the content of another file)"
    if text.startswith("@"):
        return "starts with '@' (a reference to another entry of a MONAI config)"
    if "%#" in text or "@#" in text:
        return "holds '%#' or '@#' (a relative id, which MONAI's config parser rewrites inside the text)"
    if separator and "#" in text:
        return "holds '#' (MONAI's config parser rewrites it to '::', its id separator)"
    return None


def find_config_code(value: Any, key: str = "", separator: Callable[[str], bool] = lambda key: False
                     ) -> tuple[str, bool, str, str] | None:
    """
    The first place in ``value`` (nested mappings, lists and tuples) that MONAI's ``ConfigParser`` would not keep as
    plain data: ``(key path "#a#b#0", is_key, why, the key or text)`` for a key that is a directive (``_target_``,
    ...) or starts with ``$``/``%``/``@``, or a string value :func:`parser_rewrites` names (``separator(path)``:
    whether a ``#`` counts there); ``None`` when everything is plain data.
    """
    if isinstance(value, Mapping):
        for k, v in value.items():
            name = str(k)
            if name.startswith(("$", "%", "@")) or name in CONFIG_DIRECTIVES:
                return key, True, "is a MONAI config directive", name
            found = find_config_code(v, f"{key}#{name}", separator)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = find_config_code(v, f"{key}#{i}", separator)
            if found is not None:
                return found
    elif isinstance(value, str) and (why := parser_rewrites(value, separator=separator(key))) is not None:
        return key, False, why, value
    return None
