"""wespeaker checkpoints as teachers: ``--teacher wespeaker:DIR``.

``DIR`` holds wespeaker's experiment files: ``avg_model.pt`` (a state dict: the backbone's
keys plus ``projection.weight``, the margin head) and ``config.yaml`` (``model``,
``model_args``, ``projection_args`` with ``project_type`` and ``scale``,
``margin_update.final_margin``, ``dataset_args`` with ``resample_rate``, ``fbank_args``
and ``speed_perturb``). Optionally ``speakers.txt``, the training speakers in class order
(see :mod:`speaker.teachers.labels`); wespeaker numbers classes by sorted speaker name
(``spk2id``), speeds as further blocks (``speed_index * N + speaker``), so without it class i
is the manifest's sorted speaker i, as for an entkd checkpoint.

Only the architectures entkd has are loaded, renaming wespeaker's keys onto entkd's modules:

- ``ResNet18``/``ResNet34`` (TSTP pooling, one embedding layer) -> ``resnet18``/``resnet34``:
  ``layer{n}.{j}.*`` -> ``layers.{blocks before stage n + j}.*``;
- ``ECAPA_TDNN[_GLOB]_c512``/``_c1024`` (ASTP pooling) -> ``ECAPATDNN``:
  ``layer{n}.se_res2block.*`` -> ``layer{n}.block.*``, and inside the Res2Net part
  ``convs.{i}``/``bns.{i}`` -> ``convs.{i}.conv``/``convs.{i}.bn``.

The poolings get wespeaker's variance floor (1e-7; entkd's own models use 1e-8 / 1e-10),
which matters on dead-ReLU channels: with it the forward equals wespeaker's bit for bit on
random weights (ResNet34, ECAPA_TDNN_GLOB_c512, ECAPA_TDNN_c1024, checked against
wespeaker's source), without it logits differ by up to 3e-3.

Logits are ``scale * cos`` (no margin) from ``projection.weight``; ``arc_margin`` is an AAM
head (``margin_kind="aam"``), ``add_margin`` an AM head (``"am"``); other projections
(sub-centre, SphereFace2, softmax) are refused.

Example::

    teacher = load_wespeaker(Path("exp/voxceleb_resnet34"))
    teacher.arch, teacher.scale, teacher.margin   # ('wespeaker:ResNet34', 32.0, 0.2)
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from speaker.models import build
from speaker.models.ecapa_tdnn import ECAPATDNN
from speaker.models.heads import AAMSoftmax
from speaker.models.pooling import ASTP, TSTP
from speaker.teachers.base import CheckpointTeacher, Teacher
from speaker.teachers.files import files_sha256, load_into, load_state, read_yaml
from speaker.teachers.frontend import kaldi_fbank_frontend
from speaker.teachers.labels import label_map_for, read_label_list
from store.errors import UserError

RESNETS = {"ResNet18": ("resnet18", (2, 2, 2, 2)), "ResNet34": ("resnet34", (3, 4, 6, 3))}
ECAPAS = {"ECAPA_TDNN_c512": (512, False), "ECAPA_TDNN_GLOB_c512": (512, True),
          "ECAPA_TDNN_c1024": (1024, False), "ECAPA_TDNN_GLOB_c1024": (1024, True)}
MARGIN_KINDS = {"arc_margin": "aam", "add_margin": "am"}
POOLING_EPS = 1e-7  # wespeaker's pooling_layers: TSTP and ASTP variance floor
WESPEAKER_SPEEDS = (1.0, 0.9, 1.1)  # wespeaker's processor.speed_perturb, in class-block order
LABEL_FILE = "speakers.txt"


def _resnet(name: str, args: dict, state: dict, where: Path) -> tuple[nn.Module, dict]:
    arch, blocks = RESNETS[name]
    if args.get("pooling_func", "TSTP") != "TSTP" or args.get("two_emb_layer", False):
        raise UserError(f"{where}: {name} with pooling {args.get('pooling_func')!r} and "
                        f"two_emb_layer={args.get('two_emb_layer')} has no entkd counterpart; "
                        "only TSTP pooling with one embedding layer maps onto entkd's ResNet")
    if "conv1.weight" not in state:
        raise UserError(f"{where}: no conv1.weight; not a wespeaker ResNet state dict")
    model = build(arch, base_width=int(state["conv1.weight"].shape[0]),
                  embed_dim=int(args.get("embed_dim", 256)), feat_dim=int(args.get("feat_dim", 80)))
    offsets = [sum(blocks[:i]) for i in range(len(blocks))]

    def rename(key: str) -> str:
        m = re.match(r"layer(\d)\.(\d+)\.(.*)", key)
        return f"layers.{offsets[int(m[1]) - 1] + int(m[2])}.{m[3]}" if m else key

    return model, {rename(k): v for k, v in state.items()}


def _ecapa(name: str, args: dict, state: dict, where: Path) -> tuple[nn.Module, dict]:
    channels, global_context = ECAPAS[name]
    if args.get("pooling_func", "ASTP") != "ASTP":
        raise UserError(f"{where}: {name} with pooling {args.get('pooling_func')!r} has no entkd "
                        "counterpart; only ASTP maps onto entkd's ECAPA")
    # wespeaker fixes the aggregation width at 512 * 3 for every channel count.
    model = ECAPATDNN(channels, feat_dim=int(args.get("feat_dim", 80)),
                      embed_dim=int(args.get("embed_dim", 192)),
                      global_context_att=global_context, mfa_channels=1536,
                      emb_bn=bool(args.get("emb_bn", False)))
    model.input_kind = "fbank"

    def rename(key: str) -> str:
        key = re.sub(r"^(layer\d)\.se_res2block\.", r"\1.block.", key)
        key = re.sub(r"\.block\.1\.convs\.(\d+)\.", r".block.1.convs.\1.conv.", key)
        return re.sub(r"\.block\.1\.bns\.(\d+)\.", r".block.1.convs.\1.bn.", key)

    return model, {rename(k): v for k, v in state.items()}


def load_wespeaker(directory: Path) -> Teacher:
    """Teacher from a wespeaker experiment directory (see the module docstring)."""
    config_path, weights_path = directory / "config.yaml", directory / "avg_model.pt"
    if not config_path.is_file():
        raise UserError(f"wespeaker teacher {directory}: no config.yaml")
    config = read_yaml(config_path)
    name = config.get("model")
    args = dict(config.get("model_args") or {})
    projection = dict(config.get("projection_args") or {})
    dataset = dict(config.get("dataset_args") or {})
    if name not in RESNETS and name not in ECAPAS:
        raise UserError(f"{config_path}: model {name!r} has no entkd counterpart; supported: "
                        f"{', '.join([*RESNETS, *ECAPAS])}")
    project_type = projection.get("project_type")
    if project_type not in MARGIN_KINDS:
        raise UserError(f"{config_path}: projection {project_type!r} is not supported "
                        f"(only {', '.join(MARGIN_KINDS)}: one weight row per class)")
    if "scale" not in projection:
        raise UserError(f"{config_path}: projection_args gives no scale")
    margin = (config.get("margin_update") or {}).get("final_margin", projection.get("margin"))
    if margin is None:
        raise UserError(f"{config_path}: no margin (margin_update.final_margin)")
    if dataset.get("frontend", "fbank") != "fbank":
        raise UserError(f"{config_path}: front-end {dataset['frontend']!r} is not Kaldi fbank; "
                        "entkd computes only fbank for wespeaker teachers")
    frontend = kaldi_fbank_frontend(int(dataset.get("resample_rate", 16000)),
                                    dict(dataset.get("fbank_args") or {}), str(config_path))

    state = load_state(weights_path)
    head_weight = state.pop("projection.weight", None)
    if head_weight is None or head_weight.ndim != 2:
        raise UserError(f"{weights_path}: no projection.weight [classes, embed_dim]; the "
                        "teacher needs its classification head")
    unexpected = sorted(k for k in state if k.startswith("projection."))
    if unexpected:
        raise UserError(f"{weights_path}: projection holds {unexpected[:3]} besides its weight; "
                        "only plain margin heads are supported")
    build_model = _resnet if name in RESNETS else _ecapa
    model, state = build_model(name, args, state, weights_path)
    load_into(model, state, weights_path)
    for module in model.modules():
        if isinstance(module, TSTP | ASTP):
            module.eps = POOLING_EPS
    num_classes, embed_dim = (int(n) for n in head_weight.shape)
    head = AAMSoftmax(embed_dim, num_classes, scale=float(projection["scale"]),
                      margin=float(margin))
    load_into(head, {"weight": head_weight}, weights_path)

    files = [config_path, weights_path]
    speeds = WESPEAKER_SPEEDS if dataset.get("speed_perturb", False) else (1.0,)
    label_map = None
    if (directory / LABEL_FILE).is_file():
        files.append(directory / LABEL_FILE)
        speakers = read_label_list(directory / LABEL_FILE)
        if len(speakers) * len(speeds) != num_classes:
            raise UserError(f"{directory / LABEL_FILE}: {len(speakers)} speakers x {len(speeds)} "
                            f"speeds, but the head has {num_classes} classes")
        label_map = label_map_for(speakers, speeds)
    module = CheckpointTeacher(model, head)
    return Teacher(module=module, input_kind="fbank", scale=head.scale, margin=float(margin),
                   arch=f"wespeaker:{name}", sha256=files_sha256(files), label_map=label_map,
                   margin_kind=MARGIN_KINDS[project_type], epoch=None,
                   epochs=config.get("num_epochs"), frontend=frontend)
