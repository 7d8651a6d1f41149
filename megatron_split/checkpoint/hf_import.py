"""Import a Hugging Face model: ``msplit import-hf HF_MODEL RUN_DIR``.

A model directory (``config.json`` with safetensors or a ``.bin`` state dict, sharded or
not) or a GGUF file (each tensor dequantized as transformers dequantizes it) becomes
``RUN_DIR/checkpoints/step_0000000``: a native checkpoint of the weights (no optimizer
state), loadable at any TP/PP layout like every other, whose meta.json says where it came
from and names the model's own tokenizer, written beside it (``RUN_DIR/tokenizer.json``;
tokenize corpora with ``msplit data tokenize --tokenizer hf:RUN_DIR``). Llama (and
SmolLM2, TinyLlama), Mistral, Qwen2 and GPT-2 import; what our model cannot express is
refused by name (hf_convert.py). The checkpoint appears complete or not at all.

A model larger than one process imports under torchrun, split over ``--tensor`` x
``--pipeline`` ranks: each rank builds its part of the model and reads from the
safetensors (or memory-mapped ``.bin`` or GGUF) files only the tensors of its layers, one
at a time, copying in its tensor-parallel slice, as megatron's sharded state dict places
it; the ranks then save one checkpoint together::

    torchrun --nproc-per-node 4 -m megatron_split.cli import-hf HF_DIR RUN --tensor 2 --pipeline 2
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from megatron_split.checkpoint.hf_convert import (
    Loader,
    hf_architecture,
    megatron_loaders,
    model_config,
)
from megatron_split.config import ConfigError
from megatron_split.model.config import ModelConfig

log = logging.getLogger(__name__)

SAFETENSORS_INDEX, SAFETENSORS = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN = "pytorch_model.bin.index.json", "pytorch_model.bin"
# The files transformers builds a fast tokenizer from: any one of these sets.
TOKENIZER_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"))


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

    def tensors(self) -> HFTensors:
        """The model's tensors, read one by one when asked for."""
        if self.gguf:
            gguf = GGUFTensors(self.path, self.config())
            return HFTensors(dict.fromkeys(gguf.names(), gguf), [self.path.name])
        files = self._weight_files()
        tensors: dict[str, Any] = {}
        for file in files:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                handle = safe_open(file, framework="pt")
                tensors |= {name: handle for name in handle.keys()}  # noqa: SIM118
            else:  # a zip-format state dict maps its storages, read when touched
                tensors |= torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        return HFTensors(tensors, [f.name for f in files])

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

    def tokenizer(self):
        """The model's fast tokenizer, with its EOS, as transformers loads it."""
        from transformers import AutoTokenizer

        self._check_tokenizer_files()
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                self.directory, local_files_only=True, **self.options
            )
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{self.directory}: no tokenizer transformers can load ({error})"
            ) from None
        if not tokenizer.is_fast:
            raise ConfigError(f"{self.directory}: transformers loads a slow "
                              f"{type(tokenizer).__name__} only; importing needs a fast "
                              "tokenizer: add the model's tokenizer.json")  # fmt: skip
        if tokenizer.eos_token is None:
            raise ConfigError(self._no_eos())
        return tokenizer

    def _check_tokenizer_files(self) -> None:
        """Refuse a directory without tokenizer files (a GGUF file holds its own tokenizer)."""
        if self.gguf or any(
            all((self.directory / name).is_file() for name in names) for names in TOKENIZER_FILES
        ):
            return
        looked_for = ", ".join(" + ".join(names) for names in TOKENIZER_FILES)
        raise ConfigError(f"{self.directory}: no tokenizer files (looked for {looked_for}): "
                          "copy the model's tokenizer files beside its config.json")  # fmt: skip

    def _no_eos(self) -> str:
        """What to fix when the tokenizer has no EOS token (documents end with it)."""
        if self.gguf:
            return f"{self.path}: the GGUF file names no EOS token (tokenizer.ggml.eos_token_id)"
        return (f"{self.directory}: the tokenizer has no EOS token: set eos_token in "
                f"{self.directory / 'tokenizer_config.json'}")  # fmt: skip


class GGUFTensors:
    """A GGUF file's tensors under transformers' names, each dequantized (and un-permuted,
    transposed, ... by transformers' processor for the architecture) only when read, from
    the memory-mapped file: a rank reads its layers, not the whole model."""

    def __init__(self, path: Path, config: Any):
        from gguf import GGUFReader
        from transformers import AutoModelForCausalLM
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            TensorProcessor,
            get_gguf_hf_weights_map,
            load_gguf_checkpoint,
            read_field,
        )

        reader = GGUFReader(path)
        self._metadata = load_gguf_checkpoint(str(path))  # the config the processors read
        architecture = read_field(reader, "general.architecture")[0]
        self._processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(
            config=self._metadata["config"]
        )
        with torch.device("meta"):  # the names and shapes of transformers' model, no memory
            skeleton = AutoModelForCausalLM.from_config(config)
        self._shapes = {name: list(t.shape) for name, t in skeleton.state_dict().items()}
        self._to_hf = get_gguf_hf_weights_map(skeleton, self._processor)
        self._sources = {self._to_hf[t.name]: t for t in reader.tensors if t.name in self._to_hf}

    def names(self) -> list[str]:
        return list(self._sources)

    def shape(self, name: str) -> list[int]:
        return self._shapes[name]

    def read(self, name: str) -> torch.Tensor:
        from gguf import dequantize

        source = self._sources[name]
        metadata = {**self._metadata, "tensors": {}}
        weights = dequantize(source.data, source.tensor_type)
        processed = self._processor.process(weights=weights, name=source.name,
                                            tensor_key_mapping=self._to_hf,
                                            parsed_parameters=metadata)  # fmt: skip
        # a processor may file a tensor under its transformers name itself (GPT-2's output)
        tensor = metadata["tensors"].get(name) if processed.name is None else processed.weights
        return torch.from_numpy(np.array(tensor, dtype=np.float32))  # a copy: the map is read-only


class HFTensors:
    """Hugging Face tensors by name, from memory, a memory-mapped state dict, a
    safetensors file's handle or a GGUF file, which read a tensor only when asked for it."""

    def __init__(self, tensors: dict[str, Any], files: list[str]):
        self._tensors = tensors
        self.files = files
        self.read_names: set[str] = set()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(self._source_shape(name)) for name in self._tensors}

    def _source_shape(self, name: str) -> list[int]:
        source = self._tensors[name]
        if isinstance(source, torch.Tensor):
            return list(source.shape)
        if isinstance(source, GGUFTensors):
            return source.shape(name)
        return source.get_slice(name).get_shape()

    def read(self, name: str) -> torch.Tensor:
        self.read_names.add(name)
        source = self._tensors[name]
        if isinstance(source, torch.Tensor):
            return source
        if isinstance(source, GGUFTensors):
            return source.read(name)
        return source.get_tensor(name)


def load_into(gpt, loaders: dict[str, Loader]) -> set[str]:
    """Copy into this rank's part of ``gpt`` its slice of every tensor it holds, placed as
    megatron's sharded state dict places it (global layer, tensor-parallel rows or columns,
    SwiGLU's gate and up halves sharded apart); returns the megatron names it loaded."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories

    sharded = gpt.sharded_state_dict()
    apply_factories(sharded)  # SwiGLU's fc1 as two sharded views, gate and up
    # the local spec saves a layer's norms under Transformer Engine's names (fused into the
    # next linear layer); the loaders have the modules' own names
    renames = gpt.decoder.layers[0].submodules_config.sharded_state_dict_keys_map
    loaded: set[str] = set()
    name, tensor = None, None  # the last tensor read: fc1's halves come one after the other
    for shard in nested_values(sharded):
        if not isinstance(shard, ShardedTensor):
            continue  # _extra_state objects, nothing imported
        where = shard.global_slice()
        key = shard.key
        if shard.prepend_axis_num:  # a layer's tensor: its first axis is the global layer
            module = key.removeprefix("decoder.layers.")
            for local, saved in renames.items():
                if module.startswith(saved):
                    module = local + module.removeprefix(saved)
            key, where = f"decoder.layers.{where[0]}.{module}", where[1:]
        if key not in loaders:
            raise RuntimeError(f"{key}: no Hugging Face tensor maps to this parameter")
        if key != name:
            name, tensor = key, loaders[key]()
        with torch.no_grad():
            shard.data.copy_(tensor[where])  # the data is a view of the parameter
        loaded.add(key)
    return loaded


def import_hf(
    source: str | Path,
    run_dir: str | Path,
    dtype: Literal["fp32", "bf16"] = "fp32",
    tensor: int = 1,
    pipeline: int = 1,
) -> Path:
    """Write the native checkpoint of the Hugging Face model ``source`` under ``run_dir``,
    split over ``tensor`` x ``pipeline`` ranks (the processes of torchrun); returns the
    checkpoint directory."""
    import torch.distributed as dist

    from data_prep.tokenizers import load_tokenizer
    from megatron_split.checkpoint import Checkpointer, TrainState, latest_checkpoint
    from megatron_split.runtime import detect_launch_env, init_distributed, seed_everything
    from megatron_split.train.config import ParallelConfig, RunConfig
    from megatron_split.train.identity import run_identity
    from megatron_split.train.loop import build_bare_model

    hf = HFModel(source)
    run_dir = Path(run_dir).resolve()
    root = run_dir / "checkpoints"
    if latest_checkpoint(root) is not None:
        raise ConfigError(f"{root} already holds a checkpoint: import into a new RUN_DIR")
    model = hf.model_config()
    model.params_dtype = dtype
    if model.padded_vocab_size(tensor) != model.vocab_size:
        raise ConfigError(f"{hf.where}: vocab_size={model.vocab_size} does not split over "
                          f"--tensor {tensor}: choose a tensor size that divides it")  # fmt: skip
    model.validate(tensor, pipeline)
    launch = detect_launch_env()
    world = launch.world_size
    if world != tensor * pipeline:
        raise ConfigError(f"--tensor {tensor} --pipeline {pipeline} needs {tensor * pipeline} "
                          f"processes, this run has {world}: start it with torchrun "
                          f"--nproc-per-node {tensor * pipeline}")  # fmt: skip
    if launch.rank == 0:
        log.info("reading %s (%s)", hf.path, hf_architecture(model))
    tensors = hf.tensors()
    shapes = tensors.shapes()
    loaders = megatron_loaders(shapes, tensors.read, model, str(hf.path))
    tokenizer = hf.tokenizer()

    cfg = RunConfig(run_dir=str(run_dir), model=model,
                    parallel=ParallelConfig(tensor=tensor, pipeline=pipeline))  # fmt: skip
    cfg.role.arm = "trunk"  # a released model plays the trunk its branches start from
    runtime = init_distributed(tensor, pipeline)
    if runtime.is_main:  # tokenizer.json and its config, as transformers saves them
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(run_dir)
    dist.barrier()
    spec = load_tokenizer({"kind": "hf", "path": str(run_dir), "eod": tokenizer.eos_token}).spec
    seed_everything(cfg.seed)
    _, gpt = build_bare_model(cfg, torch.device("cpu"))
    loaded = load_into(gpt, loaders)
    log.info("rank %d: read %d of %d Hugging Face tensors", runtime.env.rank,
             len(tensors.read_names), len(shapes))  # fmt: skip
    everyone: list[set[str]] = [set() for _ in range(world)]
    dist.all_gather_object(everyone, loaded)
    unloaded = sorted(set(loaders) - set().union(*everyone))
    if unloaded:  # the mapping and megatron's parameters disagree
        raise RuntimeError(f"imported tensors no parameter holds: {unloaded}")
    run_config = asdict(cfg)
    # D counts the tokens trained here: a released model's own pretraining is not known,
    # and its checkpoint is no point of a law fitted to runs of known D (not "annealed").
    identity = {**run_identity(cfg.role.arm, cfg.role.cluster, run_config), "D": 0,
                "D_prime": 0, "annealed": False}  # fmt: skip
    imported = {"imported_from": str(hf.path), "architecture": hf_architecture(model),
                "files": tensors.files}  # fmt: skip
    checkpointer = Checkpointer(cfg.checkpoint, root)
    path = checkpointer.save(gpt, None, TrainState(lineage=imported), run_config, identity,
                             tokenizer=spec)  # fmt: skip
    if runtime.is_main:
        log.info("imported %s -> %s", hf.path, path)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    from data_prep.arguments import positive_int

    parser = argparse.ArgumentParser(
        prog="msplit import-hf",
        description="Import a Hugging Face model (a directory or a GGUF file) as a native "
        "checkpoint with its tokenizer: a trunk to branch from.",
    )
    parser.add_argument("model", help="a Hugging Face model directory, or a .gguf file")
    parser.add_argument("run_dir", help="the run directory to write (checkpoints/, tokenizer)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="the parameters' dtype in the checkpoint's model config "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--tensor",
        type=positive_int,
        default=1,
        help="tensor parallel ranks to import over (run under torchrun; default: %(default)s)",
    )
    parser.add_argument(
        "--pipeline",
        type=positive_int,
        default=1,
        help="pipeline stages to import over (run under torchrun; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = import_hf(args.model, args.run_dir, args.dtype, args.tensor, args.pipeline)
    except ConfigError as error:
        print(f"msplit import-hf: {error}", file=sys.stderr)
        return 2
    from megatron_split.runtime import detect_launch_env

    if detect_launch_env().rank == 0:
        print(f"written: {path} (branch from it: init.checkpoint={Path(args.run_dir)}; "
              f"tokenize with --tokenizer hf:{Path(args.run_dir)})")  # fmt: skip
    return 0
