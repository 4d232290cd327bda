"""``python -m store``: inspect, verify, stats, invalidate and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from store.__main__ import main


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli("verify", path)`` -> (exit code, stdout, stderr), run in this process."""

    def invoke(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["store", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _flip_byte(path: Path, position: int = 50) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def test_inspect(cli, small_store):
    path, spec = small_store
    code, out, _ = cli("inspect", path)
    assert code == 0
    assert "complete:     4/4 shards (1000 rows); missing: none" in out
    assert "top k=8 non-targets, temperatures [1.0, 2.0]" in out
    assert "topk_logit    float16  shape [1000, 8]" in out
    assert "bytes/row (raw " in out
    code, out, _ = cli("inspect", path, "--json")
    report = json.loads(out)
    assert report["format_version"] == 3 and report["complete_shards"] == 4
    assert report["full_fp16_bytes_per_row"] == 100 and 0 < report["bytes_per_row"]
    assert report["spec"]["k"] == 8 and report["spec"]["num_utterances"] == 120


def test_verify_ok(cli, small_store):
    code, out, err = cli("verify", small_store[0])
    assert code == 0 and out.startswith(f"ok: {small_store[0]}: 1000 rows in 4 shards")


def test_verify_names_corrupt_shard(cli, small_store):
    path, _ = small_store
    _flip_byte(path / "topk_index" / "c" / "1" / "0")
    code, out, err = cli("verify", path)
    assert code == 2
    assert "bad: " in out and "shard 1 is corrupt: array 'topk_index'" in out
    line = _one_error_line(err)
    assert "failed verification" in line and "in shard(s) 1;" in line


def test_verify_names_rows_breaking_invariants(cli, small_store):
    path, _ = small_store
    labels = zarr.open_array(str(path / "label"), mode="r+")
    labels[300] = 77  # valid checksum, invalid value: only the invariant check sees it
    code, out, err = cli("verify", path)
    assert code == 2
    assert "shard 1: label outside [0, 50) at row 300" in out
    assert "in shard(s) 1;" in _one_error_line(err)


def test_verify_incomplete(cli, small_store):
    path, _ = small_store
    assert cli("invalidate", path, 3)[0] == 0
    code, out, err = cli("verify", path)
    assert code == 2 and "shards 3 are not written" in _one_error_line(err)
    code, out, _ = cli("verify", path, "--allow-incomplete")
    assert code == 0 and "768 rows in 3 shards" in out


def test_stats(cli, small_store, tmp_path):
    path, _ = small_store
    plot = tmp_path / "stats.png"
    code, out, _ = cli("stats", path, "--plot", plot)
    assert code == 0 and plot.stat().st_size > 10_000
    assert "1000 rows at T=1: median p_target" in out and "\n8    0." in out
    code, out, _ = cli("stats", path, "--json", "--temperature", 2)
    stats = json.loads(out)
    assert stats["rows"] == 1000 and sum(stats["target_prob_hist"]) == 1000
    kept = np.asarray(stats["kept_mass_mean"])
    assert len(kept) == 8 and (np.diff(kept) >= 0).all() and 0 < kept[0] and kept[-1] < 1
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("stats", "{path}", "--temperature", "3"), "temperature 3 is not in the store's grid"),
        (("inspect", "{tmp}/nothing.zarr"), "no store at"),
        (("verify", "{tmp}/nothing.zarr"), "no store at"),
        (("invalidate", "{path}", "9"), "shard 9 is out of range: the store has 4"),
        (("stats", "{path}", "--plot", "{tmp}/no/dir/x.png"), "does not exist"),
    ],
)
def test_one_line_errors(cli, small_store, tmp_path, args, message):
    args = [a.format(path=small_store[0], tmp=tmp_path) for a in args]
    code, _, err = cli(*args)
    assert code == 2 and message in _one_error_line(err)


def test_wrong_version_is_one_line(cli, small_store):
    path, _ = small_store
    zarr.open_group(str(path), mode="r+").update_attributes({"format_version": 7})
    code, _, err = cli("inspect", path)
    assert code == 2
    assert "has cache format version 7 but this entkd reads version 1" in _one_error_line(err)


def test_real_process_error_and_no_torch(small_store):
    path, _ = small_store
    _flip_byte(path / "tail_lse" / "c" / "2" / "0")
    proc = subprocess.run(
        [sys.executable, "-m", "store", "verify", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "in shard(s) 2;" in _one_error_line(proc.stderr)
    check = "import sys, store.__main__; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0


def test_verify_and_inspect_a_version_1_store(cli, tmp_path):
    import shutil

    path = shutil.copytree(Path(__file__).resolve().parent / "data" / "v1_store",
                           tmp_path / "v1.zarr")
    code, out, _ = cli("verify", path)
    assert code == 0 and "40 rows in 3 shards pass" in out
    code, out, _ = cli("inspect", path)
    assert code == 0 and "none per row (version-1 store" in out


def test_the_store_package_does_not_import_speaker():
    """Layering: the cache library and its CLI stand alone (no torch, no speaker)."""
    code = ("import sys, store, store.__main__, store.lock, store.synthetic; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('speaker', 'torch')); "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
