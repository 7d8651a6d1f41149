"""A split experiment as one graph, from the corpus to the law.

An experiment YAML (configs/demo.yaml, configs/repro_small.yaml, ...) names a base run
config, its data, the budgets in tokens and the split points, and becomes this graph:

    corpus -> tokenizer -> shards -> embeddings -> clusters          (or given: clusters:)
      -> trunk (D tokens, stable LR, kept at every split point; with several split
               points a chain of segments trunk/step_<s>, each ending at one)
      -> per split point D_j, after the segment ending there:
                              branches (k runs of D' tokens, one per cluster)
                              standard (the mixture for k D' tokens: equal compute)
                           -> eval (every model on every cluster's held-out set)
      -> results (one table) -> laws/fit -> laws/report (with two sizes or more) -> report

A ``ladder`` (rung name -> model-size overrides, budgets) repeats the trunk and its split
points per rung under ``out/<rung>/``, and ``seeds`` repeats everything under
``out/seed_<s>/``: the points the law L(N, D, D') is fitted to. ``budgets`` instead fixes
each family's total: a budget T split at s trunk tokens leaves each of the k branches
(T - s) / k tokens (s = 0: the branches from scratch; one trunk serves every budget), as
the phonebook experiment (configs/phonebook.yaml) accounts for it. ``sweep`` repeats the
whole experiment, data included, for each value of some of its fields under
``out/<field>_<value>/``, with one table and one report over all; every evaluation tags
its rows with its family's place (sweep values, seed, rung, budget). The graph runs here
(``msplit experiment run``: the default, in dependency order, finished nodes skipped,
interrupted ones resumed) or on Slurm (``msplit experiment submit``: job arrays chained by
``afterok``, requeued on preemption).

Schedules are fixed by the method, so that the arms are compared fairly: the trunk keeps a
constant LR after its warmup (its stable phase), so every split checkpoint is un-annealed;
every run that continues it (each branch and the standard arm) starts from the trunk's LR
and optimizer state and ends with the same decay (the base config's WSD decay: fraction,
shape, final LR). A branch taken mid-cosine would also gain from annealing, which the trunk
checkpoint it is compared with never had. The standard arm trains its k D' tokens as
standard pretraining would, at the trunk's (and the branches') global batch in k times the
branches' steps, with the same decay stretched over them: at every point of equal compute
(its step k t, each branch's step t) its LR is the branches', and only its data differ
(the mixture, not one cluster). ``standard.same_batch: false`` takes the branches' very
steps at k times their batch instead.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from data_prep.plan import PARTITIONS_PER_WORKER
from data_prep.shards import manifest_path, task_marker
from megatron_split.branching import branch_overrides, standard_overrides, trunk_overrides
from megatron_split.config import ConfigError, apply_overrides, from_dict, load_config, to_dict
from megatron_split.data.clusters import ClusterDataConfig
from megatron_split.model import ModelConfig
from megatron_split.train.config import RunConfig
from slurm.graph import Arm, Command, ConsumedCommand, Graph, Node, Training
from slurm.launch import SlurmConfig

# The trunk stays in its stable phase; every continuation carries its LR and optimizer on
# and ends with the base config's decay (see the module docstring: why).
TRUNK_SCHEDULE = ["optim.schedule.kind=constant"]
CONTINUATION_SCHEDULE = [
    "optim.schedule.kind=wsd",
    "optim.schedule.warmup_steps=0",
    "init.load_optimizer=true",
]
# A run with no trunk before it (split fraction 0 of a budget) warms up like the trunk.
SCRATCH_SCHEDULE = ["optim.schedule.kind=wsd"]
# A released model has no optimizer state to carry on: its continuations warm up afresh
# (the base config's warmup), in its architecture.
RELEASED_SCHEDULE = ["optim.schedule.kind=wsd", "init.load_optimizer=false",
                     "init.model_from_parent=true"]  # fmt: skip
# Set by the graph from the experiment's budgets and layout; an override would be lost.
PLANNED_KEYS = ("train.steps", "run_dir", "init.checkpoint", "data.clusters", "data.cluster")


@dataclass
class PhonebookData:
    """Two books of random facts as the corpus (data_prep.phonebook): the two clusters."""

    entries: int = 100  # facts per book
    overlap: float = 0.0  # share of book b's facts that book a holds too
    repeats: int = 8  # documents each fact appears in
    facts_per_doc: int = 8
    seed: int = 0


@dataclass
class DataStage:
    """The data nodes, under ``out/``: corpus -> tokenizer -> shards -> embeddings -> clusters."""

    inputs: list[str] = field(default_factory=list)  # JSONL documents; none: bundled corpus
    max_mb: float = 3.0  # size of the bundled multi-domain corpus (all sources)
    phonebook: PhonebookData | None = None  # or the phonebooks as the corpus
    label_key: str = "source"  # carried into the document table (cluster purity)
    vocab_size: int = 4096  # of the byte-level BPE trained on the documents
    embedder: Literal["tfidf", "minilm"] = "tfidf"
    max_tokens: int | None = None  # of each document embedded (None: the embedder's default)
    k: int = 4  # clusters, one branch each (with by_label: the number of labels)
    by_label: bool = False  # one cluster per label_key value, not k-means
    heldout: str = "90,10,0"  # train, held-out, test shares of each cluster's documents
    workers: int = 2  # tokenization processes
    # > 1: tokenization as a job array of this many tasks (each `workers` processes over its
    # share of the partitions), then one merge job
    tokenize_tasks: int = 1
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    # The embeddings job's own (a GPU for MiniLM, say); None: `slurm`, as every data node
    embed_slurm: SlurmConfig | None = None

    def validate(self) -> None:
        at_least = {"k": 1, "workers": 1, "tokenize_tasks": 1, "vocab_size": 257}  # 256 bytes + EOD
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise ConfigError(f"data.{key} must be >= {low}, got {getattr(self, key)}")
        if not self.inputs and self.phonebook is None and self.max_mb <= 0:
            raise ConfigError(f"data.max_mb must be > 0 (the bundled corpus), got {self.max_mb}")
        if self.phonebook is not None:
            wanted = {"inputs": [], "label_key": "book", "by_label": True, "k": 2}
            wrong = {key: value for key, value in wanted.items() if getattr(self, key) != value}
            if wrong:
                raise ConfigError(
                    "data.phonebook: the two books are the corpus and its two clusters, by "
                    "label: set " + ", ".join(f"data.{key}={value}" for key, value in wrong.items())
                )

    def facts(self, out: Path) -> Path | None:
        """The facts every model's recall is measured on (the phonebook's), if any."""
        return out / "phonebook" / "facts.json" if self.phonebook is not None else None

    def _tokenize_nodes(
        self, inputs: list[str], tokenizer: Path, shards: Path, at: str, after: list[str]
    ) -> list[Node]:
        """The shards node (after the nodes that write its inputs and tokenizer), after a
        job array that writes their partitions when asked."""
        argv = ["tokenize", "--input", *inputs, "--output-prefix", str(shards), "--tokenizer",
                f"hf:{tokenizer}", "--append-eod", "--label-key", self.label_key, "--workers",
                str(self.workers)]  # fmt: skip
        manifest = manifest_path(shards)
        if self.tokenize_tasks == 1:
            return [Node(at + "shards", [Command("data_prep.cli", argv, manifest)], after,
                         self.slurm)]  # fmt: skip
        n = self.tokenize_tasks
        # One plan for every task and the merge: the same number of partitions everywhere.
        argv += ["--partitions", str(PARTITIONS_PER_WORKER * self.workers * n)]
        tasks = [ConsumedCommand("data_prep.cli", [*argv, "--task", str(i), "--tasks", str(n)],
                                 task_marker(shards, i, n), consumed_by=manifest)
                 for i in range(n)]  # fmt: skip
        return [Node(at + "shards/parts", tasks, after, self.slurm),
                Node(at + "shards", [Command("data_prep.cli", argv, manifest)],
                     [at + "shards/parts"], self.slurm)]  # fmt: skip

    def _max_tokens(self) -> list[str]:
        return [] if self.max_tokens is None else ["--max-tokens", str(self.max_tokens)]

    def nodes(self, out: Path, at: str = "", model: Path | None = None) -> list[Node]:
        """The data nodes; with ``model`` (an imported model's run directory, made by the
        node ``at + "model"``) the shards use its tokenizer instead of training one."""
        corpus, tokenizer = out / "corpus", out / "tokenizer.json"
        shards, embeddings, clusters = (
            out / "shards" / "corpus",
            out / "embeddings",
            out / "clusters",
        )

        def node(name: str, argv: list[str], marker: Path, after: list[str],
                 slurm: SlurmConfig | None = None) -> Node:  # fmt: skip
            return Node(at + name, [Command("data_prep.cli", argv, marker)], after,
                        slurm or self.slurm)  # fmt: skip

        if self.phonebook is not None:
            book = self.phonebook
            inputs = [str(out / "phonebook" / f"book_{b}.jsonl") for b in ("a", "b")]
            built = [node("phonebook", ["phonebook", "--output", str(out / "phonebook"),
                                        "--entries", str(book.entries), "--overlap",
                                        str(book.overlap), "--repeats", str(book.repeats),
                                        "--facts-per-doc", str(book.facts_per_doc),
                                        "--seed", str(book.seed)],
                          out / "phonebook" / "facts.json", [])]  # fmt: skip
        elif self.inputs:
            inputs, built = [str(Path(p).resolve()) for p in self.inputs], []
        else:
            inputs = [str(corpus / "corpus-*.jsonl")]
            built = [node("corpus", ["corpus", "build", "--output", str(corpus), "--max-mb",
                                     str(self.max_mb), "--shards", "1"],
                          corpus / "corpus.manifest.json", [])]  # fmt: skip
        if model is None:
            built.append(node("tokenizer", ["train-tokenizer", "--input", *inputs, "--output",
                                            str(tokenizer), "--vocab-size", str(self.vocab_size)],
                              tokenizer, [n.name for n in built]))  # fmt: skip
        # An imported model's tokenizer is not trained on the corpus: the shards wait for
        # the corpus themselves (on Slurm, nothing else would order them after it).
        tokenizer_node = at + ("model" if model else "tokenizer")
        return [
            *built,
            *self._tokenize_nodes(inputs, model or tokenizer, shards, at,
                                  [*(n.name for n in built), tokenizer_node]),  # fmt: skip
            node("embeddings", ["embed", "--shards", str(shards), "--output", str(embeddings),
                                "--embedder", self.embedder, *self._max_tokens(),
                                "--no-progress"],
                 embeddings / "embeddings.manifest.json", [at + "shards"], self.embed_slurm),
            node("clusters", ["cluster", "--embeddings", str(embeddings), "--output",
                              str(clusters), *(["--by-label"] if self.by_label else
                                               ["--k", str(self.k)]),
                              "--split", self.heldout, "--no-progress"],
                 clusters / "clusters.json", [at + "embeddings"]),
        ]  # fmt: skip


@dataclass
class TrunkStage:
    tokens: int | None = None  # D of the whole trunk (default: the base config's steps)
    overrides: list[str] = field(default_factory=list)  # of the base config
    # A released model as the trunk, not trained: a Hugging Face model directory or GGUF
    # file, imported once (node "model"); the corpus is tokenized with its tokenizer and
    # the branches and the standard arm continue it, with its architecture.
    from_hf: str | None = None
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class BranchStage:
    tokens: int = 0  # D': continued-pretraining tokens of each branch
    overrides: list[str] = field(default_factory=list)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class StandardStage:
    """The same trunk checkpoint continued on the trunk's mixture at each split point."""

    enabled: bool = True  # k D' tokens: the family's compute (split vs standard)
    per_model: bool = False  # also D' tokens: what one specialist costs
    # The k D' tokens in k times the branches' steps at their batch (default: as many
    # optimizer steps per token as the trunk, the decay stretched over them), or in the
    # branches' very steps at k times their batch (the same LR at every step).
    same_batch: bool = True
    # At every split point, or only at the first of each budget (with split fraction 0 in a
    # budget sweep: the mixture alone for the whole budget, the no-split baseline).
    every_split: bool = True
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class EvalStage:
    tasks: list[str] = field(default_factory=list)  # [NAME:]KIND=PATH, as `msplit eval --task`
    limit: int | None = None
    top_k: int = 1
    heldout_samples: int = 64
    # Every kept checkpoint of each branch too (set branches' checkpoint.every and keep_last)
    branch_history: bool = False
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def validate(self) -> None:
        """Each task's file read now (its first item), not after the training it follows."""
        from eval.tasks import TaskError, load_task, parse_task_arg

        for i, task in enumerate(self.tasks):
            try:
                name, kind, path = parse_task_arg(task)
                load_task(kind, path, limit=1, name=name)
            except TaskError as error:
                raise ConfigError(f"eval.tasks[{i}]: {error}") from None


@dataclass
class LawsStage:
    """The law fitted to a ladder's points: ``laws fit`` then ``laws report``."""

    fit: bool = True  # with a ladder of two rungs or more
    form: str = "auto"  # a form name, or auto: the best by held-out extrapolation
    holdout: str = "largest-N"
    per_domain: list[str] = field(default_factory=lambda: ["E"])  # clusters differ in entropy
    bootstrap: int = 0
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def validate(self) -> None:
        """Refuse at planning what would otherwise fail after the whole ladder has run."""
        from laws.forms import FORMS
        from laws.select import HOLDOUTS

        if self.form != "auto" and self.form not in FORMS:
            raise ConfigError(f"laws.form={self.form!r}: auto or one of {', '.join(FORMS)}")
        if self.holdout not in HOLDOUTS:
            raise ConfigError(f"laws.holdout={self.holdout!r}: one of {', '.join(HOLDOUTS)}")

    def fit_argv(self, points: Path, fit: Path) -> list[str]:
        per_domain = ["--per-domain", ",".join(self.per_domain)] if self.per_domain else []
        return ["fit", str(points), "--form", self.form, "--holdout", self.holdout,
                "--bootstrap", str(self.bootstrap), "--json", str(fit), *per_domain]  # fmt: skip


@dataclass
class ReportStage:
    # equal_compute: split vs standard per family (slurm.report); phonebook: fact recall
    # against the split step per budget and overlap, and the method's findings (slurm.phonebook)
    kind: Literal["equal_compute", "phonebook"] = "equal_compute"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class Rung:
    """One size of a ladder: overrides of every run (model size, ...) and its budgets."""

    overrides: list[str] = field(default_factory=list)
    trunk_tokens: int | None = None  # default: trunk.tokens
    branch_tokens: int | None = None  # default: branches.tokens


@dataclass
class ExperimentConfig:
    out: str  # every node's outputs, job logs and the report, under here
    config: str  # base run config (YAML) of the trunk, the branches and the standard arm
    data: DataStage | None = None  # the data nodes; or give an existing cluster directory:
    clusters: str | None = None
    overrides: list[str] = field(default_factory=list)  # of every run, before a stage's own
    seeds: list[int] = field(default_factory=list)  # one experiment each; none: the config's
    split_tokens: list[int] = field(default_factory=list)  # trunk tokens to branch at,
    split_fractions: list[float] = field(default_factory=list)  # or fractions of the trunk
    # Total budgets in tokens, each spent as a trunk of f T tokens (f: each split fraction,
    # 0 included: the branches from scratch) and k branches of (1 - f) T / k tokens each;
    # one trunk, kept at every split point, serves every budget. Instead of branches.tokens.
    budgets: list[int] = field(default_factory=list)
    # Dotted keys of this file -> values: one whole experiment per combination, under
    # out/<key>_<value>/ (e.g. {data.phonebook.overlap: [0, 0.25, 0.5]}), one report of all.
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    ladder: dict[str, Rung] = field(default_factory=dict)
    trunk: TrunkStage = field(default_factory=TrunkStage)
    branches: BranchStage = field(default_factory=BranchStage)
    standard: StandardStage = field(default_factory=StandardStage)
    eval: EvalStage = field(default_factory=EvalStage)
    laws: LawsStage = field(default_factory=LawsStage)
    report: ReportStage = field(default_factory=ReportStage)

    def validate(self) -> None:
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError(f"out={self.out}: a file, not a directory to write under")
        if not Path(self.config).is_file():
            raise ConfigError(f"config={self.config}: no such file (a relative path is read "
                              f"from the working directory, {Path.cwd()})")  # fmt: skip
        if (self.data is None) == (self.clusters is None):
            raise ConfigError("give data (the graph makes the clusters) or clusters (a directory)")
        if self.data is not None:
            self.data.validate()
        if self.split_tokens and self.split_fractions:
            raise ConfigError("give split_tokens or split_fractions, not both")
        if self.trunk.from_hf is not None:
            self._validate_released()
        if self.budgets:
            self._validate_budgets()
        elif any(not 0 < f <= 1 for f in self.split_fractions):
            raise ConfigError(f"split_fractions {self.split_fractions} must lie in (0, 1]")
        lists = {"overrides": self.overrides, "trunk.overrides": self.trunk.overrides,
                 "branches.overrides": self.branches.overrides}  # fmt: skip
        lists |= {f"ladder.{name}.overrides": rung.overrides for name, rung in self.ladder.items()}
        for where, overrides in lists.items():
            for item in overrides:
                if item.partition("=")[0] in PLANNED_KEYS:
                    raise ConfigError(
                        f"{where}: {item} is set by the experiment (budgets go in "
                        "trunk.tokens and branches.tokens, in tokens)"
                    )
        for key, values in self.sweep.items():
            if key.split(".")[0] in ("out", "sweep") or not isinstance(values, list) or not values:
                raise ConfigError(f"sweep.{key}: give a field of this file and a list of values")
        if self.report.kind == "phonebook" and (self.data is None or self.data.phonebook is None):
            raise ConfigError("report.kind=phonebook: the data must be data.phonebook")
        if len(self.ladder) > 1 and self.laws.fit:
            self.laws.validate()
        self.eval.validate()
        for where, slurm in self.slurm_configs().items():
            slurm.validate(where)

    def slurm_configs(self) -> dict[str, SlurmConfig]:
        """Every stage's job settings, by the field that holds them."""
        stages = ("trunk", "branches", "standard", "eval", "laws", "report")
        found = {f"{name}.slurm": getattr(self, name).slurm for name in stages}
        if self.data is not None:
            found["data.slurm"] = self.data.slurm
            if self.data.embed_slurm is not None:
                found["data.embed_slurm"] = self.data.embed_slurm
        return found

    def _validate_released(self) -> None:
        """A released trunk is one split point of unknown D: nothing to train or sweep."""
        given = {"trunk.tokens": self.trunk.tokens, "split_tokens": self.split_tokens,
                 "split_fractions": self.split_fractions, "budgets": self.budgets,
                 "ladder": self.ladder}  # fmt: skip
        for where, value in given.items():
            if value:
                raise ConfigError(f"{where} with trunk.from_hf: the released model is the only "
                                  "split point (branches.tokens sets D')")  # fmt: skip
        if not self.branches.tokens:
            raise ConfigError("trunk.from_hf: set branches.tokens (D' of each branch)")

    def _validate_budgets(self) -> None:
        if not self.split_fractions or self.split_tokens:
            raise ConfigError("budgets: give the split points as split_fractions of each budget")
        if any(not 0 <= f < 1 for f in self.split_fractions):
            raise ConfigError(
                f"split_fractions {self.split_fractions} of a budget must lie in [0, 1): at 1 "
                "no tokens are left for the branches (the no-split baseline is the standard arm)"
            )
        given = {"branches.tokens": self.branches.tokens, "trunk.tokens": self.trunk.tokens}
        given |= {f"ladder.{n}.trunk_tokens": r.trunk_tokens for n, r in self.ladder.items()}
        given |= {f"ladder.{n}.branch_tokens": r.branch_tokens for n, r in self.ladder.items()}
        for where, value in given.items():
            if value:
                raise ConfigError(
                    f"{where}={value} with budgets: each budget sets its trunk and branch tokens"
                )


@dataclass
class _Family:
    """One split point of one budget: the trunk's first ``split`` steps (0: none), then the
    branches of ``branch_tokens`` each (and the standard arm)."""

    name: str  # "split_100", or in a budget sweep "budget_512000/split_62"
    split: int  # trunk steps
    branch_tokens: int  # D' of each branch
    where: str  # the field that sets D', for errors
    first: bool  # the first split point of its budget
    tags: dict[str, Any]


def derive_seed(seed: int, split_tokens: int, run: str) -> int:
    """A run's own seed, from the experiment's seed, its split point and its name."""
    digest = hashlib.sha256(f"{seed}/{split_tokens}/{run}".encode()).hexdigest()
    return int(digest[:8], 16) % 2**31


def steps_of(tokens: int, tokens_per_step: int, where: str) -> int:
    """The steps of a budget; a budget that is not a whole number of steps is refused."""
    if tokens <= 0 or tokens % tokens_per_step:
        below = tokens // tokens_per_step * tokens_per_step
        nearest = (f"{below} or {below + tokens_per_step}" if below > 0
                   else f"{tokens_per_step} (one step) or a multiple of it")  # fmt: skip
        raise ConfigError(
            f"{where}={tokens} is not a positive multiple of the {tokens_per_step} tokens of a "
            f"step (train.global_batch x model.seq_length): use {nearest}"
        )
    return tokens // tokens_per_step


def checkpoint_bytes(model: ModelConfig) -> int:
    """About the size of one checkpoint: the weights and Adam's two moments (fp32), plus
    bf16 weights' fp32 main copy."""
    per_param = 2 + 4 + 8 if model.params_dtype == "bf16" else 4 + 8
    return model.parameter_counts()["total"] * per_param


# The stage whose slurm: a run of each arm is submitted with
STAGE_OF_ARM = {"trunk": "trunk", "specialist": "branches", "standard": "standard",
                "standard_per_model": "standard"}  # fmt: skip


@dataclass
class _Context:
    """What every family of one experiment (of a sweep) shares."""

    cfg: ExperimentConfig
    out: Path
    config: str  # the base run config, absolute
    clusters: Path
    k: int
    vocab_size: int
    facts: Path | None  # recalled by every model (the phonebook's)
    tags: dict[str, Any]  # the experiment's place in its sweep
    model: Path | None = None  # the imported released trunk's run directory
    released: ModelConfig | None = None  # its architecture, which its continuations take

    def training(self, overrides: list[str], arm: Arm, run_dir: Path, start: int = 0) -> Training:
        """A planned training run, or its segment from step ``start`` to
        ``train.stop_at_step``; its config is checked now, all but its inputs on disk."""
        stage = STAGE_OF_ARM[arm]
        slurm = getattr(self.cfg, stage).slurm
        try:
            # checked at the layout its job gives it: nodes x tasks_per_node processes
            run = load_config(RunConfig, self.config, overrides, inputs=False,
                              world_size=slurm.tasks)  # fmt: skip
            _check_devices(run, slurm, stage)
        except ConfigError as error:
            planned = " (the experiment sets train.steps from its tokens)" * (
                "train.steps" in str(error)
            )
            layout = any(word in str(error) for word in ("world size", "data-parallel"))
            processes = f" (the {slurm.tasks} processes of {stage}.slurm: nodes x tasks_per_node)"
            raise ConfigError(
                f"the {arm} run {run_dir}: {error}{planned}{processes * layout}"
            ) from None
        model = (
            run.model if run.model.vocab_size else replace(run.model, vocab_size=self.vocab_size)
        )
        if self.released is not None:
            model = model.with_architecture(asdict(self.released))
        end = run.train.end_step
        tokens = (end - start) * run.train.global_batch * run.model.seq_length
        kept = [s for s in run.checkpoint.kept_steps(run.train.steps) if start < s <= end]
        return Training(
            argv=[self.config, *overrides], marker=run_dir, steps=end, arm=arm,
            tokens=tokens, flops=tokens * model.flops_per_token(run.parallel.tensor),
            checkpoints=len(kept), checkpoint_bytes=checkpoint_bytes(model),
        )  # fmt: skip


def _check_devices(run: RunConfig, slurm: SlurmConfig, stage: str) -> None:
    """What a run needs of its job's devices: FP8 needs GPUs (Transformer Engine's)."""
    if slurm.gpus_per_node or slurm.cluster == "local":
        return
    if run.model.fp8 is not None:
        raise ConfigError(f"model.fp8 needs GPUs: set {stage}.slurm.gpus_per_node")


def build_graph(cfg: ExperimentConfig) -> Graph:
    """The experiment's nodes, each after the nodes it needs."""
    out = Path(cfg.out).resolve()  # absolute: a job may start elsewhere, on another node
    nodes: list[Node] = []
    evals: list[Node] = []
    ks = set()
    for prefix, tags, experiment in _sweep(cfg):
        ctx, data_nodes = _context(experiment, out, prefix, tags)
        nodes += data_nodes
        ks.add(ctx.k)
        data_after = [data_nodes[-1].name] if data_nodes else []
        seeds = experiment.seeds or [None]
        rungs = experiment.ladder or {"": Rung()}
        for seed in seeds:
            for name, rung in rungs.items():
                parts = [prefix] if prefix else []
                parts += ([f"seed_{seed}"] if len(seeds) > 1 else []) + ([name] if name else [])
                rung_tags = tags | ({"rung": name} if name else {})
                family = _plan_trunk_and_splits(
                    ctx, "/".join(parts), name, rung, seed, data_after, rung_tags
                )
                nodes += family
                evals += [node for node in family if node.name.endswith("/eval")]
    if len(ks) > 1:
        raise ConfigError(f"sweep: its experiments have different numbers of clusters {ks}")
    return Graph(nodes + _summary_nodes(cfg, out, evals, ks.pop(), len(cfg.ladder) > 1), out)


def _sweep(cfg: ExperimentConfig) -> list[tuple[str, dict[str, Any], ExperimentConfig]]:
    """(directory, tags, experiment) of each combination of the sweep's values."""
    if not cfg.sweep:
        return [("", {}, cfg)]
    base = to_dict(replace(cfg, sweep={}))
    combinations = []
    for values in itertools.product(*cfg.sweep.values()):
        chosen = dict(zip(cfg.sweep, values, strict=True))
        overrides = [f"{key}={json.dumps(value)}" for key, value in chosen.items()]
        data = apply_overrides(json.loads(json.dumps(base)), overrides)
        experiment = from_dict(ExperimentConfig, data, "sweep")
        experiment.validate()
        tags = {key.rsplit(".", 1)[-1]: value for key, value in chosen.items()}
        combinations.append(("_".join(f"{key}_{value}" for key, value in tags.items()), tags,
                             experiment))  # fmt: skip
    return combinations


def _context(
    cfg: ExperimentConfig, out: Path, prefix: str, tags: dict[str, Any]
) -> tuple[_Context, list[Node]]:
    """The shared parts of one experiment of a sweep, and its data nodes."""
    here, at = out / prefix, f"{prefix}/" if prefix else ""
    model, nodes, released = None, [], None
    if cfg.trunk.from_hf is not None:
        model, released = here / "model", _released_model(cfg.trunk.from_hf)
        source = str(Path(cfg.trunk.from_hf).resolve())
        nodes = [Node(at + "model", [Command("megatron_split.checkpoint.hf_import",
                                             [source, str(model)],
                                             model / "checkpoints" / "latest")],
                      [], cfg.trunk.slurm)]  # fmt: skip
    if cfg.data is not None:
        nodes += cfg.data.nodes(here, at, model)
        clusters, k, vocab = here / "clusters", cfg.data.k, cfg.data.vocab_size
        facts = cfg.data.facts(here)
    else:
        facts = None
        clusters = Path(cfg.clusters).resolve()
        if not clusters.is_dir():
            raise ConfigError(f"clusters={cfg.clusters}: no such directory (`msplit data "
                              "cluster` writes one; or give data: to make it)")  # fmt: skip
        manifest = ClusterDataConfig(str(clusters)).build().manifest
        k, vocab = int(manifest["k"]), int(manifest["vocab_size"])
    if released is not None:
        vocab = int(released.vocab_size)
    config = str(Path(cfg.config).resolve())
    return _Context(cfg, out, config, clusters, k, vocab, facts, tags, model, released), nodes


def _released_model(source: str) -> ModelConfig:
    """The architecture of the released model ``source``, read from its config now."""
    from megatron_split.checkpoint.hf_import import HFModel

    return HFModel(source).model_config()


def _summary_nodes(
    cfg: ExperimentConfig, out: Path, evals: list[Node], k: int, several_sizes: bool
) -> list[Node]:
    """results (one table) -> laws/fit -> laws/report (with several sizes) -> report."""
    results, laws = out / "results", out / "laws"
    points, fit = results / "law_points.csv", laws / "fit.json"
    table = ["table", "--root", str(out), "--out", str(results)]
    table += [arg for node in evals for arg in ("--eval", str(node.tasks[0].marker.parent))]
    nodes = [Node("results", [Command("slurm.report", table, points)],
                  [node.name for node in evals], cfg.report.slurm)]  # fmt: skip
    if cfg.laws.fit and several_sizes:
        law_report = ["report", "--fit", str(fit), "--data", str(points),
                      "--out", str(laws / "report"), "--k", str(k)]  # fmt: skip
        nodes += [
            Node("laws/fit", [Command("laws.cli", cfg.laws.fit_argv(points, fit), fit)],
                 ["results"], cfg.laws.slurm),
            Node("laws/report", [Command("laws.cli", law_report, laws / "report" / "report.md")],
                 ["laws/fit"], cfg.laws.slurm),
        ]  # fmt: skip
    write = ["write", "--root", str(out), "--k", str(k), "--kind", cfg.report.kind]
    report = Command("slurm.report", write, out / "report.md")
    return [*nodes, Node("report", [report], [nodes[-1].name], cfg.report.slurm)]


def _plan_trunk_and_splits(
    ctx: _Context,
    prefix: str,
    rung_name: str,
    rung: Rung,
    seed: int | None,
    after: list[str],
    tags: dict[str, Any],
) -> list[Node]:
    """One trunk, and per split point (of each budget) its branches, standard arm and
    evaluation."""
    cfg, out = ctx.cfg, ctx.out / prefix
    at = f"{prefix}/" if prefix else ""
    trunk_user = [*cfg.overrides, *cfg.trunk.overrides, *rung.overrides]
    base = load_config(RunConfig, ctx.config, trunk_user, inputs=False)
    seed = base.seed if seed is None else seed
    tokens_per_step = base.train.global_batch * base.model.seq_length
    if ctx.model is not None:  # the released model is the one split point
        trunk_steps, split_steps = 0, []
        families = [_Family("released", 0, cfg.branches.tokens, "branches.tokens", True, {})]
    elif cfg.budgets:  # the trunk goes as far as the last split point needs
        families = _budget_families(cfg, tokens_per_step, ctx.k)
        split_steps = sorted({family.split for family in families} - {0})
        trunk_steps = split_steps[-1] if split_steps else 0
    else:
        trunk_tokens = rung.trunk_tokens or cfg.trunk.tokens or base.train.steps * tokens_per_step
        where = f"ladder.{rung_name}.trunk_tokens" if rung.trunk_tokens else "trunk.tokens"
        trunk_steps = steps_of(trunk_tokens, tokens_per_step, where)
        split_steps = _split_steps(cfg, trunk_tokens, tokens_per_step)
        where = f"ladder.{rung_name}.branch_tokens" if rung.branch_tokens else "branches.tokens"
        d_prime = rung.branch_tokens or cfg.branches.tokens
        families = [_Family(f"split_{step}", step, d_prime, where, i == 0, {})
                    for i, step in enumerate(split_steps)]  # fmt: skip
    trunk_dir = out / "trunk"
    nodes = _trunk_segments(ctx, at, trunk_dir, trunk_steps, split_steps, [
        *TRUNK_SCHEDULE, *trunk_user, f"seed={seed}", f"data.seed={seed}",
        f"train.steps={trunk_steps}", f"checkpoint.keep_steps={json.dumps(split_steps)}",
        *trunk_overrides(ctx.clusters, trunk_dir)], after)  # fmt: skip
    segment_at = {int(node.trainings[0].steps): node.name for node in nodes}
    for family in families:
        parent = trunk_dir / "checkpoints" / f"step_{family.split:07d}" if family.split else None
        parent = ctx.model or parent
        family_dir, name = out / family.name, f"{at}{family.name}"
        runs: list[tuple[str, Arm]] = [(f"cluster_{c}", "specialist") for c in range(ctx.k)]
        if cfg.standard.every_split or family.first:
            runs += [("standard", "standard")] if cfg.standard.enabled else []
            runs += [("standard_per_model", "standard_per_model")] if cfg.standard.per_model else []
        split_tokens = family.split * tokens_per_step
        planned = [_continuation(ctx, family, split_tokens, rung, seed, parent,
                                 family_dir / run, arm) for run, arm in runs]  # fmt: skip
        branches, standard = planned[: ctx.k], planned[ctx.k :]
        needs = [segment_at[family.split]] if family.split else after
        nodes.append(Node(f"{name}/branches", branches, needs, cfg.branches.slurm))
        eval_after = [f"{name}/branches"]
        if standard:
            nodes.append(Node(f"{name}/standard", standard, needs, cfg.standard.slurm))
            eval_after.append(f"{name}/standard")
        family_tags = {**tags, "seed": seed, **family.tags}
        evaluation = Command("eval.cli", _eval_argv(ctx, parent, branches, standard,
                                                    family_dir / "eval", family_tags),
                             family_dir / "eval" / "results.jsonl")  # fmt: skip
        nodes.append(Node(f"{name}/eval", [evaluation], eval_after, cfg.eval.slurm))
    return nodes


def _trunk_segments(
    ctx: _Context,
    at: str,
    trunk_dir: Path,
    trunk_steps: int,
    split_steps: list[int],
    overrides: list[str],
    after: list[str],
) -> list[Node]:
    """The trunk as a chain of segments, one job each, ending at its split points and at its
    last step: the branches of a split point need only the segment that ends there, so they
    train while the trunk goes on. One segment (``trunk``) when the trunk ends at its only
    split point."""
    if not trunk_steps:
        return []
    ends = sorted({*split_steps, trunk_steps})
    if len(ends) == 1:
        return [Node(f"{at}trunk", [ctx.training(overrides, "trunk", trunk_dir)], after,
                     ctx.cfg.trunk.slurm)]  # fmt: skip
    nodes, start = [], 0
    for end in ends:
        segment = ctx.training([*overrides, f"train.stop_at_step={end}"], "trunk", trunk_dir,
                               start)  # fmt: skip
        nodes.append(Node(f"{at}trunk/step_{end}", [segment], after, ctx.cfg.trunk.slurm))
        after, start = [nodes[-1].name], end
    return nodes


def _budget_families(cfg: ExperimentConfig, tokens_per_step: int, k: int) -> list[_Family]:
    """Each budget at each split fraction: the trunk to f T, its branches sharing the rest."""
    families = []
    first = min(cfg.split_fractions)
    for j, budget in enumerate(cfg.budgets):
        for i, fraction in sorted(enumerate(cfg.split_fractions), key=lambda item: item[1]):
            where = f"split_fractions[{i}] x budgets[{j}]"
            tokens = fraction * budget
            whole = round(tokens)
            if abs(tokens - whole) > 1e-9 * budget:
                raise ConfigError(f"{where}: {tokens:g} tokens is not a whole number of tokens")
            step = steps_of(whole, tokens_per_step, where) if whole else 0
            rest = budget - step * tokens_per_step
            if rest % k:
                raise ConfigError(f"budgets[{j}]: the {rest} tokens after {where} do not divide "
                                  f"into {k} branches")  # fmt: skip
            name, branch_where = f"budget_{budget}/split_{step}", f"(budgets[{j}] - split) / k"
            families.append(_Family(name, step, rest // k, f"{branch_where} at {where}",
                                    fraction == first, {"budget": budget}))  # fmt: skip
    return families


def _continuation(
    ctx: _Context,
    family: _Family,
    split_tokens: int,
    rung: Rung,
    seed: int,
    parent: Path | None,
    run_dir: Path,
    arm: Arm,
) -> Training:
    """One run of D' tokens after the trunk checkpoint ``parent`` (none: from scratch): the
    specialist of cluster c (``run_dir`` cluster_c) or a standard arm."""
    cfg = ctx.cfg
    scope = family.name.rpartition("/")[0]  # the budget: its runs' seeds differ from others'
    own = derive_seed(seed, split_tokens, f"{scope}/{run_dir.name}" if scope else run_dir.name)
    if ctx.model is not None:
        schedule = RELEASED_SCHEDULE
    else:
        schedule = CONTINUATION_SCHEDULE if parent is not None else SCRATCH_SCHEDULE
    overrides = [*schedule, *cfg.overrides, *cfg.branches.overrides,
                 *rung.overrides, f"seed={own}", f"data.seed={own}"]  # fmt: skip
    probe = load_config(RunConfig, ctx.config, overrides, inputs=False)
    tokens_per_step = probe.train.global_batch * probe.model.seq_length
    steps = steps_of(family.branch_tokens, tokens_per_step, family.where)
    if arm == "specialist":
        cluster = int(run_dir.name.removeprefix("cluster_"))
        made = branch_overrides(ctx.clusters, cluster, parent, run_dir, steps)
    else:  # at equal compute: k times the tokens, in bigger batches or in more steps
        k = ctx.k if arm == "standard" else 1
        batch = probe.train.global_batch
        if cfg.standard.same_batch:
            steps *= k
        else:
            batch *= k
        made = standard_overrides(ctx.clusters, parent, run_dir, steps, batch, arm)
    return ctx.training([*overrides, *made], arm, run_dir)


def _split_steps(cfg: ExperimentConfig, trunk_tokens: int, tokens_per_step: int) -> list[int]:
    """The trunk steps to branch at: given in tokens, as fractions of the trunk, or its last."""
    if cfg.split_fractions:
        points = [(f"split_fractions[{i}]", f * trunk_tokens)
                  for i, f in enumerate(cfg.split_fractions)]  # fmt: skip
    else:
        points = [(f"split_tokens[{i}]", t) for i, t in enumerate(cfg.split_tokens)]
    points = points or [("trunk.tokens", trunk_tokens)]
    steps = set()
    for where, tokens in points:
        whole = round(tokens)  # a fraction's product, up to rounding error
        if abs(tokens - whole) > 1e-9 * trunk_tokens or not 0 < whole <= trunk_tokens:
            raise ConfigError(
                f"{where}: {tokens:g} tokens is not a trunk step in 1..{trunk_tokens}"
            )
        steps.add(steps_of(whole, tokens_per_step, where))
    return sorted(steps)


def _eval_argv(
    ctx: _Context,
    parent: Path | None,
    branches: list[Training],
    standard: list[Training],
    out: Path,
    tags: dict[str, Any],
) -> list[str]:
    stage = ctx.cfg.eval
    argv = ["--clusters", str(ctx.clusters), *(["--trunk", str(parent)] if parent else []),
            "--branches", *(str(t.marker) for t in branches), "--out", str(out),
            "--heldout-samples", str(stage.heldout_samples), "--top-k", str(stage.top_k),
            "--no-progress"]  # fmt: skip
    argv += ["--standard", *(str(t.marker) for t in standard)] if standard else []
    argv += ["--facts", str(ctx.facts)] if ctx.facts is not None else []
    argv += [arg for key, value in tags.items() for arg in ("--tag", f"{key}={value}")]
    argv += [arg for task in stage.tasks for arg in ("--task", task)]
    argv += ["--limit", str(stage.limit)] if stage.limit else []
    argv += ["--branch-history"] if stage.branch_history else []
    return argv
