"""Teachers behind one interface: :class:`~speaker.teachers.base.Teacher` and
:func:`~speaker.teachers.load.load_teacher` for checkpoints, TorchScript files,
``module:factory``, ``speechbrain:DIR`` and ``wespeaker:DIR`` (their loaders, label lists and
front-ends live beside them)."""
