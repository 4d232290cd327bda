"""Turning views (utterance, crop start, seed) into model inputs, and the per-epoch
view set used to train a teacher.

A view is the unit that stage 1 caches and stage 2 replays: the same
``(utt, start, seed)`` always renders the same augmented crop and the same fbank
(dither included), so a student sees exactly the input the teacher saw.

Example::

    render = ViewRenderer(manifest, label_map, crop_samples=32000, augment=cfg, bank=bank)
    feats, label = render(utt=3, start=1200, seed=42)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from speaker.features.fbank import fbank
from speaker.io.audio import AudioReader
from speaker.io.manifest import LabelMap, Manifest
from speaker.views.augment import AugmentConfig, NoiseBank
from speaker.views.view import draw_view, render_view_checked, row_order
from store.errors import UserError


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch thread, then restore the setting.

    Rendering a crop (fbank, augmentation) is many small ops: spread over threads they
    only spin, 5-8x slower on a busy 2-core CPU. DataLoader workers already use one
    thread; this gives the same speed (and the same bits) to crops rendered in the main
    process (``--workers 0``, verify) without taking threads from the model.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class ViewRenderer:
    """Render one view into (input tensor, class index).

    ``input_kind`` is ``"fbank"`` ([frames, 80] features) or ``"wave"`` (the raw
    augmented crop, for waveform models such as WavLM).
    """

    manifest: Manifest
    label_map: LabelMap
    crop_samples: int
    augment: AugmentConfig
    bank: NoiseBank
    sample_rate: int = 16000
    input_kind: str = "fbank"
    reader: AudioReader = field(init=False)

    def __post_init__(self) -> None:
        if tuple(self.label_map.speeds) != tuple(self.augment.speeds):
            raise UserError(
                f"label map speeds {tuple(self.label_map.speeds)} differ from the augmentation's "
                f"speeds {tuple(self.augment.speeds)}"
            )
        if self.input_kind not in ("fbank", "wave"):
            raise UserError(f"unknown input kind {self.input_kind!r} (expected fbank or wave)")
        self.reader = AudioReader(self.sample_rate)

    def render(self, utt: int, start: int, seed: int) -> tuple[np.ndarray, int]:
        """-> (augmented crop, class index)."""
        wave, label, _ = self.render_checked(utt, start, seed)
        return wave, label

    def render_checked(self, utt: int, start: int, seed: int) -> tuple[np.ndarray, int, int]:
        """-> (augmented crop, class index, :func:`~speaker.views.view.crop_checksum` of the raw
        samples read)."""
        u = self.manifest[utt]
        with one_thread():
            view = render_view_checked(
                self.reader, u, int(start), int(seed), self.crop_samples, self.augment, self.bank
            )
        label = self.label_map.index(u.speaker, self.label_map.speeds[view.speed_index])
        return view.wave, label, view.crop_checksum

    def features(self, wave: np.ndarray, seed: int) -> torch.Tensor:
        """fbank of a rendered crop, dither drawn from the row's seed."""
        with one_thread():
            return fbank(wave, seed=int(seed), sample_rate=self.sample_rate)

    def __call__(self, utt: int, start: int, seed: int) -> tuple[torch.Tensor, int]:
        wave, label = self.render(utt, start, seed)
        if self.input_kind == "wave":
            return torch.from_numpy(wave), label
        return self.features(wave, seed), label


def check_audio(manifest: Manifest, sample_rate: int, what: str = "manifest") -> None:
    """Cheap checks before a run writes anything: every utterance of ``manifest`` is
    listed at ``sample_rate`` and its audio file (or HDF5 pack) exists.

    A corrupt file is only found when it is read; this catches the common mistakes
    (a moved corpus, a manifest of another rate) in one stat per distinct file.
    """
    seen: set[str] = set()
    for utt in manifest:
        if utt.sample_rate != sample_rate:
            raise UserError(
                f"{what}: utterance {utt.id!r} is listed at {utt.sample_rate} Hz but this run "
                f"reads audio at {sample_rate} Hz; use manifests of one sample rate"
            )
        if utt.path not in seen:
            seen.add(utt.path)
            if not os.path.isfile(utt.path):
                raise UserError(
                    f"{what}: audio {utt.path} of utterance {utt.id!r} does not exist"
                )


def view_rows(manifest: Manifest, views_per_utt: int) -> np.ndarray:
    """Utterance index of each row when every utterance gets ``views_per_utt`` views."""
    return np.repeat(np.arange(len(manifest), dtype=np.int64), views_per_utt)


class EpochViews(Dataset):
    """Freshly drawn views for one training epoch, shuffled and split across ranks.

    Row ``r`` of epoch ``e`` is utterance ``r // views_per_utt`` with
    ``draw_view(run_seed=f(seed, e), row=r)``; the order is a permutation drawn from
    ``(seed, e)``; rank ``i`` of ``n`` takes every n-th row, truncated so that all ranks
    run the same number of steps.
    """

    def __init__(
        self,
        render: ViewRenderer,
        views_per_utt: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.render = render
        self.utt_of_row = view_rows(render.manifest, views_per_utt)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, 7])))
        order = rng.permutation(len(self.utt_of_row))
        per_rank = len(order) // self.world_size
        self.rows = order[self.rank :: self.world_size][:per_rank]
        self.run_seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self.rows[i])
        utt = int(self.utt_of_row[row])
        start, seed = draw_view(
            self.run_seed, row, self.render.manifest[utt].num_samples, self.render.crop_samples
        )
        return self.render(utt, start, seed)


class ViewRows(Dataset):
    """Row index -> dict of teacher input ``x``, ``label``, ``utt``, ``start``, ``seed``,
    ``crop_checksum`` (and the student ``features`` when asked), replayable from the row.

    Row ``r`` holds a view of utterance ``utts[row_order(N, run_seed)[r] // views_per_utt]``:
    views in a seeded random order, so stored chunks mix speakers. ``utts`` (default: all)
    are the manifest indices dumped, e.g. without speakers a pretrained teacher lacks.
    """

    def __init__(self, render: ViewRenderer, views_per_utt: int, run_seed: int,
                 utts: np.ndarray | None = None, store_features: bool = False):
        self.render = render
        self.views_per_utt = views_per_utt
        self.run_seed = run_seed
        self.store_features = store_features
        self.utts = np.arange(len(render.manifest)) if utts is None else utts
        self.order = row_order(len(self.utts) * views_per_utt, run_seed)

    def __len__(self) -> int:
        return len(self.order)

    def view(self, row: int) -> tuple[int, int, int]:
        """-> (utt, start, seed) of ``row``."""
        utt = int(self.utts[int(self.order[row]) // self.views_per_utt])
        start, seed = draw_view(
            self.run_seed, row, self.render.manifest[utt].num_samples, self.render.crop_samples
        )
        return utt, start, seed

    def __getitem__(self, row: int) -> dict[str, object]:
        utt, start, seed = self.view(row)
        wave, label, checksum = self.render.render_checked(utt, start, seed)
        # The students' fbank; a fbank teacher's own input is the same tensor.
        wanted = self.store_features or self.render.input_kind == "fbank"
        feats = self.render.features(wave, seed) if wanted else None
        item = {"x": feats if self.render.input_kind == "fbank" else torch.from_numpy(wave),
                "label": label, "utt": utt, "start": start, "seed": seed,
                "crop_checksum": checksum}
        if self.store_features:
            item["features"] = feats.to(torch.float16)
        return item
