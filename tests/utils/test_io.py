"""monai_das.utils.io: the one checkpoint reader refuses missing, truncated, corrupt and pickled-object files."""

from __future__ import annotations

import pytest
import torch

from monai_das.utils.io import check_checkpoint, read_checkpoint


class Payload:
    """Stands for any class a pickled model file could name."""


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(3, 2).state_dict(), "epoch": 4}, path)
    return path


def test_a_whole_checkpoint_loads(ckpt):
    state = read_checkpoint(ckpt)
    assert state["epoch"] == 4 and state["model"]["weight"].shape == (2, 3)
    assert check_checkpoint(str(ckpt)) == ckpt


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        read_checkpoint(tmp_path / "model.pt")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.97])
def test_truncated_file_is_refused_naming_it_and_its_size(ckpt, keep):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=rf"model\.pt \({int(len(data) * keep)} bytes\) is not a readable PyTorch"):
        read_checkpoint(ckpt)


def test_flipped_bytes_inside_a_tensor_fail_the_checksum(ckpt):
    weight = torch.load(ckpt, weights_only=True)["model"]["weight"]
    data = bytearray(ckpt.read_bytes())
    start = bytes(data).find(weight.numpy().tobytes())
    assert start > 0
    data[start : start + 4] = bytes(b ^ 0xFF for b in data[start : start + 4])
    ckpt.write_bytes(bytes(data))
    # torch.load alone reads the flipped bytes as weights without a word
    assert not torch.equal(torch.load(ckpt, weights_only=True)["model"]["weight"], weight)
    with pytest.raises(ValueError, match=r"corrupt PyTorch checkpoint: its member .* does not match its checksum"):
        read_checkpoint(ckpt)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("model weights: see the shared drive\n")
    with pytest.raises(ValueError, match="not written by torch.save"):
        read_checkpoint(path)


def test_a_compressed_member_is_refused_unread(ckpt, tmp_path):
    """A 1 MB model.pt whose tensor member was deflated loaded as 1 GiB (trial T64b): torch.save stores its members
    uncompressed, so a compressed one is refused before anything is inflated; the same archive stored loads."""
    import zipfile

    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(ckpt) as src, zipfile.ZipFile(packed, "w") as dst:
        for member in src.infolist():
            data = src.read(member)
            deflate = member.filename.endswith("/data/0")
            dst.writestr(member.filename, data, compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    with pytest.raises(ValueError, match=r"packed\.pt \(\d+ bytes\) is not a file torch.save wrote: its member "
                                         r"'.*/data/0' is compressed \(24 bytes from \d+\).*refused unread"):
        read_checkpoint(packed)
    assert all(m.compress_type == zipfile.ZIP_STORED for m in zipfile.ZipFile(ckpt).infolist())  # torch.save's own
    # TorchScript's code members are compressed, under the module's package path (which may hold a 'data' folder)
    code = tmp_path / "code.pt"
    with zipfile.ZipFile(ckpt) as src, zipfile.ZipFile(code, "w") as dst:
        for member in src.infolist():
            dst.writestr(member.filename, src.read(member))
        dst.writestr("archive/code/__torch__/pkg/data/mods.py", "def forward(self): ...\n" * 50,
                     compress_type=zipfile.ZIP_DEFLATED)
    assert check_checkpoint(code) == code


def test_pickled_objects_are_refused_not_run(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(ValueError, match="holds Python objects other than tensors.*weights_only=True") as e:
        read_checkpoint(path)
    # what was blocked, never torch's advice to load it with weights_only=False (which would run it; trial 60b)
    text = str(e.value)
    assert "Payload" in text and "set to `False`" not in text and "will likely succeed" not in text


def test_a_torchscript_program_is_refused_not_run(tmp_path):
    """A TorchScript program saved as models/model.pt, found in a bundle folder: torch's RuntimeError advised
    weights_only=False, which would run it (trial T63c)."""

    class Program(torch.nn.Module):
        def forward(self, x):
            return x

    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(Program()), path)
    with pytest.raises(ValueError, match=r"model\.pt' is a TorchScript program, not a checkpoint: .* never run") as e:
        read_checkpoint(path)
    assert "will likely succeed" not in str(e.value) and e.value.__cause__ is None


def test_atomic_file_never_writes_through_a_planted_link(tmp_path):
    """The temporary file is made exclusively with a random name: a link planted beside the target is never followed,
    two writers of one target never share a temporary file, and the result has a plain new file's permissions."""
    import os
    import stat

    from monai_das.utils.io import atomic_file, write_text_atomic

    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    for pid_name in (f".report.tmp{os.getpid()}.json", ".report.tmp.json"):  # the old, predictable names
        (target.parent / pid_name).symlink_to(victim)
    with atomic_file(target) as first, atomic_file(target) as second:
        assert first != second and first.parent == target.parent and first.suffix == ".json"
        assert first.is_file() and not first.is_symlink()
        second.write_text("second")
        first.write_text("first")
    assert target.read_text() == "first" and victim.read_text() == "untouched"
    write_text_atomic("again", target)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask and target.read_text() == "again"
    left = sorted(p.name for p in target.parent.iterdir())
    assert left == sorted([".report.tmp.json", f".report.tmp{os.getpid()}.json", "report.json"])  # no temporary left


def test_first_write_into_a_folder_removes_what_killed_writes_left(tmp_path):
    """A killed ``atomic_file`` write leaves a hidden temporary file; the next process's first write into that folder
    deletes it once it is 5 minutes old (a younger one may be another program's write in flight), and nothing else:
    not the files beside it, not a link of such a name."""
    import os
    import time

    from monai_das.utils.io import STALE_TEMP_S, write_text_atomic

    folder = tmp_path / "figures"
    folder.mkdir()
    old = time.time() - STALE_TEMP_S - 60
    stale = folder / ".kept_frames.x1y2z3a4.tmp.png"
    young = folder / ".kept_frames.q9w8e7r6.tmp.png"
    kept = [folder / "kept_frames.png", folder / ".hidden_note", folder / "report.tmp.png"]
    link = folder / ".roc.abcd1234.tmp.png"
    for f in [stale, young, *kept]:
        f.write_bytes(b"x")
        os.utime(f, (old, old)) if f is not young else None
    link.symlink_to(kept[0])
    os.utime(link, (old, old), follow_symlinks=False)
    write_text_atomic("{}", folder / "metrics.json")
    assert not stale.exists()
    assert young.exists() and all(f.exists() for f in kept) and link.is_symlink()
    assert (folder / "metrics.json").read_text() == "{}"


def test_a_full_disk_names_the_file_and_keeps_the_earlier_one(tmp_path):
    """An ONNX export on a full disk ended in a raw 20-line traceback, "OSError: [Errno 27] File too large", naming no
    file (trial T70a); torch and ONNX raise their own errors over the OSError. atomic_file names the file, the cause
    and what is kept; an error of another kind (a missing input file) passes through as it was."""
    import errno

    from monai_das.utils.io import atomic_file

    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match=r"could not write the ONNX export '.*model\.onnx': File too large \(a full disk, "
                                      r"a quota or a file size limit\); 'model\.onnx' is kept as it was: free space"):
        with atomic_file(target, "the ONNX export") as tmp:
            tmp.write_bytes(b"ha")
            try:
                raise OSError(errno.EFBIG, "File too large")
            except OSError as e:
                raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from e
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    with pytest.raises(FileNotFoundError, match="^no checkpoint$"):
        with atomic_file(tmp_path / "new.ts"):
            raise FileNotFoundError("no checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.skipif(not hasattr(__import__("os"), "O_ACCMODE"), reason="emulates Windows' fsync with POSIX's fcntl")
def test_files_are_flushed_through_a_handle_open_for_writing(tmp_path, monkeypatch):
    """Windows' fsync (FlushFileBuffers) refuses a handle not open for writing (EBADF): fsync_path opened every file
    read-only, so each atomic write (a report, the model card, a checkpoint) failed there (review R70g)."""
    import errno
    import fcntl
    import os
    import stat

    from monai_das.utils.io import write_text_atomic

    fsync = os.fsync

    def windows_fsync(fd):
        if not stat.S_ISDIR(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", windows_fsync)
    write_text_atomic("{}", tmp_path / "metrics.json")
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_a_file_system_that_cannot_flush_keeps_writes_atomic(tmp_path, monkeypatch):
    """A file system that does not fsync (EINVAL: some FUSE and network mounts) failed every atomic write with
    "[Errno 22] Invalid argument" naming no file (review R70g): the write is made, atomic as before; a flush that
    fails (EIO) still fails the write."""
    import errno
    import os

    from monai_das.utils.io import write_text_atomic

    def refused(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", refused)
    write_text_atomic("{}", tmp_path / "metrics.json")
    assert (tmp_path / "metrics.json").read_text() == "{}"

    def failed(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failed)
    with pytest.raises(OSError, match="Input/output error"):
        write_text_atomic("[]", tmp_path / "metrics.json")
    assert (tmp_path / "metrics.json").read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
