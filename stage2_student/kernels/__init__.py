"""Numba kernels for the distillation losses' teacher side, from cached rows.

``buckets``: a cache row -> the teacher's full / binary / non-target bucket probabilities at
T and k'. ``groups``: those buckets regrouped for TRKD (triage) and dual-group KD.
``sampled``: the sampled tail's drawn classes -> their weights and teacher log-probabilities.
``rows``: what the kernels share, the thread dispatch among it.
"""

from stage2_student.kernels.buckets import TeacherBuckets, teacher_probs
from stage2_student.kernels.groups import (
    DualGroupBuckets,
    TriageBuckets,
    dual_group_probs,
    triage_probs,
)
from stage2_student.kernels.sampled import SampledTail, sampled_tail_probs

__all__ = ["TeacherBuckets", "teacher_probs", "TriageBuckets", "triage_probs", "DualGroupBuckets",
           "dual_group_probs", "SampledTail", "sampled_tail_probs"]
