"""Which character tags a rendered prompt defines and uses (for the prompt and caption tests)."""
from __future__ import annotations

import re

_DEF_RE = re.compile(r"^(Person[1-9][0-9]*):", re.M)
_TAG_USE_RE = re.compile(r"\bPerson[1-9][0-9]*\b")


def tag_report(text: str) -> tuple[list[str], set[str]]:
    """(tags defined under "Characters:", in order; tags used in clip lines). For checks."""
    head, _, _ = text.partition("\nFirst clip:")
    defined = _DEF_RE.findall(head)
    used: set[str] = set()
    for line in text.splitlines():
        if re.match(r"^(?:\w+ clip|Clip \d+):", line):
            used.update(_TAG_USE_RE.findall(line))
    return defined, used
