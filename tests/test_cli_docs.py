"""Every command-line flag of the package's entry points and of the benchmarks is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "benchmarks/README.md", "bundles/das_volume_classification/docs/README.md",
        "bundles/das_video_classification/docs/README.md")
SOURCES = sorted([*REPO.glob("monai_das/**/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("apps/**/*.py")])


def _flags(path: Path) -> list[str]:
    """The ``--long`` option strings of every ``add_argument`` call in ``path`` (read, not imported)."""
    flags = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags += [a.value for a in node.args
                      if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("--")]
    return flags


@pytest.mark.parametrize("path", [p for p in SOURCES if _flags(p)], ids=lambda p: str(p.relative_to(REPO)))
def test_command_line_flags_are_documented(path):
    docs = "\n".join((REPO / d).read_text() for d in DOCS)
    missing = [f for f in _flags(path) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", docs)]
    assert not missing, f"{path.relative_to(REPO)}: flags not in {', '.join(DOCS)}: {missing}"


def test_readme_python_api_runs(tmp_path, monkeypatch):
    """The README's "Python API" block runs as written (a user copies it first)."""
    import warnings

    text = (REPO / "README.md").read_text()
    section = text[text.index("### Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it writes das.onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings of the TorchScript line
        scope: dict = {}
        exec(compile(code, "README.md (Python API)", "exec"), scope)
    assert tuple(scope["logits"].shape) == (16, 2) and tuple(scope["kept"].shape) == (16, 4)
    assert (tmp_path / "das.onnx").is_file() and scope["traced"] is not None
