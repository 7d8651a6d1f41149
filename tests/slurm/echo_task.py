"""A task for graph tests: ``main([PATH, TEXT])`` writes TEXT to PATH (its marker); the
TEXT "ctrl-c" stands for a user's Ctrl-C instead."""

from pathlib import Path


def main(argv: list[str]) -> int:
    path, text = argv
    if text == "ctrl-c":
        raise KeyboardInterrupt
    Path(path).write_text(text)
    return 0
