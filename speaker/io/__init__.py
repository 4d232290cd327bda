"""Reading what a user has: audio files and HDF5 packs, manifests (JSON lines, Kaldi, VoxCeleb
trees), label maps, trial lists, and data roots (``--data`` with ``train/``, ``test/``...)."""
