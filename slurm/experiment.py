"""A whole split experiment as Slurm jobs: trunk -> branches per split point -> evaluation.

An experiment YAML names a cluster directory, a base run config and the split points:

    out: runs/exp
    clusters: runs/demo/clusters
    config: configs/tiny.yaml
    split_steps: [100, 200]          # trunk steps to branch from (default: its last)
    # or split_fractions: [0.5, 1.0]  # of each trunk's steps (a ladder's rungs may differ)
    trunk: {overrides: ["train.steps=200"], slurm: {gpus_per_node: 8, nodes: 2}}
    branches: {steps: 40, slurm: {gpus_per_node: 8}}
    eval: {tasks: ["mmlu=/data/mmlu.jsonl"], limit: 500}

and becomes this graph of jobs, submitted at once with ``afterok`` dependencies:

    trunk ──> split_100/branches (an array of k jobs) ──> split_100/eval
          └─> split_200/branches (an array of k jobs) ──> split_200/eval

A ``ladder`` (rung name -> overrides such as model sizes) repeats that graph once per rung
under ``out/<rung>/``: the runs a scaling law L(N, D, D') is fitted to. Every evaluation
writes its points, and a last job (after every evaluation) fits the law to them all and
writes ``out/laws/fit.json`` and a report with the optimal split (``laws:`` settings).

Training jobs requeue themselves on preemption or time-out and resume from their last
checkpoint; the trunk keeps the split points' checkpoints whatever ``keep_last`` says.
Resubmitting skips every job whose outputs are complete, so after a failure the same
command submits just what is left. Without Slurm (the local executor) the jobs run one
stage after another on this machine.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import submitit

from megatron_split.branching import branch_overrides, trunk_overrides
from megatron_split.checkpoint import latest_checkpoint, read_meta, step_dir_name
from megatron_split.config import ConfigError, load_config
from megatron_split.data.clusters import ClusterData, ClusterDataConfig
from megatron_split.train.config import RunConfig
from slurm.launch import SlurmConfig, TrainingJob

log = logging.getLogger(__name__)


@dataclass
class TrunkStage:
    overrides: list[str] = field(default_factory=list)  # dotted overrides of the base config
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class BranchStage:
    steps: int = 100  # continued-pretraining steps of each branch
    overrides: list[str] = field(default_factory=list)
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
        """Refuse at submission what would otherwise fail after the whole ladder has run."""
        from laws.forms import FORMS
        from laws.select import HOLDOUTS

        if self.form != "auto" and self.form not in FORMS:
            raise ConfigError(f"laws.form={self.form!r}: auto or one of {', '.join(FORMS)}")
        if self.holdout not in HOLDOUTS:
            raise ConfigError(f"laws.holdout={self.holdout!r}: one of {', '.join(HOLDOUTS)}")

    def argvs(self, out: Path, k: int) -> list[list[str]]:
        fit = out / "laws" / "fit.json"
        return [
            ["fit", str(out), "--form", self.form, "--holdout", self.holdout,
             "--bootstrap", str(self.bootstrap), "--json", str(fit),
             *(["--per-domain", ",".join(self.per_domain)] if self.per_domain else [])],
            ["report", "--fit", str(fit), "--data", str(out), "--out",
             str(out / "laws" / "report"), "--k", str(k)],
        ]  # fmt: skip


@dataclass
class ExperimentConfig:
    out: str  # runs, job logs and results, all under here
    clusters: str  # cluster directory (`msplit data cluster`)
    config: str  # base run config (YAML) of the trunk and the branches
    split_steps: list[int] = field(default_factory=list)  # default: the trunk's last step
    split_fractions: list[float] = field(default_factory=list)  # or fractions of its steps
    # A model ladder for fitting L(N, D, D'): rung name -> overrides of the trunk and the
    # branches alike (sizes, trunk steps), applied after the stages' own; each rung is a
    # whole experiment under out/<rung>/.
    ladder: dict[str, list[str]] = field(default_factory=dict)
    trunk: TrunkStage = field(default_factory=TrunkStage)
    branches: BranchStage = field(default_factory=BranchStage)
    eval: EvalStage = field(default_factory=EvalStage)
    laws: LawsStage = field(default_factory=LawsStage)


@dataclass
class PlannedJob:
    name: str  # "trunk", "split_100/branches", "split_100/eval", "laws"
    kind: Literal["train", "eval", "laws"]
    argvs: list[list[str]]  # train: one per task (an array); eval, laws: commands in turn
    slurm: SlurmConfig
    after: list[str]  # names of the jobs this one waits for
    targets: list[tuple[Path, int]]  # (run dir, final step) per training task
    results: Path | None = None  # what an eval or laws job writes last

    @property
    def done(self) -> bool:
        if self.kind == "train":
            return all(finished_step(run) >= steps for run, steps in self.targets)
        return self.results is not None and self.results.is_file()


class CommandJob:
    """Commands of ``msplit eval`` or ``laws`` run in turn as one submitit job; on
    preemption it starts again (it is short)."""

    def __init__(self, kind: Literal["eval", "laws"], argvs: list[list[str]]):
        self.kind, self.argvs = kind, [list(argv) for argv in argvs]

    def __call__(self) -> int:
        if self.kind == "eval":
            from eval.cli import main
        else:
            from laws.cli import main
        for argv in self.argvs:
            if code := main(argv):
                return code
        return 0

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(CommandJob(self.kind, self.argvs))


def finished_step(run_dir: Path) -> int:
    latest = latest_checkpoint(run_dir / "checkpoints")
    return read_meta(latest)["step"] if latest is not None else 0


def plan(cfg: ExperimentConfig) -> list[PlannedJob]:
    """The experiment's jobs in submission order (each after the jobs it waits for)."""
    # Absolute paths: a job may start in another directory, on another node.
    out, config = Path(cfg.out).resolve(), str(Path(cfg.config).resolve())
    clusters_dir = str(Path(cfg.clusters).resolve())
    clusters = ClusterDataConfig(clusters_dir).build()
    if not cfg.ladder:
        return _plan_family(cfg, config, clusters_dir, clusters, out, "", [])
    jobs = [
        job
        for rung, overrides in cfg.ladder.items()
        for job in _plan_family(
            cfg, config, clusters_dir, clusters, out / rung, f"{rung}/", overrides
        )  # fmt: skip
    ]
    if cfg.laws.fit and len(cfg.ladder) > 1:
        cfg.laws.validate()
        evals = [job.name for job in jobs if job.kind == "eval"]
        jobs.append(PlannedJob("laws", "laws", cfg.laws.argvs(out, clusters.k),
                               _with_folder(cfg.laws.slurm, out), evals, [],
                               results=out / "laws" / "report" / "report.md"))  # fmt: skip
    return jobs


def _plan_family(
    cfg: ExperimentConfig,
    config: str,
    clusters_dir: str,
    clusters: ClusterData,
    out: Path,
    prefix: str,
    rung: list[str],
) -> list[PlannedJob]:
    """One trunk, its branch arrays and evaluations, under ``out``; names start ``prefix``."""
    trunk_dir = out / "trunk"
    trunk = [*trunk_overrides(clusters, trunk_dir), *cfg.trunk.overrides, *rung]
    trunk_steps = load_config(RunConfig, config, trunk).train.steps
    split_steps = _split_steps(cfg, trunk_steps, prefix)
    trunk_argv = [config, *trunk, f"checkpoint.keep_steps={json.dumps(split_steps)}"]
    trunk_slurm = _with_folder(cfg.trunk.slurm, out)
    jobs = [PlannedJob(f"{prefix}trunk", "train", [trunk_argv], trunk_slurm, [],
                       [(trunk_dir, trunk_steps)])]  # fmt: skip
    for step in split_steps:
        parent = trunk_dir / "checkpoints" / step_dir_name(step)
        split_dir = out / f"split_{step}"
        runs = [split_dir / f"cluster_{c}" for c in range(clusters.k)]
        argvs = [
            [config, *cfg.branches.overrides, *rung,
             *branch_overrides(clusters, c, parent, run, cfg.branches.steps)]
            for c, run in enumerate(runs)
        ]  # fmt: skip
        branches = f"{prefix}split_{step}/branches"
        jobs.append(PlannedJob(branches, "train", argvs, _with_folder(cfg.branches.slurm, out),
                               [f"{prefix}trunk"],
                               [(run, cfg.branches.steps) for run in runs]))  # fmt: skip
        eval_argv = ["--clusters", clusters_dir, "--trunk", str(parent),
                     "--branches", *map(str, runs), "--out", str(split_dir / "eval"),
                     "--heldout-samples", str(cfg.eval.heldout_samples),
                     "--top-k", str(cfg.eval.top_k), "--no-progress"]  # fmt: skip
        eval_argv += [arg for task in cfg.eval.tasks for arg in ("--task", task)]
        eval_argv += ["--limit", str(cfg.eval.limit)] if cfg.eval.limit else []
        eval_argv += ["--branch-history"] if cfg.eval.branch_history else []
        jobs.append(PlannedJob(f"{prefix}split_{step}/eval", "eval", [eval_argv],
                               _with_folder(cfg.eval.slurm, out), [branches], [],
                               results=split_dir / "eval" / "results.jsonl"))  # fmt: skip
    return jobs


def _split_steps(cfg: ExperimentConfig, trunk_steps: int, prefix: str) -> list[int]:
    """The trunk steps to branch from: given, as fractions of the trunk, or its last."""
    if cfg.split_steps and cfg.split_fractions:
        raise ConfigError("give split_steps or split_fractions, not both")
    if any(not 0 < f <= 1 for f in cfg.split_fractions):
        raise ConfigError(f"split_fractions {cfg.split_fractions} must lie in (0, 1]")
    fractions = [max(1, round(f * trunk_steps)) for f in cfg.split_fractions]
    steps = sorted(set(cfg.split_steps or fractions or [trunk_steps]))
    if steps[0] < 1 or steps[-1] > trunk_steps:
        raise ConfigError(f"{prefix}split_steps {steps} must lie in 1..{trunk_steps} (trunk steps)")
    return steps


def _with_folder(slurm: SlurmConfig, out: Path) -> SlurmConfig:
    """The stage's Slurm settings, with submitit's logs under the experiment by default."""
    if slurm.folder != SlurmConfig().folder:
        return slurm
    return replace(slurm, folder=str(out / "jobs" / "%j"))


def submit(cfg: ExperimentConfig, wait: bool = False) -> dict[str, str]:
    """Submit every unfinished job; returns {job name: Slurm job id} of those submitted.

    On Slurm everything is submitted at once, chained by ``afterok``; a job that an earlier
    submission left queued or running is not submitted twice, and its successors wait for
    it. With the local executor each stage runs to its end before the next starts.
    """
    state = Path(cfg.out).resolve() / "experiment.json"
    previous = json.loads(state.read_text())["jobs"] if state.is_file() else {}
    ids: dict[str, str] = {}  # this submission's jobs and the earlier ones still queued
    submitted: dict[str, list[submitit.Job]] = {}
    for job in plan(cfg):
        if job.done:
            log.info("%s: complete, not submitted", job.name)
            continue
        local = job.slurm.resolved_cluster() != "slurm"
        if not local and job.name in previous and still_queued(previous[job.name]):
            ids[job.name] = previous[job.name]
            log.info("%s: still queued as %s, not submitted again", job.name, ids[job.name])
            continue
        after = [ids[name] for name in job.after if name in ids]
        dependency = f"afterok:{':'.join(after)}" if after and not local else None
        executor = job.slurm.executor(dependency=dependency)
        with executor.batch():
            if job.kind == "train":
                array = [executor.submit(TrainingJob(argv)) for argv in job.argvs]
            else:
                array = [executor.submit(CommandJob(job.kind, job.argvs))]
        submitted[job.name], ids[job.name] = array, _array_id(array)
        log.info("%s: submitted %s", job.name, ids[job.name])
        if local:  # no dependencies without Slurm: each stage ends before the next starts
            _wait(array)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"jobs": {**previous, **ids}, "time": time.time()}, indent=2))
    if wait:
        for array in submitted.values():
            _wait(array)
    return {name: ids[name] for name in submitted}


def still_queued(job_id: str) -> bool:
    """Whether Slurm still holds the job (pending, running or requeued)."""
    return bool(slurm_state(job_id))


def slurm_state(job_id: str) -> str:
    """The states squeue shows for a job (its array tasks'), or "" when it holds none."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if out.returncode != 0:
        return ""
    return ",".join(sorted(set(out.stdout.split())))


def _array_id(array: list[submitit.Job]) -> str:
    return str(array[0].job_id).split("_")[0]


def _wait(array: list[submitit.Job]) -> None:
    for job in array:
        code = job.result()
        if code:
            raise RuntimeError(f"job {job.job_id} exited with code {code}; see {job.paths.stderr}")


def status(cfg: ExperimentConfig) -> list[dict[str, str]]:
    """One row per job: its progress read from its outputs, and its last Slurm job id."""
    state = Path(cfg.out) / "experiment.json"
    ids = json.loads(state.read_text())["jobs"] if state.is_file() else {}
    rows = []
    for job in plan(cfg):
        if job.kind == "train":
            steps = [f"{finished_step(run)}/{target}" for run, target in job.targets]
            progress = " ".join(steps) + " steps"
        elif job.kind == "laws" and job.done:
            progress = _law_summary(Path(cfg.out).resolve() / "laws" / "fit.json")
        else:
            progress = f"{job.results.name} written" if job.done else "not written yet"
        job_id = ids.get(job.name)
        state = slurm_state(job_id) if job_id and not job.done else ""
        rows.append({"job": job.name, "done": "yes" if job.done else "no",
                     "progress": progress, "slurm_id": job_id or "-",
                     "state": state or "-"})  # fmt: skip
    return rows


def _law_summary(fit: Path) -> str:
    """The fitted law in a few words: its form, fit and (when scored) held-out R^2."""
    record = json.loads(fit.read_text())
    summary = f"{record['form']}: R^2 {record['r2']:.3f} on {record['n_points']} points"
    if "heldout_r2" in record:
        summary += f", held-out R^2 {record['heldout_r2']:.3f} ({record['heldout']['split']})"
    return summary
