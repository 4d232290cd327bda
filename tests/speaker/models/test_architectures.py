"""Every architecture at demo widths (shapes, gradients, short inputs) and at paper widths
(parameter counts within 10% of wespeaker's), plus the `python -m speaker.models` CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from speaker.models import build
from speaker.models.__main__ import cli, count

DEMO = [
    ("xvector", {"channels": 128, "embed_dim": 128}),
    ("resnet34", {"base_width": 8, "embed_dim": 128}),
    ("resnet18", {"base_width": 8, "embed_dim": 64}),
    ("campp", {"growth_rate": 8, "init_channels": 32, "fcm_channels": 8, "embed_dim": 128}),
    ("ecapa", {"channels": 128, "embed_dim": 96}),
    ("ecapa", {"channels": 256, "embed_dim": 192}),
]


@pytest.mark.parametrize(
    ("name", "kwargs"), DEMO, ids=[f"{n}-{i}" for i, (n, _) in enumerate(DEMO)]
)
def test_demo_width_shapes_and_gradients(name, kwargs):
    torch.manual_seed(0)
    model = build(name, **kwargs)
    embed_dim = kwargs["embed_dim"]
    assert model.embed_dim == embed_dim
    # Training mode, the shortest supported crop: gradients reach the first layer.
    out = model(torch.randn(3, 50, 80))
    assert out.shape == (3, embed_dim)
    out.square().sum().backward()
    first = next(p for p in model.parameters() if p.requires_grad)
    assert first.grad is not None and torch.isfinite(first.grad).all()
    # Eval mode, an odd length: deterministic, batch-independent embeddings.
    model.eval()
    feats = torch.randn(2, 137, 80)
    with torch.no_grad():
        both = model(feats)
        one = model(feats[:1])
    assert both.shape == (2, embed_dim) and torch.isfinite(both).all()
    torch.testing.assert_close(one, both[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "kwargs", "wespeaker"),
    [
        ("xvector", {}, 4.61e6),
        ("resnet34", {}, 6.63e6),
        ("campp", {}, 7.18e6),
        ("campp", {"embed_dim": 512}, 7.18e6),
        ("ecapa", {"channels": 512}, 6.19e6),
        ("ecapa", {"channels": 1024}, 14.65e6),
    ],
)
def test_paper_width_parameter_counts(arch, kwargs, wespeaker):
    assert abs(count(arch, kwargs) / wespeaker - 1) < 0.10


def test_paper_width_ecapa_c1024_runs():
    model = build("ecapa", channels=1024).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 60, 80)).shape == (1, 192)


def test_cli_json_last_line_has_every_variant():
    result = CliRunner().invoke(cli, ["--json"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    counts = json.loads(lines[-1])
    assert {"xvector", "resnet34", "campp", "ecapa_c512", "ecapa_c1024", "wavlm_ecapa"} <= set(
        counts
    )
    assert counts["xvector"] == count("xvector", {})
    assert any(line.startswith("ecapa_c1024") for line in lines[:-1])


def test_cli_counts_one_architecture_with_options():
    result = CliRunner().invoke(cli, ["--arch", "resnet34", "--arch-opt", "base_width=8", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1]) == {
        "resnet34": count("resnet34", {"base_width": 8})
    }
