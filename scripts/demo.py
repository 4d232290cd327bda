"""The whole entkd pipeline on the synthetic corpus, as a user would run it.

toy corpus -> teacher -> logits.zarr (+ store verify, replay verify) -> students
(x-vector, ResNet34, CAM++ at demo widths; CE and DKD each, all from the one cache)
-> one EER/minDCF table and DET plot for teacher and students.

Every step is the README's command line run as a subprocess; a step whose output is
already complete is skipped, and interrupted ones are continued with ``--resume``, so
rerunning ``make demo`` after a kill picks up where it stopped.

Examples::

    python scripts/demo.py --out demo_out
    python scripts/demo.py --out /tmp/demo --quick       # minutes: tiny corpus, 1-2 epochs
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from speaker.atomic import atomic_write_text

log = logging.getLogger("demo")


@dataclass(frozen=True)
class DemoSize:
    speakers: int
    utts_per_speaker: int
    test_speakers: int
    teacher_epochs: int
    views_per_utt: int
    student_epochs: int
    topk: int


SIZES = {
    # ~50 min on 2 CPU cores: teacher ~12 min, dump 1, six students ~36, evaluation ~4
    "full": DemoSize(speakers=200, utts_per_speaker=10, test_speakers=100, teacher_epochs=8,
                     views_per_utt=2, student_epochs=4, topk=32),
    "quick": DemoSize(speakers=16, utts_per_speaker=4, test_speakers=8, teacher_epochs=2,
                      views_per_utt=2, student_epochs=2, topk=8),
}

# (name, architecture, --arch-opt values): the demo widths of the cheap students.
STUDENTS = [
    ("xvector", "xvector", ["channels=128", "embed_dim=128"]),
    ("resnet34", "resnet34", ["base_width=8", "embed_dim=128"]),
    ("campp", "campp", ["growth_rate=8", "init_channels=32", "fcm_channels=8", "embed_dim=128"]),
]
LOSSES = [("ce", []), ("dkd", ["--alpha", "1", "--beta", "2", "--temperature", "1"])]
# A few hundred steps per student: AdamW learns there, SGD at wespeaker's LR does not
# (docs/recipe_sweep.md).
STUDENT_OPTIMIZER = ["--optimizer", "adamw"]


def step(title: str, args: list[str]) -> None:
    """Run ``python -m ...`` like a user would; stop the demo if it fails."""
    log.info("%s: %s", title, " ".join(["python", *args]))
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, *args])
    if result.returncode != 0:
        raise click.ClickException(f"{title} failed (exit {result.returncode}); rerun to resume")
    log.info("%s done in %.0f s", title, time.perf_counter() - t0)


def run_demo(out: Path, size: DemoSize, workers: int) -> str:
    toy, teacher, cache = out / "toy", out / "teacher", out / "logits.zarr"
    data = ["--data", str(toy)]
    if not (toy / "toy.json").exists():
        step("synthetic corpus", [
            "-m", "speaker.toy", "--speakers", str(size.speakers), "--seed", "0",
            "--utts-per-speaker", str(size.utts_per_speaker),
            "--test-speakers", str(size.test_speakers), "--out", str(toy), "--force",
        ])
    if not (teacher / "results.json").exists():
        step("teacher", [
            "-m", "stage1_teacher.train", "--preset", "demo", *data, "--out", str(teacher),
            "--epochs", str(size.teacher_epochs), "--workers", str(workers),
            *(["--resume"] if (teacher / "model.pt").exists() else []),
        ])
    model = str(teacher / "model.pt")
    if not (out / "verify.txt").exists():
        step("dump", [
            "-m", "stage1_teacher.dump", "--teacher", model, *data, "--out", str(cache),
            "--views-per-utt", str(size.views_per_utt), "--topk", str(size.topk),
            "--temperatures", "1,2,4", "--workers", str(workers),
            *(["--resume"] if cache.exists() else []),
        ])
        step("store verify", ["-m", "store", "verify", str(cache)])
        step("replay verify", ["-m", "stage1_teacher.verify", str(cache), "--teacher", model,
                               *data, "--rows", "64"])
        atomic_write_text(out / "verify.txt", "store and replay verified\n")
    models = {"teacher": model}
    for name, arch, opts in STUDENTS:
        for loss, loss_args in LOSSES:
            run_dir = out / "students" / f"{name}-{loss}"
            models[f"{name}-{loss}"] = str(run_dir / "model.pt")
            if (run_dir / "results.json").exists():
                continue
            step(f"student {name}-{loss}", [
                "-m", "stage2_student.train", "--cache", str(cache), *data, "--arch", arch,
                *[a for opt in opts for a in ("--arch-opt", opt)], "--loss", loss, *loss_args,
                *STUDENT_OPTIMIZER, "--epochs", str(size.student_epochs),
                "--workers", str(workers),
                "--out", str(run_dir), *(["--resume"] if (run_dir / "model.pt").exists() else []),
            ])
    step("evaluate", ["-m", "stage2_student.evaluate", *data, "--out", str(out / "results"),
                      *[a for name, path in models.items() for a in ("--model", f"{name}={path}")]])
    return (out / "results" / "results.md").read_text()


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  python scripts/demo.py                       # the full demo into demo_out/ (resumes)
  python scripts/demo.py --quick --out /tmp/demo
""")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--quick", is_flag=True, help="Tiny corpus and 1-2 epochs (a smoke run).")
@click.option("--workers", type=int, default=0, show_default=True,
              help="DataLoader workers per step.")
def main(out: Path, quick: bool, workers: int) -> None:
    """Run the whole demo into OUT and print the results table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s",
                        datefmt="%H:%M:%S")
    out.mkdir(parents=True, exist_ok=True)
    size = SIZES["quick" if quick else "full"]
    atomic_write_text(out / "demo.json", json.dumps(size.__dict__, indent=2) + "\n")
    table = run_demo(out, size, workers)
    click.echo(f"\nResults ({out / 'results'}; DET plot det.png):\n\n{table}")


if __name__ == "__main__":
    main()
