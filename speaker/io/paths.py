"""Where a run's data lives: the options every CLI shares and how they are resolved.

A prepared data root (what ``python -m speaker.toy`` and
``scripts/prepare_voxceleb.py`` write) has::

    ROOT/train/manifest.jsonl   ROOT/test/manifest.jsonl   ROOT/test/trials.txt
    ROOT/dev/manifest.jsonl     ROOT/dev/trials.txt   (optional: speakers of their own)
    ROOT/musan/{noise,music,speech}/   ROOT/rirs/

``--data ROOT`` fills in every path; ``--train/--dev/--dev-trials/--test/--trials/--musan/
--rirs`` override single ones. The dev split is where settings are chosen; the test split is
scored once, for the chosen settings. A manifest path may be a ``.jsonl`` manifest, a Kaldi data
directory (``wav.scp`` + ``utt2spk``) or a VoxCeleb ``wav/`` tree.

Example::

    paths = DataPaths(data=Path("toy"))
    manifest = paths.train_manifest()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from speaker.io.manifest import Manifest, Trial, read_trials
from speaker.views.augment import NoiseBank
from store.errors import UserError

_FIELDS = ("data", "train", "dev", "dev_trials", "test", "trials", "musan", "rirs")


def load_manifest(path: Path) -> Manifest:
    """Read a manifest from a ``.jsonl`` file, a Kaldi data dir or a VoxCeleb tree."""
    if path.is_file():
        return Manifest.read(path)
    if (path / "manifest.jsonl").is_file():
        return Manifest.read(path / "manifest.jsonl")
    if (path / "wav.scp").is_file():
        return Manifest.from_kaldi(path)
    if path.is_dir():
        return Manifest.from_voxceleb(path)
    raise UserError(f"{path}: no such manifest file, Kaldi data dir or VoxCeleb tree")


@dataclass(frozen=True)
class DataPaths:
    data: Path | None = None
    train: Path | None = None
    dev: Path | None = None
    dev_trials: Path | None = None
    test: Path | None = None
    trials: Path | None = None
    musan: Path | None = None
    rirs: Path | None = None

    @classmethod
    def from_options(cls, opts: dict[str, Any]) -> DataPaths:
        """Take (and remove) the data options from a click kwargs dict."""
        return cls(**{name: opts.pop(name, None) for name in _FIELDS})

    def _path(self, name: str, default: str) -> Path | None:
        explicit = getattr(self, name)
        if explicit is not None:
            return Path(explicit)
        if self.data is not None and (self.data / default).exists():
            return self.data / default
        return None

    def _required(self, name: str, default: str) -> Path:
        path = self._path(name, default)
        if path is None:
            flag = name.replace("_", "-")
            raise UserError(f"no --{flag} given (or --data DIR containing {default})")
        return path

    def train_manifest(self) -> Manifest:
        return load_manifest(self._required("train", "train/manifest.jsonl"))

    def test_manifest(self) -> Manifest:
        return load_manifest(self._required("test", "test/manifest.jsonl"))

    def test_set(self) -> tuple[Manifest, list[Trial]]:
        manifest = self.test_manifest()
        trials = read_trials(self._required("trials", "test/trials.txt"), set(manifest.ids))
        return manifest, trials

    @property
    def has_test(self) -> bool:
        return self._path("test", "test/manifest.jsonl") is not None

    def dev_set(self) -> tuple[Manifest, list[Trial]]:
        """The dev split's manifest and trials (speakers of their own, for choosing settings)."""
        manifest = load_manifest(self._required("dev", "dev/manifest.jsonl"))
        trials = read_trials(self._required("dev_trials", "dev/trials.txt"), set(manifest.ids))
        return manifest, trials

    @property
    def has_dev(self) -> bool:
        return self._path("dev", "dev/manifest.jsonl") is not None

    def split(self, name: str) -> tuple[Manifest, list[Trial]]:
        """``"dev"`` or ``"test"``: that split's manifest and trials."""
        if name not in ("dev", "test"):
            raise UserError(f"unknown split {name!r}: expected dev or test")
        return self.dev_set() if name == "dev" else self.test_set()

    def noise_bank(self, sample_rate: int) -> NoiseBank:
        musan, rirs = self._path("musan", "musan"), self._path("rirs", "rirs")
        if musan is None and rirs is None:
            return NoiseBank.empty(sample_rate)
        return NoiseBank.from_dirs(musan, rirs, sample_rate=sample_rate)

    def to_dict(self) -> dict[str, str | None]:
        """The given paths, made absolute (a run's config must not depend on its cwd)."""
        return {name: None if getattr(self, name) is None
                else str(Path(getattr(self, name)).absolute()) for name in _FIELDS}


def data_options(command: Callable) -> Callable:
    """click decorator adding --data/--train/--test/--trials/--musan/--rirs."""
    path = click.Path(exists=True, path_type=Path)
    for name, help_text in reversed(
        [
            ("data", "Prepared data root (train/, dev/, test/, musan/, rirs/)."),
            ("train", "Training manifest (.jsonl, Kaldi dir or VoxCeleb tree)."),
            ("dev", "Dev manifest (speakers of its own) for choosing settings."),
            ("dev_trials", "Dev trial list."),
            ("test", "Test manifest for evaluation."),
            ("trials", "Trial list ('1 a.wav b.wav')."),
            ("musan", "MUSAN-style noise root (noise/, music/, speech/)."),
            ("rirs", "Room impulse response directory."),
        ]
    ):
        flag = name.replace("_", "-")
        command = click.option(f"--{flag}", name, type=path, default=None,
                               help=help_text)(command)
    return command
