"""``python -m speaker.toy``: a deterministic synthetic corpus laid out like VoxCeleb
(train/, test/ with trials), MUSAN and RIRS_NOISES, for demos and tests."""
