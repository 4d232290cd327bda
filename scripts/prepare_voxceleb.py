"""Entry point kept for old command lines: ``python -m speaker.io.prepare_voxceleb``."""

from speaker.io.prepare_voxceleb import main

if __name__ == "__main__":
    main()
