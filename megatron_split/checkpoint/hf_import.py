"""Import a Hugging Face model: ``msplit import-hf HF_MODEL RUN_DIR``.

A model directory (``config.json`` with safetensors or a ``.bin`` state dict, sharded or
not) or a GGUF file (dequantized by transformers) becomes ``RUN_DIR/checkpoints/step_0000000``:
a native checkpoint of the weights (no optimizer state), loadable at any TP/PP layout like
every other, whose meta.json says where it came from and names the model's own tokenizer,
written beside it (``RUN_DIR/tokenizer.json``; tokenize corpora with
``msplit data tokenize --tokenizer hf:RUN_DIR``). Llama (and SmolLM2, TinyLlama), Mistral,
Qwen2 and GPT-2 import; what our model cannot express is refused by name (hf_convert.py).
The checkpoint appears complete or not at all.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch

from megatron_split.checkpoint.hf_convert import hf_architecture, megatron_state_dict, model_config
from megatron_split.config import ConfigError
from megatron_split.model.config import ModelConfig

log = logging.getLogger(__name__)

SAFETENSORS_INDEX, SAFETENSORS = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN = "pytorch_model.bin.index.json", "pytorch_model.bin"


class HFModel:
    """A Hugging Face model's config, weights and tokenizer, read from disk."""

    def __init__(self, source: str | Path):
        path = Path(source).expanduser().resolve()
        if path.is_dir() and not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) != 1:
                found = f"{len(ggufs)} .gguf files" if ggufs else "no config.json"
                raise ConfigError(f"{path}: not a Hugging Face model directory ({found})")
            path = ggufs[0]
        if not path.exists():
            raise ConfigError(f"{path}: no such model directory or GGUF file")
        self.path = path
        self.gguf = path.suffix == ".gguf"
        self.directory = path.parent if self.gguf else path
        self.options = {"gguf_file": path.name} if self.gguf else {}
        self.where = str(path if self.gguf else path / "config.json")

    def model_config(self) -> ModelConfig:
        """Our model config of this model's (fields we cannot express refused by name)."""
        return model_config(self.config(), self.where)

    def config(self):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.directory, local_files_only=True, **self.options)
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"{self.where}: {error}") from None

    def weights(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        """(tensors by Hugging Face name, the files they came from)."""
        if self.gguf:  # transformers dequantizes GGUF tensors into its own model
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(
                self.directory, local_files_only=True, dtype=torch.float32, **self.options
            )
            return dict(model.state_dict()), [self.path.name]
        files = self._weight_files()
        weights: dict[str, torch.Tensor] = {}
        for file in files:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                part = load_file(file)
            else:
                part = torch.load(file, map_location="cpu", weights_only=True)
            weights.update(part)
        return weights, [f.name for f in files]

    def _weight_files(self) -> list[Path]:
        for index in (SAFETENSORS_INDEX, BIN_INDEX):
            if (self.directory / index).is_file():
                names = json.loads((self.directory / index).read_text())["weight_map"].values()
                files = [self.directory / name for name in sorted(set(names))]
                missing = [f.name for f in files if not f.is_file()]
                if missing:
                    raise ConfigError(f"{self.directory / index}: shards missing: {missing}")
                return files
        for single in (SAFETENSORS, BIN):
            if (self.directory / single).is_file():
                return [self.directory / single]
        raise ConfigError(
            f"{self.directory}: no weights ({SAFETENSORS}, {BIN} or their .index.json)"
        )

    def save_tokenizer(self, out: Path) -> dict[str, Any]:
        """Write the model's tokenizer to ``out`` (``tokenizer.json`` and its config, as
        transformers saves it); returns its spec."""
        from transformers import AutoTokenizer

        from data_prep.tokenizers import load_tokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(
                self.directory, local_files_only=True, **self.options
            )
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{self.directory}: no tokenizer transformers can load ({error})"
            ) from None
        if not tokenizer.is_fast or tokenizer.eos_token is None:
            raise ConfigError(f"{self.directory}: the tokenizer needs a tokenizer.json and EOS")
        tokenizer.save_pretrained(out)
        return load_tokenizer({"kind": "hf", "path": str(out), "eod": tokenizer.eos_token}).spec


def import_hf(
    source: str | Path, run_dir: str | Path, dtype: Literal["fp32", "bf16"] = "fp32"
) -> Path:
    """Write the native checkpoint of the Hugging Face model ``source`` under ``run_dir``;
    returns the checkpoint directory."""
    from megatron_split.checkpoint import Checkpointer, TrainState, latest_checkpoint
    from megatron_split.runtime import init_distributed, seed_everything
    from megatron_split.train.config import RunConfig
    from megatron_split.train.identity import run_identity
    from megatron_split.train.loop import build_bare_model

    hf = HFModel(source)
    run_dir = Path(run_dir).resolve()
    root = run_dir / "checkpoints"
    if latest_checkpoint(root) is not None:
        raise ConfigError(f"{root} already holds a checkpoint: import into a new RUN_DIR")
    model = hf.model_config()
    model.params_dtype = dtype
    log.info("reading %s (%s)", hf.path, hf_architecture(model))
    weights, files = hf.weights()
    state_dict = megatron_state_dict(weights, model, str(hf.path))
    del weights

    cfg = RunConfig(run_dir=str(run_dir), model=model)
    cfg.role.arm = "trunk"  # a released model plays the trunk its branches start from
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = hf.save_tokenizer(run_dir)
    runtime = init_distributed()
    seed_everything(cfg.seed)
    _, gpt = build_bare_model(cfg, torch.device("cpu"))
    missing, unexpected = gpt.load_state_dict(state_dict, strict=False)
    missing = [name for name in missing if not name.endswith("_extra_state")]
    if missing or unexpected:  # the mapping and megatron's module names disagree
        raise RuntimeError(f"weights not loaded: missing {missing}, unexpected {unexpected}")
    run_config = asdict(cfg)
    # D counts the tokens trained here: a released model's own pretraining is not known,
    # and its checkpoint is no point of a law fitted to runs of known D (not "annealed").
    identity = {**run_identity(cfg.role.arm, cfg.role.cluster, run_config), "D": 0,
                "D_prime": 0, "annealed": False}  # fmt: skip
    imported = {"imported_from": str(hf.path), "architecture": hf_architecture(model),
                "files": files}  # fmt: skip
    checkpointer = Checkpointer(cfg.checkpoint, root)
    path = checkpointer.save(gpt, None, TrainState(lineage=imported), run_config, identity,
                             tokenizer=tokenizer)  # fmt: skip
    if runtime.is_main:
        log.info("imported %s -> %s", hf.path, path)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="msplit import-hf",
        description="Import a Hugging Face model (a directory or a GGUF file) as a native "
        "checkpoint with its tokenizer: a trunk to branch from.",
    )
    parser.add_argument("model", help="a Hugging Face model directory, or a .gguf file")
    parser.add_argument("run_dir", help="the run directory to write (checkpoints/, tokenizer)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="the parameters' dtype in the checkpoint's model config")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = import_hf(args.model, args.run_dir, args.dtype)
    except ConfigError as error:
        print(f"msplit import-hf: {error}", file=sys.stderr)
        return 2
    print(f"written: {path} (branch from it: init.checkpoint={Path(args.run_dir)}; "
          f"tokenize with --tokenizer hf:{Path(args.run_dir)})")  # fmt: skip
    return 0
