"""Writing a Markdown report atomically (:mod:`store.atomic`): a killed run never leaves
half a page behind, and no page carries a path of the machine that wrote it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from store.atomic import atomic_write_text

# an absolute POSIX path of two or more components, starting a word (so not a URL, a ratio
# like rows/s or a relative path)
_ABSOLUTE = re.compile(r"(?<![^\s`'\"(=\[,])/(?:[\w.+-]+/)+[\w.+-]+")


def portable(text: str, base: Path | None = None) -> str:
    """``text`` with every absolute path made machine-independent: relative to ``base``
    (default: the working directory) when it lies inside it, else its last two components
    after an ellipsis (which folder it was, not where it was).

    >>> portable("corpus /tmp/demo/toy, 120 rows/s, https://arxiv.org/abs/2309", Path("/srv"))
    'corpus .../demo/toy, 120 rows/s, https://arxiv.org/abs/2309'
    >>> portable("teacher /srv/exp/teacher/model.pt", Path("/srv"))
    'teacher exp/teacher/model.pt'
    """
    root = Path.cwd() if base is None else base

    def short(match: re.Match) -> str:
        path = Path(match.group(0))
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return "..." + "/" + "/".join(path.parts[-2:]) if len(path.parts) > 2 \
                else path.name
    return _ABSOLUTE.sub(short, text)


def write_atomic(path: Path, lines: list[str], summary: dict | None = None) -> None:
    """Write ``lines`` to ``path`` (a Markdown report) atomically, closed by ``summary`` as
    the JSON line the command prints last, when given; absolute paths are made
    :func:`portable`.

    The summary is an indented code block, not a fenced one, so that it is the file's last
    line and ``json.loads(page.read_text().splitlines()[-1])`` reads it back."""
    if summary is not None:
        lines = [*lines, "## Summary (the script's last line)", "",
                 "    " + json.dumps(summary), ""]
    atomic_write_text(path, portable("\n".join(lines), Path(os.getcwd())))
