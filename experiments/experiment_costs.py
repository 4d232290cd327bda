"""Section 6 of ``make results``: what a teacher forward costs against a student
training step, measured side by side on this machine.

Times, per crop, in alternating rounds (medians; other jobs on the machine slow a round,
not the ratio): the forward pass of the paper-sized teacher (WavLM Large + ECAPA-TDNN
C=512, random weights: the cost does not depend on them), the forward pass of the
experiment's own teacher (``--teacher model.pt``) and one training step (forward, backward,
AdamW) of the student with an AAM head over the teacher's classes. Prints one JSON line.

\b
Example:
    python scripts/experiment_costs.py --teacher exp/teacher/model.pt --arch xvector \\
        --arch-opt channels=128 --arch-opt embed_dim=128 --batch 8 --crop-seconds 1
"""

from __future__ import annotations

import json
import statistics
import time

import click
import torch

from speaker.features.fbank import fbank_batch
from speaker.models import build
from speaker.models.checkpoint import load_checkpoint
from speaker.models.heads import AAMSoftmax
from store.cli import parse_options

SAMPLE_RATE = 16000


def _timed(fn, warm: bool) -> float:
    if warm:
        fn()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@click.command(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--teacher", "teacher_path", required=True, help="The experiment's teacher model.pt.")
@click.option("--arch", default="xvector", show_default=True, help="Student architecture.")
@click.option("--arch-opt", multiple=True, help="Student architecture key=value, repeatable.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Crops per timed call.")
@click.option("--crop-seconds", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--paper-opt", multiple=True,
              help="wavlm_ecapa key=value overriding the paper size (tests use a tiny one).")
def main(teacher_path: str, arch: str, arch_opt: tuple[str, ...], batch: int,
         crop_seconds: float, rounds: int, paper_opt: tuple[str, ...]) -> None:
    """Time a paper-sized teacher forward, this teacher's forward and a student step."""
    torch.manual_seed(0)
    samples = int(crop_seconds * SAMPLE_RATE)
    waves = torch.randn(batch, samples) * 0.1
    feats = fbank_batch(waves, [None] * batch, sample_rate=SAMPLE_RATE)
    paper = build("wavlm_ecapa", **parse_options(paper_opt)).eval()
    loaded = load_checkpoint(teacher_path)
    teacher, num_classes = loaded.model.eval(), loaded.head.num_classes
    student = build(arch, **parse_options(arch_opt)).train()
    head = AAMSoftmax(student.embed_dim, num_classes)
    opt = torch.optim.AdamW([*student.parameters(), *head.parameters()], lr=1e-3)
    labels = torch.randint(num_classes, (batch,))
    teacher_input = waves if getattr(teacher, "input_kind", "fbank") == "wave" else feats

    @torch.no_grad()
    def paper_forward() -> None:
        paper(waves)

    @torch.no_grad()
    def teacher_forward() -> None:
        teacher(teacher_input)

    def student_step() -> None:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(student(feats), labels), labels)
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {"paper_forward": [], "teacher_forward": [],
                                     "student_step": []}
    fns = {"paper_forward": paper_forward, "teacher_forward": teacher_forward,
           "student_step": student_step}
    for r in range(rounds):
        for name, fn in fns.items():
            times[name].append(_timed(fn, warm=r == 0))
    per_crop = {f"{k}_s_per_crop": statistics.median(v) / batch for k, v in times.items()}
    print(json.dumps({
        **per_crop,
        "paper_over_student": per_crop["paper_forward_s_per_crop"]
        / per_crop["student_step_s_per_crop"],
        "teacher_over_student": per_crop["teacher_forward_s_per_crop"]
        / per_crop["student_step_s_per_crop"],
        "paper_params_m": sum(p.numel() for p in paper.parameters()) / 1e6,
        "teacher_params_m": sum(p.numel() for p in teacher.parameters()) / 1e6,
        "student_params_m": sum(p.numel() for p in student.parameters()) / 1e6,
        "settings": {"batch": batch, "crop_seconds": crop_seconds, "rounds": rounds,
                     "threads": torch.get_num_threads(), "arch": arch,
                     "arch_opt": list(arch_opt), "paper_opt": list(paper_opt),
                     "classes": num_classes},
        "rounds_s": times,
    }))
