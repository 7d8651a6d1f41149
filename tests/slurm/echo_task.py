"""A task for graph tests: ``main([PATH, TEXT])`` writes TEXT to PATH (its marker); the
TEXT "ctrl-c" stands for a user's Ctrl-C instead, "fail" for a command that exits with 1."""

from pathlib import Path


def main(argv: list[str]) -> int:
    path, text = argv
    if text == "ctrl-c":
        raise KeyboardInterrupt
    if text == "fail":
        return 1
    Path(path).write_text(text)
    return 0
