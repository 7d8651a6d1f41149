"""What every benchmark does with its result: record the machine, write the JSON, print."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write ``result`` (plus the machine it ran on) as JSON, and print its flat numbers."""
    result = {**result, "cpu_count": os.cpu_count(), "python": platform.python_version()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)}, indent=2))
