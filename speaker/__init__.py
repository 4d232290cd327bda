"""The speaker-verification domain both stages share, one sub-package per concept.

- :mod:`speaker.io`: audio files and packs, manifests, label maps, trial lists, data roots;
- :mod:`speaker.views`: a view (a replayable augmented crop), augmentation, datasets of views;
- :mod:`speaker.features`: Kaldi fbank with seeded dither;
- :mod:`speaker.models`: embedding architectures, heads, the margin formula, checkpoints;
- :mod:`speaker.teachers`: any teacher (checkpoint, TorchScript, factory, speechbrain,
  wespeaker) behind one interface;
- :mod:`speaker.training`: the epoch loop, schedules and the run skeleton both trainers use;
- :mod:`speaker.evaluation`: embeddings, scoring, EER/minDCF/DET and bootstrap intervals;
- :mod:`speaker.toy`: a deterministic synthetic corpus laid out like VoxCeleb + MUSAN + RIRs.

It stands on :mod:`store` (errors, atomic writes, the CLI contract) and never imports a stage.
"""

import store  # noqa: F401, E402  (first: its Ctrl-C handling covers the imports that follow)
