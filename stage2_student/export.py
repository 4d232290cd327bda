"""Export a trained model for use outside entkd: ``python -m stage2_student.export``.

Takes a run folder (``model.pt`` inside) or a checkpoint of any entkd architecture (students
and teachers: x-vector, ResNet, CAM++, ECAPA, WavLM-ECAPA) and writes its embedding network
as ONNX or TorchScript (:mod:`speaker.models.export`: input ``feats`` ``[B, T, 80]`` with a
dynamic number of frames, output ``embs`` ``[B, D]``; WavLM-ECAPA takes ``[B, samples]``),
plus ``FILE.json`` beside it: sample rate, fbank options and mean normalisation, i.e. how to
compute ``feats``. The export is read back with its runtime (ONNX Runtime / ``torch.jit``)
and compared with the torch model on 2-, 4- and 10-s random inputs; the largest absolute
difference is printed and stored in the JSON (``parity``).

Example::

    python -m stage2_student.export exp/xvector-dkd --format onnx --out xvector.onnx
    # xvector.onnx, xvector.onnx.json; "max |onnx - torch| 1.5e-08 over 2s, 4s, 10s"
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from speaker.models.checkpoint import load_checkpoint
from speaker.models.export import (
    FORMATS,
    export_model,
    export_settings,
    load_exported,
    max_abs_difference,
    settings_path,
)
from store.atomic import atomic_write_text
from store.cli import run, setup_logging
from store.errors import UserError

PARITY_SECONDS = (2.0, 4.0, 10.0)


def checkpoint_of(run_path: Path) -> Path:
    """A run folder's ``model.pt``, or the checkpoint file itself."""
    path = run_path / "model.pt" if run_path.is_dir() else run_path
    if not path.is_file():
        where = f"{run_path} has no model.pt" if run_path.is_dir() else f"no such file {path}"
        raise UserError(f"cannot export {run_path}: {where} (give a run folder or model.pt)")
    return path


def export_run(run_path: Path, fmt: str, out: Path, sample_rate: int = 16000,
               check: bool = True) -> dict:
    """Export the model of ``run_path`` to ``out``; -> the settings written beside it,
    with the measured parity (``check``)."""
    source = checkpoint_of(run_path)
    ckpt = load_checkpoint(source)
    kind = getattr(ckpt.model, "input_kind", "fbank")
    settings = export_settings(kind, sample_rate, arch=ckpt.arch, arch_kwargs=ckpt.arch_kwargs,
                               checkpoint_sha256=ckpt.sha256)
    export_model(ckpt.model, out, fmt, settings)
    if not check:
        return json.loads(settings_path(out).read_text())
    parity = max_abs_difference(ckpt.model, load_exported(out), kind, PARITY_SECONDS,
                                sample_rate)
    side = settings_path(out)
    written = json.loads(side.read_text()) | {"parity_max_abs": parity}
    atomic_write_text(side, json.dumps(written, indent=2, sort_keys=True) + "\n")
    return written


@click.command(epilog="""\b
Examples:
  python -m stage2_student.export exp/xvector-dkd --format onnx --out xvector.onnx
  python -m stage2_student.export exp/teacher/model.pt --format torchscript --out teacher.ts
  python -m stage2_student.embed --model xvector.onnx --input data/test --out emb.h5
""")
@click.argument("run_path", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The exported file; its front-end settings go to OUT.json.")
@click.option("--sample-rate", type=click.IntRange(min=1000), default=16000, show_default=True,
              help="The rate the model was trained at (checkpoints do not record it).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the export and the torch model on 2-, 4- and 10-s inputs and record "
                   "their largest difference.")
@click.option("-v", "--verbose", is_flag=True)
def cli(run_path: Path, fmt: str, out: Path, sample_rate: int, check: bool,
        verbose: bool) -> None:
    """Export RUN's (a run folder or model.pt) embedding network as ONNX or TorchScript."""
    setup_logging(verbose)
    written = export_run(run_path, fmt, out, sample_rate, check)
    if not check:
        click.echo(f"{out} ({fmt}, {written['arch']}, embed_dim {written['embed_dim']}) and "
                   f"{settings_path(out).name}; not checked")
        return
    worst = max(written["parity_max_abs"].values())
    click.echo(f"{out} ({fmt}, {written['arch']}, embed_dim {written['embed_dim']}) and "
               f"{settings_path(out).name}; max |{fmt} - torch| {worst:.1e} over "
               f"{', '.join(written['parity_max_abs'])}")


if __name__ == "__main__":
    run(cli)
