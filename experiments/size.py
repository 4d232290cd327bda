"""The size of an experiment: corpus, teacher, cache and students (the demo's and
``make results``' sizes are instances of the one type).

Example::

    >>> s = Size(speakers=16, utts_per_speaker=4, test_speakers=8, test_utts_per_speaker=4,
    ...          session_variation=0.7, teacher_epochs=2, crop_seconds=1.0, views=2, topk=8,
    ...          student_epochs=(("xvector", 2), ("campp", 1)))
    >>> s.epochs("campp")
    1
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Size:
    """Every setting of an experiment (recorded in its report). The fields with defaults
    are the sections of ``make results`` only; the demo leaves them at their defaults."""

    # synthetic corpus (speaker.toy; ignored with make results' --data)
    speakers: int
    utts_per_speaker: int
    test_speakers: int
    test_utts_per_speaker: int
    session_variation: float
    # teachers: recipes.TEACHER_RECIPE (ECAPA C=256); the weak one (section 5) trains fewer
    teacher_epochs: int
    weak_teacher_epochs: int = 0
    # caches: crops of this length (the students' crop), views per utterance, k
    crop_seconds: float
    views: int
    topk: int
    views_grid: tuple[int, ...] = ()  # section 2: cached E against online fresh views
    topk_grid: tuple[int, ...] = ()  # section 2's same-views control (+ C-1)
    # students: recipes.RECIPES, epochs per architecture (at `views` views per utterance)
    student_epochs: tuple[tuple[str, int], ...]
    seeds: int = 1  # training seeds of every compared system
    # section 2: its corpus (this share of each speaker's utterances) and run lengths (multiples
    # of the students' present one)
    online_share: float = 1.0
    length_factors: tuple[int, ...] = (1,)
    # section 3: shares of the speakers with all their utterances, and (the second table)
    # the same shares at `spk_utterances` of all utterances
    spk_shares: tuple[float, ...] = ()
    spk_utterances: float = 1.0
    # section 6: crops per timed call; wavlm_ecapa options (none: the paper's size)
    cost_batch: int = 1
    paper_opts: tuple[str, ...] = ()

    def epochs(self, arch: str) -> int:
        """The students' epochs of ``arch``."""
        return dict(self.student_epochs)[arch]
