"""Distillation losses: KD, DKD, TRKD, dual-group KD and embedding KD, cached and online.

One module per loss family (``kd``, ``trkd``, ``dualgroup``, ``embedding``), each a set of
pure functions plus the thin wrappers it registers in ``registry``; ``sampled`` adds KD's and
DKD's sampled-tail versions (``DistillConfig.tail``), ``tail`` the sampled tail's row
contract and reference sampler; ``buckets`` holds what the logit losses share, ``config`` the run's ``DistillConfig`` and the warm-up wrapper
``distill_loss``, ``flags`` the ``--<loss>-<field>`` click flags. Importing the package
registers every loss.
"""

# isort: off
# The losses register as these modules are imported, in this order: the order of loss_names()
# and of the --loss choices.
from stage2_student.losses.config import DistillBatch, DistillConfig, distill_loss
from stage2_student.losses.kd import (
    KDOptions,
    dkd_loss,
    dkd_terms,
    full_logit_dkd_loss,
    full_logit_kd_loss,
    kd_loss,
)
from stage2_student.losses.sampled import (
    sampled_dkd_loss,
    sampled_from_logits,
    sampled_kd_loss,
)
from stage2_student.losses.embedding import embedding_kd_loss
from stage2_student.losses.trkd import TriageOptions, full_logit_trkd_loss
from stage2_student.losses.dualgroup import (
    DualGroupOptions,
    full_logit_dual_group_loss,
    log_odds_at_entropy,
)
# isort: on
from stage2_student.losses.buckets import student_buckets
from stage2_student.losses.registry import (
    LossOptions,
    loss_names,
    loss_option_classes,
    loss_options,
    registered_loss,
)

__all__ = [
    "DistillBatch", "DistillConfig", "distill_loss", "student_buckets",
    "KDOptions", "kd_loss", "dkd_terms", "dkd_loss", "full_logit_kd_loss", "full_logit_dkd_loss",
    "sampled_kd_loss", "sampled_dkd_loss", "sampled_from_logits", "embedding_kd_loss", "TriageOptions", "full_logit_trkd_loss",
    "DualGroupOptions", "log_odds_at_entropy", "full_logit_dual_group_loss",
    "LossOptions", "loss_names", "loss_options", "loss_option_classes", "registered_loss",
]
