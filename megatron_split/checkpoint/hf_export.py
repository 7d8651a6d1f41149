"""Export a checkpoint as a Hugging Face model: ``msplit export-hf CHECKPOINT OUT``.

The directory it writes (``model.safetensors``, ``config.json``, the tokenizer) loads with
transformers' ``AutoModelForCausalLM`` and ``AutoTokenizer`` and gives the same logits as
the checkpoint (tested). Any saved TP/PP layout works: the weights are first gathered at a
single-device layout. Llama, Qwen2 and GPT-2 shapes have an exact Hugging Face counterpart
(hf_convert.py); anything else is refused with the fields to change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from megatron_split.checkpoint.hf_convert import hf_config, hf_state_dict
from megatron_split.config import ConfigError

CHAT_TEMPLATE = "chat_template.jinja"


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the Hugging Face model directory of ``checkpoint`` to ``out``; returns it."""
    from safetensors.torch import save_file

    from megatron_split.data.datasets import checkpoint_tokenizer
    from megatron_split.inference import load_trained_model

    trained = load_trained_model(checkpoint)
    model = trained.config.model
    weights = {k: v for k, v in trained.gpt.state_dict().items() if isinstance(v, torch.Tensor)}
    tokenizer = checkpoint_tokenizer(trained.meta)
    config = hf_config(model, tokenizer.eod_id)

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(hf_state_dict(weights, model), tmp / "model.safetensors", {"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _write_tokenizer(tokenizer, tmp)
    lineage = {k: trained.meta[k] for k in ("step", "tokens", "lineage")}
    (tmp / "msplit_source.json").write_text(
        json.dumps({"checkpoint": str(trained.path), **lineage}, indent=2) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the directory appears complete or not at all
    return out


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
    args = parser.parse_args(argv)
    try:
        out = export_hf(args.checkpoint, args.out)
    except (ConfigError, FileNotFoundError) as error:
        print(f"msplit export-hf: {error}", file=sys.stderr)
        return 2
    print(f"written: {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
