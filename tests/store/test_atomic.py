"""store.atomic: a target changes only when its new content is complete; failures are one
UserError naming the target, and leave no temporary behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from store.atomic import atomic_dir, atomic_path, atomic_write_text
from store.errors import UserError


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_replaces_and_keeps_the_suffix(tmp_path: Path):
    target = tmp_path / "sub" / "det.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and not target.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and names(target.parent) == ["det.png"]


@pytest.mark.parametrize("wrapped", [False, True])
def test_failed_write_keeps_the_old_file(tmp_path: Path, wrapped: bool):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def fail() -> None:
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if not wrapped:
            raise full
        try:  # what torch.save does: its zip writer fails again while unwinding
            raise full
        except OSError:
            raise RuntimeError("unexpected pos 6784 vs 6678") from None

    with pytest.raises(UserError, match=rf"cannot write {target}: No space left on device$"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            fail()
    assert target.read_bytes() == b"old" and names(tmp_path) == ["model.pt"]


def test_other_errors_pass_through_and_clean_up(tmp_path: Path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{")
            raise KeyError("bug")
    assert names(tmp_path) == []


def test_write_text(tmp_path: Path):
    atomic_write_text(tmp_path / "m.jsonl", "é\n")
    assert (tmp_path / "m.jsonl").read_text(encoding="utf-8") == "é\n"


def test_dir_replaces_a_tree_or_puts_the_old_one_back(tmp_path: Path, monkeypatch):
    out = tmp_path / "corpus"
    with atomic_dir(out) as stage:
        (stage / "a.txt").write_text("1")
    with atomic_dir(out) as stage:
        (stage / "b.txt").write_text("2")
    assert names(out) == ["b.txt"] and names(tmp_path) == ["corpus"]

    real = os.replace

    def replace(src, dst):  # the new tree cannot be moved in: the old one must come back
        if Path(dst) == out and Path(src).name.startswith(".corpus.partial"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(UserError, match=rf"cannot write {out}: Read-only file system"):
        with atomic_dir(out) as stage:
            (stage / "c.txt").write_text("3")
    assert names(out) == ["b.txt"] and names(tmp_path) == ["corpus"]


def test_dir_failure_inside_leaves_nothing(tmp_path: Path):
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "root") as stage:
            (stage / "x").write_text("x")
            raise ValueError("stop")
    assert names(tmp_path) == []
