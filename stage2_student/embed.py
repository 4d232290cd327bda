"""Embed a list of utterances with any model into HDF5: ``python -m stage2_student.embed``.

``--input`` is a wav list (a text file, one audio path per line; the id is the path as
written), a Kaldi data directory, a VoxCeleb tree or a ``.jsonl`` manifest
(:func:`speaker.io.paths.load_manifest`). ``--model`` is any spec
:func:`speaker.evaluation.embedders.load_embedder` takes (entkd run or checkpoint, ONNX or
TorchScript file, ``module:factory``, ``speechbrain:DIR``, ``wespeaker:DIR``); a model that
does not give ``[B, D]`` embeddings is refused. Utterances are embedded whole (or under a
``--condition``), in batches of equal length, exactly as ``stage2_student.evaluate`` embeds
them (:func:`speaker.evaluation.evaluate.embed_utterances`, the same batches), so scoring the
file (``stage2_student.score``) gives evaluate's numbers.

**The file** holds one matrix with an id index, not one dataset per utterance::

    embeddings  float32 [N, D]   row i is utterance ids[i] (manifest order)
    ids         str [N]
    speakers    str [N]          ("" for a wav list: speakers unknown)
    attrs       model, model_sha256, input, condition, sample_rate, embed_dim

A million utterances (VoxCeleb2) are a million HDF5 objects the other way, each with its
own metadata, slow to create and to list; a matrix is read in one call and is what scoring
(a matrix product) and AS-norm cohorts want. ``ids`` maps a name to its row.

**Resume.** Batches are fixed from the whole input first; runs of batches (``--chunk``
utterances) are written as they finish to ``OUT.parts/part-K.npz`` (each atomically, with
the identity of model and input in ``OUT.parts/job.json``). A killed run rerun with the same
command embeds only the chunks without a part; the HDF5 file is written (atomically) from
the parts at the end, and the parts are removed.

Example::

    python -m stage2_student.embed --model exp/xvector-dkd --input data/test --out test.h5
    python -m stage2_student.embed --model xvector.onnx --input wavs.txt --out emb.h5
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import click
import h5py
import numpy as np
from tqdm import tqdm

from speaker.evaluation.conditions import CONDITIONS, Condition, ConditionReader
from speaker.evaluation.embedders import check_rate, load_embedder
from speaker.evaluation.evaluate import (
    BATCH_SIZE,
    MAX_TRIM,
    MIN_SECONDS,
    embed_utterances,
    length_batches,
)
from speaker.features.fbank import num_frames
from speaker.io.audio import AudioReader
from speaker.io.manifest import Manifest, Utterance, audio_num_samples
from speaker.io.paths import load_manifest
from speaker.teachers.base import file_sha256
from speaker.views.augment import NoiseBank
from store.atomic import atomic_path, atomic_write_text
from store.cli import run, setup_logging
from store.errors import UserError

log = logging.getLogger(__name__)
CHUNK = 256  # utterances per part file: a kill loses at most this much work


def read_wav_list(path: Path, sample_rate: int) -> Manifest:
    """A text file of audio paths (relative ones from the list's folder) -> a manifest
    with unknown speakers (``""``); ids are the paths as written."""
    utts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.strip()
        if name:
            audio = Path(name) if Path(name).is_absolute() else path.parent / name
            utts.append(Utterance(name, "", str(audio), audio_num_samples(audio, sample_rate),
                                  sample_rate))
    if not utts:
        raise UserError(f"wav list {path} lists no files")
    return Manifest(utts, source=str(path))


def read_input(path: Path, sample_rate: int) -> Manifest:
    """Any input ``--input`` takes (see the module doc) -> a manifest."""
    if path.is_file() and path.suffix != ".jsonl":
        return read_wav_list(path, sample_rate)
    return load_manifest(path)


def model_identity(spec: str) -> str:
    """sha256 of the model's file (a run folder's model.pt), else the spec itself."""
    path = Path(spec)
    if path.is_dir() and (path / "model.pt").is_file():
        path = path / "model.pt"
    return file_sha256(path) if path.is_file() else spec


@dataclass(frozen=True)
class Embedded:
    """An embeddings file read back: ``ids[i]``'s vector is ``matrix[i]``."""

    ids: list[str]
    speakers: list[str]
    matrix: np.ndarray
    attrs: dict

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.ids, self.matrix, strict=True))

    @property
    def speakers_known(self) -> bool:
        return all(self.speakers)


def read_embeddings(path: Path) -> Embedded:
    """Read a file written by this command (one ``error:`` line for anything else)."""
    try:
        with h5py.File(path, "r") as f:
            return Embedded([s.decode() for s in f["ids"][()]],
                            [s.decode() for s in f["speakers"][()]],
                            f["embeddings"][()].astype(np.float32), dict(f.attrs))
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: not an embeddings file of stage2_student.embed ({exc})") from None


def _write_h5(out: Path, manifest: Manifest, vectors: dict[str, np.ndarray], job: dict) -> None:
    matrix = np.stack([vectors[u.id] for u in manifest]).astype(np.float32)
    text = h5py.string_dtype("utf-8")
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("embeddings", data=matrix)
        f.create_dataset("ids", data=np.array([u.id for u in manifest], dtype=object), dtype=text)
        f.create_dataset("speakers", data=np.array([u.speaker for u in manifest], dtype=object),
                         dtype=text)
        f.attrs.update({k: json.dumps(v) if isinstance(v, dict) else v for k, v in job.items()})
        f.attrs["embed_dim"] = matrix.shape[1]


def chunks_of(manifest: Manifest, sample_rate: int, kind: str, batch_size: int,
              chunk: int) -> list[list[int]]:
    """Manifest indices in runs of whole batches (``embed_utterances``' own batches over the
    whole input), each run at most ``chunk`` utterances (or one batch)."""
    min_samples = int(round(MIN_SECONDS * sample_rate))

    def length(u: Utterance) -> int:
        n = max(u.num_samples, min_samples)
        return num_frames(n, u.sample_rate) if kind == "fbank" else n

    runs: list[list[int]] = []
    for batch in length_batches([length(u) for u in manifest], batch_size, MAX_TRIM):
        if runs and len(runs[-1]) + len(batch) <= chunk:
            runs[-1].extend(batch)
        else:
            runs.append(list(batch))
    return runs


def _parts_dir(out: Path, job: dict) -> Path:
    parts = out.with_name(out.name + ".parts")
    job_file = parts / "job.json"
    if job_file.is_file():
        previous = json.loads(job_file.read_text())
        if previous != job:
            changed = sorted(k for k in job if previous.get(k) != job[k])
            raise UserError(f"{parts} holds a run with another {', '.join(changed)}; remove it "
                            "or write to another --out")
    else:
        parts.mkdir(parents=True, exist_ok=True)
        atomic_write_text(job_file, json.dumps(job, sort_keys=True))
    return parts


def embed_to_file(spec: str, input_path: Path, out: Path, batch_size: int = BATCH_SIZE,
                  condition: str = "full", musan: Path | None = None,
                  chunk: int = CHUNK, sample_rate: int = 16000) -> Path:
    """Embed ``input_path`` with ``spec`` into ``out`` (see the module doc); resumes."""
    manifest = read_input(input_path, sample_rate)
    rate = manifest[0].sample_rate
    cond = Condition.parse(condition)
    bank = NoiseBank.from_dirs(musan, None, sample_rate=rate) if cond.needs_noise and musan else None
    reader = ConditionReader(AudioReader(rate), cond, manifest, bank)
    model = load_embedder(spec)
    check_rate(model, rate, spec)
    job = {"model": spec, "model_sha256": model_identity(spec), "input": str(input_path),
           "input_sha256": manifest.content_hash(), "condition": cond.name,
           "condition_seed": cond.seed, "sample_rate": rate, "batch_size": batch_size,
           "chunk": chunk}
    parts = _parts_dir(out, job)
    shown = cond.manifest(manifest)
    kind = getattr(model, "input_kind", "fbank")
    runs = chunks_of(shown, rate, kind, batch_size, chunk)
    done = {int(p.stem.split("-")[1]) for p in parts.glob("part-*.npz")}
    if done:
        log.info("resuming: %d of %d chunks already embedded in %s", len(done), len(runs), parts)
    bar = tqdm(total=len(shown), desc=f"embedding {input_path.name}", unit="utt",
               initial=sum(len(runs[k]) for k in done if k < len(runs)))
    for k, idx in enumerate(runs):
        if k in done:
            continue
        group = Manifest([shown[i] for i in idx])
        vectors = embed_utterances({"m": model}, group, reader,
                                   batch_size=batch_size).vectors["m"]
        with atomic_path(parts / f"part-{k:06d}.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, ids=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))
        bar.update(len(idx))
    bar.close()
    vectors = {}
    for p in sorted(parts.glob("part-*.npz")):
        with np.load(p) as z:
            vectors.update(zip(z["ids"].tolist(), z["vectors"], strict=True))
    _write_h5(out, manifest, vectors, job)
    shutil.rmtree(parts)
    return out


@click.command(epilog="""\b
Examples:
  python -m stage2_student.embed --model exp/xvector-dkd --input data/test --out test.h5
  python -m stage2_student.embed --model xvector.onnx --input wavs.txt --out emb.h5
  python -m stage2_student.embed --model wespeaker:pretrained/voxceleb_resnet34 \\
      --input vox1/wav --out vox1.h5 --condition noise5 --musan data/musan
  python -m stage2_student.score --embeddings test.h5 --trials data/test/trials.txt --out eval
""")
@click.option("--model", "spec", required=True,
              help="A run folder or model.pt, an .onnx / TorchScript file, module:factory, "
                   "speechbrain:DIR or wespeaker:DIR.")
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path),
              required=True, help="A wav list, Kaldi data dir, VoxCeleb tree or .jsonl manifest.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The HDF5 file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=BATCH_SIZE, show_default=True)
@click.option("--condition", type=str, default="full", show_default=True,
              metavar="|".join(CONDITIONS), help="Embed the audio whole, cut, or noisy.")
@click.option("--musan", type=click.Path(exists=True, path_type=Path), default=None,
              help="MUSAN-style root (noise/) for the noise conditions.")
@click.option("--sample-rate", type=click.IntRange(min=1000), default=16000, show_default=True,
              help="The rate wav-list files are read at (manifests carry their own).")
@click.option("--chunk", type=click.IntRange(min=1), default=CHUNK, show_default=True,
              help="Utterances per resumable part.")
@click.option("-v", "--verbose", is_flag=True)
def cli(spec: str, input_path: Path, out: Path, batch_size: int, condition: str,
        musan: Path | None, sample_rate: int, chunk: int, verbose: bool) -> None:
    """Embed every utterance of --input with --model into one HDF5 file (resumable)."""
    setup_logging(verbose)
    embed_to_file(spec, input_path, out, batch_size, condition, musan, chunk, sample_rate)
    click.echo(f"{out}: {len(read_embeddings(out).ids)} embeddings")


if __name__ == "__main__":
    run(cli)
