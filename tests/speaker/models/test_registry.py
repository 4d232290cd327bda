"""The model registry: names, argument checking, input kinds."""

from __future__ import annotations

import pytest
from torch import nn

import speaker.models as models
from speaker.models import architectures, build, register
from store.errors import UserError


def test_builtin_architectures_are_registered():
    assert {"xvector", "resnet34", "campp", "ecapa", "wavlm_ecapa"} <= set(architectures())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError) as err:
        build("resnet9000")
    message = str(err.value)
    assert "resnet9000" in message
    for name in architectures():
        assert name in message


def test_unknown_argument_names_the_accepted_ones():
    with pytest.raises(UserError, match="base_width"):
        build("resnet34", widht=8)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("xvector", {"channels": 32, "embed_dim": 16}),
        ("resnet34", {"base_width": 4, "embed_dim": 16}),
        ("campp", {"growth_rate": 4, "init_channels": 16, "fcm_channels": 4, "embed_dim": 16}),
        ("ecapa", {"channels": 32, "embed_dim": 16}),
    ],
)
def test_fbank_models_are_marked_fbank(name, kwargs):
    model = build(name, **kwargs)
    assert model.input_kind == "fbank"
    assert model.embed_dim == 16


def test_register_adds_a_factory_and_refuses_a_second_one(monkeypatch):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))

    @register("test_identity", input_kind="wave")
    def identity(embed_dim: int = 3) -> nn.Module:
        model = nn.Identity()
        model.embed_dim = embed_dim
        return model

    assert "test_identity" in architectures()
    assert build("test_identity").input_kind == "wave"
    with pytest.raises(ValueError, match="twice"):
        register("test_identity")(lambda: nn.Identity())
    with pytest.raises(ValueError, match="input_kind"):
        register("test_other", input_kind="mfcc")
