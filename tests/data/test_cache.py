"""NamedCacheDataset: an item that cannot be loaded is named (datalist line, image, first cause)."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Lambdad

from monai_das.data import ItemLoadError, NamedCacheDataset


def _nifti(path, shape=(8, 8, 6)):
    import nibabel as nib

    nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)).to_filename(str(path))
    return str(path)


def test_truncated_file_is_named_with_its_datalist_line(tmp_path):
    good = _nifti(tmp_path / "good.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(open(_nifti(tmp_path / "full.nii.gz", (30, 30, 20)), "rb").read()[:300])  # header, no data
    items = [{"image": good, "source_line": "labels.csv:2"}, {"image": str(bad), "source_line": "labels.csv:3"},
             {"image": str(bad), "source_line": "labels.csv:4"}]
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    with pytest.raises(ItemLoadError, match=r"labels\.csv:3 \(image '.*bad\.nii\.gz'\): cannot be loaded: \w+.* "
                       r"\(and 1 more item\(s\) that cannot be loaded, below\)\n- labels\.csv:4 "
                       r"\(image '.*bad\.nii\.gz'\): cannot "
                       r"be loaded"):
        NamedCacheDataset(items, load, cache_rate=1.0, num_workers=2, progress=False)  # every failure named (T68b)
    lazy = NamedCacheDataset(items, load, cache_rate=0.0, progress=False)  # not cached: named when fetched
    assert lazy[0]["image"].shape == (1, 8, 8, 6)
    with pytest.raises(ItemLoadError, match=r"labels\.csv:3"):
        lazy[1]


def test_items_without_a_datalist_line_are_named_by_index():
    def refuse(x):
        raise ValueError("not a volume")

    with pytest.raises(ItemLoadError, match="item 1: cannot be loaded: ValueError: not a volume"):
        NamedCacheDataset([{"x": 1}, {"x": 2}], Compose([Lambdad("x", lambda v: refuse(v) if v == 2 else v)]),
                          cache_rate=1.0, num_workers=1, progress=False)


def test_a_lazily_made_item_is_made_once_per_fetch():
    """The item was read a second time only to have its name at hand: a lazily made one (the synthetic datasets')
    was made twice per fetch (its cached part and every random transform's epoch), a failure still names it."""
    from collections.abc import Sequence

    from monai.transforms import RandLambdad

    class Made(Sequence):
        def __init__(self):
            self.made = 0

        def __len__(self):
            return 3

        def __getitem__(self, i):
            if not 0 <= i < 3:
                raise IndexError(i)
            self.made += 1
            return {"x": i, "source_line": f"made:{i}"}

    data = Made()
    ds = NamedCacheDataset(data, Compose([Lambdad("x", lambda v: v + 1), RandLambdad("x", lambda v: 10 * v)]),
                           cache_rate=1.0, num_workers=1, progress=False)
    assert data.made == 3  # the cache: once each
    assert [ds[i]["x"] for i in range(3)] == [10, 20, 30] and data.made == 3  # random part on the cached items
    assert [item["x"] for item in ds] == [10, 20, 30]  # an IndexError past the end, not an ItemLoadError (review)
    lazy = NamedCacheDataset(data, Compose([Lambdad("x", lambda v: v if v < 2 else 1 / 0)]), cache_rate=0.0,
                             progress=False)
    made = data.made
    assert lazy[0]["x"] == 0 and data.made == made + 1
    with pytest.raises(ItemLoadError, match=r"made:2: cannot be loaded: ZeroDivisionError"):
        lazy[2]


def test_many_failures_are_named_up_to_a_limit():
    from monai_das.data.cache import MAX_NAMED_FAILURES

    items = [{"x": i, "source_line": f"list.csv:{i + 2}"} for i in range(MAX_NAMED_FAILURES + 3)]
    with pytest.raises(ItemLoadError) as raised:
        NamedCacheDataset(items, Compose([Lambdad("x", lambda v: 1 / 0)]), cache_rate=1.0, num_workers=1,
                          progress=False)
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("list.csv:2: cannot be loaded: ZeroDivisionError") and lines[-1] == "... and 3 more"
    assert lines[0].endswith(f"(and {MAX_NAMED_FAILURES + 2} more item(s) that cannot be loaded, below)")
    assert [line.split(":")[1] for line in lines[1:-1]] == [str(i + 3) for i in range(MAX_NAMED_FAILURES - 1)]


def test_a_first_failure_spanning_lines_keeps_the_count_on_the_first_line():
    """R68f: a first cause whose message spans lines (ITK's) pushed "(and N more ...)" off the first line, the one a
    log reader that keeps one line shows."""
    def refuse(x):
        raise RuntimeError("ITK ERROR: ImageIOFactory\nCould not create IO object for reading file\n  Tried: none")

    items = [{"x": i, "source_line": f"list.csv:{i + 2}"} for i in range(3)]
    with pytest.raises(ItemLoadError) as raised:
        NamedCacheDataset(items, Compose([Lambdad("x", refuse)]), cache_rate=1.0, num_workers=1, progress=False)
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("list.csv:2: cannot be loaded: RuntimeError: ITK ERROR: ImageIOFactory")
    assert lines[0].endswith("(and 2 more item(s) that cannot be loaded, below)")
    assert lines[1:3] == ["  Could not create IO object for reading file", "    Tried: none"]
    assert [line[:13] for line in lines if line.startswith("- ")] == ["- list.csv:3:", "- list.csv:4:"]
    assert all(line.startswith(("- ", "  ")) for line in lines[1:])  # continuation lines indented under their item
