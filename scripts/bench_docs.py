"""Writing a benchmark's table into docs/BENCHMARKS.md between its own markers."""

from __future__ import annotations


def replace_section(path: str, start: str, end: str, section: str, heading: str) -> None:
    """Replace the text from `start` to `end` in the file with `section` (which carries both
    markers); where the markers are missing, append `heading` and the section."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + section
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
