"""Makes lm-evaluation-harness's own ``lm_eval`` executable know the ``megatron_split``
backend (and its alias ``msplit``).

lm-eval 0.4.13 discovers no models outside its source tree (no entry point group or plugin
import). So ``megatron_split_lm_eval.pth``, installed into site-packages with this package,
imports this module at interpreter start-up; it imports nothing heavy itself. When
``lm_eval.models`` (lm-eval's built-in backends) has been imported, the backend is
registered there as a lazy placeholder: ``eval.lm_eval_backend`` and megatron.core load
only if a command names the model.
"""

from __future__ import annotations

import importlib.machinery
import sys
from types import ModuleType

BACKEND = "eval.lm_eval_backend:MSplitLM"
ALIASES = ("megatron_split", "msplit")
# Registered after lm-eval's own backends: lm-eval imports them only into an empty registry.
AFTER = "lm_eval.models"


def register() -> None:
    """Register the backend's names with lm-eval (once; a name already there is kept)."""
    from lm_eval.api.registry import model_registry

    for alias in ALIASES:
        if alias not in model_registry:
            model_registry.register(alias, target=BACKEND)


class _RegisterAfterImport:
    """A meta path finder (duck-typed: importlib.abc alone costs start-up time) that finds
    ``AFTER`` as the other finders would, and registers once its module has run."""

    def find_spec(self, name: str, path, target=None):
        if name != AFTER:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def run_and_register(module: ModuleType) -> None:
            run_module(module)
            register()

        spec.loader.exec_module = run_and_register  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Called by the .pth file at start-up."""
    if AFTER in sys.modules:
        register()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
