"""Export a checkpoint as a Hugging Face model: ``msplit export-hf CHECKPOINT OUT``.

The directory it writes (``model.safetensors``, ``config.json``, the tokenizer) loads with
transformers' ``AutoModelForCausalLM`` and ``AutoTokenizer`` and gives the same logits as
the checkpoint (tested). Any saved TP/PP layout works: the weights are first gathered at a
single-device layout. Llama, Qwen2 and GPT-2 shapes have an exact Hugging Face counterpart
(hf_convert.py); anything else is refused with the fields to change.

OUT is written beside itself and renamed into place: it appears complete or not at all. A
previous export in OUT is replaced; any other non-empty OUT is refused unless ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from megatron_split.checkpoint.hf_convert import hf_config, hf_state_dict
from megatron_split.config import ConfigError

CHAT_TEMPLATE = "chat_template.jinja"
SOURCE = "msplit_source.json"  # written into every export: what marks OUT as one


def export_hf(checkpoint: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the Hugging Face model directory of ``checkpoint`` to ``out``; returns it.
    ``out`` may be absent, empty or a previous export; anything else only with ``force``."""
    from megatron_split.inference import load_trained_model

    out = Path(out)
    check_replaceable(out, force)
    trained = load_trained_model(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_export(trained, tmp)
        _replace(out, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_replaceable(out: Path, force: bool) -> None:
    """Refuse to overwrite what ``out`` holds unless it is a previous export (or ``force``)."""
    if force or not out.exists():
        return
    if out.is_dir() and (not any(out.iterdir()) or (out / SOURCE).is_file()):
        return
    held = f"holds files but no {SOURCE} (not an export)" if out.is_dir() else "is a file"
    raise ConfigError(f"{out} {held}: give --force to replace it, or another directory")


def _write_export(trained: Any, directory: Path) -> None:
    """The model, its config and tokenizer, and where they came from, into ``directory``."""
    from safetensors.torch import save_file

    from megatron_split.data.datasets import checkpoint_tokenizer

    model = trained.config.model
    weights = {k: v for k, v in trained.gpt.state_dict().items() if isinstance(v, torch.Tensor)}
    tokenizer = checkpoint_tokenizer(trained.meta)
    config = hf_config(model, tokenizer.eod_id)
    save_file(hf_state_dict(weights, model), directory / "model.safetensors", {"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _write_tokenizer(tokenizer, directory)
    lineage = {k: trained.meta[k] for k in ("step", "tokens", "lineage")}
    (directory / SOURCE).write_text(
        json.dumps({"checkpoint": str(trained.path), **lineage}, indent=2) + "\n"
    )
    for file in directory.iterdir():
        fsync(file)
    fsync(directory)


def _replace(out: Path, tmp: Path) -> None:
    """Rename the finished ``tmp`` to ``out``: OUT holds the old contents or the new, whole."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)  # moved aside, deleted once the new one is in place
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    fsync(out.parent)


def fsync(path: Path) -> None:
    """Flush a file's or a directory's entries to disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _write_tokenizer(tokenizer: Any, directory: Path) -> None:
    eod = tokenizer.spec["eod"]
    if tokenizer.spec["kind"] == "sentencepiece":
        shutil.copy(tokenizer.spec["path"], directory / "tokenizer.model")
        config = {"tokenizer_class": "LlamaTokenizer", "eos_token": eod, "add_bos_token": False}
    else:
        tokenizer.save(directory / "tokenizer.json")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eod}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    # an imported model's chat template goes back out with it (transformers reads the file)
    source = Path(tokenizer.spec.get("path", ""))
    template = (source if source.is_dir() else source.parent) / CHAT_TEMPLATE
    if tokenizer.spec["kind"] == "hf" and template.is_file():
        shutil.copy(template, directory / CHAT_TEMPLATE)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="msplit export-hf", description=__doc__.split("\n\n")[0].split(": ")[0]
    )
    parser.add_argument("checkpoint", help="a step, checkpoints/ or run directory")
    parser.add_argument("out", help="the Hugging Face model directory to write")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace OUT even when it holds other files than a previous export",
    )
    args = parser.parse_args(argv)
    try:
        out = export_hf(args.checkpoint, args.out, args.force)
    except (ConfigError, FileNotFoundError) as error:
        print(f"msplit export-hf: {error}", file=sys.stderr)
        return 2
    print(f"written: {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
