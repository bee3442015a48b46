"""The texts `python -m classic textgen` trains on by name: one ships with the package, one is downloaded.

Kept apart from classic.data (which loads Keras) so the command line can list the names without TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_TEXTS = {"pride-and-prejudice": "pride-and-prejudice.txt.gz"}  # in classic/texts/ (its README names the source)
CORPORA = (*SHIPPED_TEXTS, "nietzsche")  # the shipped texts (the first is textgen's default), then the chapter's, downloaded


def shipped_text(name: str) -> Path:
    """The packaged file of a shipped text (gzipped UTF-8)."""
    return Path(__file__).parent / "texts" / SHIPPED_TEXTS[name]
