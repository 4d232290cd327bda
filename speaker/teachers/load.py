"""Load a teacher (for the dump, its replay check, or online KD) behind one interface.

A teacher maps a batch of inputs (fbank features ``[B, T, 80]`` or waveforms
``[B, samples]``, as its ``input_kind`` says) to logits over the training classes,
without margin, and optionally to embeddings. Accepted specs:

- a checkpoint written by ``stage1_teacher.train`` (``model.pt``): logits are the
  AAM head's ``scale * cos``; scale and margin come from the checkpoint;
- a TorchScript file (``*.ts``/``*.jit``/any file ``torch.jit.load`` accepts) whose
  forward returns logits or ``(logits, embeddings)``;
- ``package.module:factory``: a zero-argument callable returning such an
  ``nn.Module`` (an external teacher wrapped in a few lines of Python);
- ``speechbrain:DIR`` / ``wespeaker:DIR``: a pretrained model in its own file layout
  (:mod:`speaker.teachers.speechbrain`, :mod:`speaker.teachers.wespeaker`), with its own scale, margin, speaker list and front-end.

A WavLM+ECAPA teacher trained here is an ordinary checkpoint (arch
``wavlm_ecapa``) and is fed waveforms because its model says ``input_kind="wave"``.

A non-checkpoint teacher must declare its logit head as attributes of the module:
``scale`` (s in ``s * cos``), ``margin_kind`` (``"aam"``, ``"am"`` or ``"none"``) and
``margin`` (m; not needed for ``"none"``); it is refused otherwise, since KD at another scale
is KD at another temperature and the margin convention needs the teacher's margin.
``input_kind`` (``"fbank"`` or ``"wave"``) defaults to ``"fbank"``.

Example::

    teacher = load_teacher("exp/teacher/model.pt")
    logits, emb = teacher(feats)
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import torch
from torch import nn

from speaker.models.checkpoint import load_checkpoint
from speaker.teachers.base import (
    CheckpointTeacher,
    Teacher,
    file_sha256,
    from_module,
    recorded_int,
    state_sha256,
)
from speaker.teachers.speechbrain import load_speechbrain
from speaker.teachers.wespeaker import load_wespeaker
from store.errors import UserError, first_line

PREFIXES = ("speechbrain", "wespeaker")


def is_pretrained_spec(spec: str) -> bool:
    """True for ``speechbrain:DIR`` / ``wespeaker:DIR`` (and not for an existing file)."""
    prefix, sep, _ = spec.partition(":")
    return bool(sep) and prefix in PREFIXES and not Path(spec).exists()


def load_pretrained(spec: str) -> Teacher:
    """``speechbrain:DIR`` or ``wespeaker:DIR`` -> a CPU :class:`~speaker.teachers.base.Teacher`."""
    prefix, _, directory = spec.partition(":")
    path = Path(directory)
    if not path.is_dir():
        raise UserError(f"teacher {spec!r}: {path} is not a directory")
    if prefix == "speechbrain":
        return load_speechbrain(path)
    return load_wespeaker(path)



def load_teacher(spec: str, device: str = "cpu") -> Teacher:
    """Resolve ``spec`` (checkpoint, TorchScript file, ``module:factory``,
    ``speechbrain:DIR`` or ``wespeaker:DIR``) to a Teacher."""
    path = Path(spec)
    if is_pretrained_spec(spec):
        teacher = load_pretrained(spec)
    elif path.is_file():
        try:
            loaded = load_checkpoint(path)
            checkpoint_error = None
        except UserError as exc:
            loaded, checkpoint_error = None, exc
        if loaded is not None and loaded.head is None:
            raise UserError(
                f"teacher {path}: the checkpoint has no classification head, so it gives "
                "embeddings but no logits; use the checkpoint written by stage1_teacher.train"
            )
        if loaded is not None:
            teacher = Teacher(
                module=CheckpointTeacher(loaded.model, loaded.head),
                input_kind=getattr(loaded.model, "input_kind", "fbank"),
                scale=float(loaded.head.scale),
                margin=float(loaded.config.get("schedule", {}).get("margin", loaded.head.margin)),
                margin_kind=loaded.head.margin_kind,
                arch=loaded.arch,
                sha256=loaded.sha256,
                label_map=loaded.label_map,
                epoch=recorded_int((loaded.state or {}).get("epoch")),
                epochs=recorded_int(loaded.config.get("epochs")),
            )
        else:
            try:
                with warnings.catch_warnings():
                    # torch 2.x deprecates TorchScript in a 2-line FutureWarning that would
                    # precede every message about the file; loading it is still supported.
                    warnings.simplefilter("ignore", FutureWarning)
                    module = torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:  # torch raises RuntimeError/ValueError variants
                reason = first_line(exc).split(". ")[0]  # miniz's advice runs on for lines
                raise UserError(
                    f"teacher {path}: neither an entkd checkpoint ({checkpoint_error}) nor "
                    f"TorchScript ({reason}); if the file was cut short (a full disk, an "
                    f"interrupted copy), copy it again or pass another --teacher"
                ) from None
            teacher = from_module(module, arch=f"torchscript:{path.name}", sha256=file_sha256(path))
    elif ":" in spec and not path.exists():
        module_name, _, factory_name = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"teacher {spec!r}: cannot import factory ({exc})") from None
        module = factory()
        if not isinstance(module, nn.Module):
            raise UserError(f"teacher {spec!r}: the factory returned a "
                            f"{type(module).__name__}, not a torch.nn.Module")
        teacher = from_module(module, arch=spec, sha256="")
        teacher.sha256 = state_sha256(teacher.module)
    else:
        raise UserError(f"teacher {spec!r}: no such file, and not of the form module:factory")
    teacher.module.eval()
    return teacher.to(device)
