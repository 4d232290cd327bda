"""The loss registry: what the trainer and the CLI read about each loss."""

from __future__ import annotations

import pytest

from stage2_student.losses import DualGroupOptions, KDOptions, TriageOptions, registered_loss
from stage2_student.losses.registry import loss_names, loss_option_classes


def test_every_loss_is_registered_once_in_the_cli_order():
    assert loss_names() == ["ce", "kd", "dkd", "emb", "trkd", "dualgroup"]
    assert loss_option_classes() == {"kd": KDOptions, "trkd": TriageOptions,
                                     "dualgroup": DualGroupOptions}


def test_only_the_logit_losses_use_teacher_buckets():
    uses = {name for name in loss_names() if registered_loss(name).uses_teacher_buckets}
    assert uses == {"kd", "dkd", "trkd", "dualgroup"}


def test_an_unknown_loss_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match=r"unknown loss 'xe'; choose one of \['ce'"):
        registered_loss("xe")
