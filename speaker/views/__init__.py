"""A view: one replayable augmented crop of an utterance, identified by ``(utt, start, seed)``.

:mod:`~speaker.views.view` draws and renders views (speed, crop, augmentation),
:mod:`~speaker.views.augment` is the augmentation, :mod:`~speaker.views.dataset` turns views
into model inputs for training.
"""
