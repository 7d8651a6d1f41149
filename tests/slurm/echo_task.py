"""A task for graph tests: ``main([PATH, TEXT])`` writes TEXT to PATH (its marker)."""

from pathlib import Path


def main(argv: list[str]) -> int:
    path, text = argv
    Path(path).write_text(text)
    return 0
