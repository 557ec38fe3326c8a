"""parser_rewrites: the one rule for text that MONAI's ConfigParser would not keep as it is."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser

from monai_das.utils.config import parser_rewrites


@pytest.mark.parametrize("text", ["$print(1)", "%/etc/f.json#k", "@network_def", "k%#z", "q@#e", "a@b", "x::y", "plain",
                                  "50%", "user@host.org", "#1"])
def test_parser_rewrites_is_what_monai_does(text):
    """Refused exactly the texts MONAI's parser does not return as they are (checked against MONAI itself, for the
    ones it can parse on its own: a macro needs its file, a reference its target)."""
    why = parser_rewrites(text)
    if text.startswith(("%", "@", "$")):
        assert why is not None
        return
    parser = ConfigParser({"a": {"b": text}})
    parser.parse()
    assert (parser.get_parsed_content("a#b") != text) == (why is not None), (text, why)
