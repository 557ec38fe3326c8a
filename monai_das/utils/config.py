"""What MONAI's bundle ``ConfigParser`` would not keep as plain text: one rule for the data that reaches it (model
cards read by ``ckpt_export``, config overrides built from a card, class names that go into cards)."""

from __future__ import annotations

__all__ = ["parser_rewrites"]


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
