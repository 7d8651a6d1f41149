"""Evaluate a split family: the trunk, its k specialists and the standard arm, on held-out
data and on tasks.

One model is in memory at a time: each is loaded from its native checkpoint (on one
device, or split over ``tensor`` x ``pipeline`` ranks under torchrun, with the same
results), scores everything it is needed for (every cluster's held-out set; the task items
routed to it), and is freed before the next. Models are the trunk, ``branch_<i>`` (the specialist of
cluster i) and the runs continued on the mixture (``standard``, ``standard_per_model``:
named by the arm their checkpoint records). Results are rows, one per (model, evaluation,
metric), each with its ``arm``:

- ``heldout``: the token-weighted NLL of each model on each cluster's held-out documents
  (the loss matrix), and the family's summary rows: ``trunk`` and each standard arm (one
  model everywhere) and ``routed`` (each cluster's documents scored by its own specialist,
  which is where the router sends them), each averaged over clusters
  (``loss_cluster_mean``) and weighted by the clusters' token shares of the corpus
  (``loss_mixture``); with ``branch_history``, also each branch's earlier checkpoints on
  its own cluster (``heldout_history``);
- ``facts`` (given ``facts``, as the phonebook experiment writes them): the share of each
  cluster's facts recalled exactly by greedy decoding: a single model on every cluster, a
  specialist on its own (each book scored by its own specialist), and the summary rows
  ``recall_cluster_mean``; a fact belongs to the cluster that holds most documents of
  each of its books (its labels);
- ``<task>``: acc / acc_norm of each single model (the trunk, the standard arms) and of the
  routed family (top-k mixing), over all items and per cluster the router sends items to
  (rows with ``cluster`` and its item count ``n``: how many questions each specialist
  answered, and how every model did on them); with ``oracle``, also the ``oracle`` family
  (each item answered by the specialist of the cluster its ``domain`` label belongs to)
  and the router's agreement with it (``routing_acc``).

Every row carries ``tags``: the family's coordinates in its experiment (seed, budget, ...).
"""

from __future__ import annotations

import functools
import gc
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.facts import fact_recall
from eval.mc import ChoiceScores, accuracy, mix, requests_of
from eval.tasks import MCItem, Task

log = logging.getLogger(__name__)


class FamilyError(ValueError):
    """A trunk and branches that do not make one family over the given clusters."""


@dataclass
class FamilyEvalConfig:
    clusters: str  # cluster directory (from `msplit data cluster`)
    trunk: str | None  # run, checkpoints/ or step directory; none: branches from scratch
    branches: list[str]  # one per cluster, in cluster order
    out: str  # results, plots, and the held-out sets' index cache
    # Runs continued on the mixture (the standard arm at equal compute, and per model):
    # scored on every cluster and every task item, like the trunk.
    standard: list[str] = field(default_factory=list)
    heldout_samples: int = 64  # sequences per cluster's held-out set
    batch_size: int = 8
    # Also every earlier checkpoint of each branch on its own cluster: more D' points per
    # branch for the law (rows "heldout_history").
    branch_history: bool = False
    top_k: int = 1  # clusters each task item is routed to
    temperature: float = 0.1  # c-BTM's ensemble temperature (top_k > 1)
    # Also answer each task item with the specialist of its domain label's cluster.
    oracle: bool = False
    tensor: int = 1  # each model split over tensor x pipeline ranks (under torchrun)
    pipeline: int = 1
    progress: bool = True
    tasks: list[Task] = field(default_factory=list)
    facts: list[dict[str, Any]] = field(default_factory=list)  # {name, number, books}
    tags: dict[str, Any] = field(default_factory=dict)  # written into every row


def check_family(
    trunk: str | None, branches: Sequence[str], cluster_prefixes: Sequence[str]
) -> None:
    """Each branch trained on its own cluster's shard; warn when it did not start from the
    trunk (when one is given)."""
    from megatron_split.checkpoint import read_meta, resolve_checkpoint

    if len(branches) != len(cluster_prefixes):
        raise FamilyError(
            f"{len(branches)} branches for {len(cluster_prefixes)} clusters: give one branch "
            "per cluster, in cluster order"
        )
    trunk_run = resolve_checkpoint(trunk).resolve().parent if trunk is not None else None
    for cluster, (branch, prefix) in enumerate(zip(branches, cluster_prefixes, strict=True)):
        checkpoint = resolve_checkpoint(branch)
        meta = read_meta(checkpoint)
        trained_on = [str(Path(p).resolve()) for p in meta["config"]["data"]["paths"]]
        if trained_on != [str(Path(prefix).resolve())]:
            raise FamilyError(
                f"branch {cluster} ({checkpoint}) trained on {trained_on}, not on cluster "
                f"{cluster}'s shard {prefix}: list branches in cluster order"
            )
        parent = Path(meta.get("lineage", {}).get("parent", "")).resolve()
        if trunk_run is not None and parent.parent != trunk_run:
            log.warning(
                "branch %d (%s) did not start from the trunk's run (its parent: %s)",
                cluster,
                checkpoint,
                parent,
            )


def evaluate_family(config: FamilyEvalConfig) -> list[dict[str, Any]]:
    from data_prep.progress import progress_bar
    from eval.lm import CheckpointLM
    from eval.router import Router
    from megatron_split.checkpoint import complete_checkpoints, read_meta, resolve_checkpoint
    from megatron_split.data.clusters import ClusterDataConfig
    from megatron_split.runtime import detect_launch_env

    if config.facts and config.pipeline > 1:
        raise FamilyError("fact recall generates text, which does not run across pipeline "
                          "stages: evaluate facts at pipeline=1")  # fmt: skip
    data = ClusterDataConfig(config.clusters).build()
    check_family(config.trunk, config.branches, data.prefixes)
    router = Router.from_clusters(config.clusters) if config.tasks else None
    routes = {
        task.name: router.route([item.query for item in task.items], top_k=config.top_k)
        for task in config.tasks
    }
    facts_of = facts_by_cluster(config.facts, data.manifest) if config.facts else {}
    home = home_clusters(data.manifest) if config.oracle else {}
    oracles = {task.name: oracle_clusters(task, home) for task in config.tasks if config.oracle}
    # Single models answer everything; branch i answers what is routed to cluster i.
    singles = [("trunk", config.trunk)] if config.trunk is not None else []
    singles += [
        (read_meta(resolve_checkpoint(path))["run"]["arm"], path) for path in config.standard
    ]
    names = [name for name, _ in singles]
    if len(set(names)) != len(names):
        raise FamilyError(f"standard runs {config.standard} repeat an arm: {names}")
    models = singles + [(f"branch_{i}", path) for i, path in enumerate(config.branches)]
    # Every model reads the same sequences: the family's shortest length (a released
    # trunk's config allows far more context than its branches trained with).
    seq_length = min(read_meta(resolve_checkpoint(path))["config"]["model"]["seq_length"]
                     for _, path in models)  # fmt: skip
    load = functools.partial(CheckpointLM.load, seq_length=seq_length, tensor=config.tensor,
                             pipeline=config.pipeline)  # fmt: skip
    losses = np.full((len(models), data.k), np.nan)
    heldout_sets: dict[tuple[int, int], Any] = {}  # (cluster, seq_length): shared by models
    # Per task: each single model's scores, and each specialist's on the items routed to it.
    single_scores = {
        (name, task.name): ChoiceScores.empty(task.items) for name in names for task in config.tasks
    }
    branch_scores = {
        task.name: np.full((data.k, *ChoiceScores.empty(task.items).logprob.shape), np.nan)
        for task in config.tasks
    }
    rows: list[dict[str, Any]] = []
    recalls: dict[str, dict[int, float]] = {name: {} for name, _ in models}
    main_rank = detect_launch_env().rank == 0
    shown = config.progress and main_rank
    bar = progress_bar(models, desc="eval", unit="model", disable=not shown)
    for m, (name, path) in enumerate(bar):
        bar.set_postfix_str(name)
        lm = load(path)
        for cluster in range(data.k):
            key = (cluster, lm.seq_length)
            if key not in heldout_sets:
                heldout_sets[key] = data.heldout(
                    cluster, lm.seq_length, config.heldout_samples, Path(config.out) / "cache"
                )
            rows.append(heldout_row(lm, name, cluster, heldout_sets[key], config))
            losses[m, cluster] = rows[-1]["value"]
        own = [m - len(singles)] if m >= len(singles) else range(data.k)
        for cluster in own if facts_of else ():
            recall = fact_recall(lm, facts_of[cluster], config.batch_size)
            rows.append({"model": name, "eval": "facts", "cluster": cluster, "metric": "recall",
                         "value": recall, "n": len(facts_of[cluster]), "run": lm.name,
                         "step": lm.meta["step"], **checkpoint_record(lm.meta)})  # fmt: skip
            recalls[name][cluster] = recall
        for task in config.tasks:
            if m < len(singles):
                item_ids = np.arange(len(task.items))
                target = single_scores[(name, task.name)].logprob
            else:
                routed_here = (routes[task.name].clusters == m - len(singles)).any(axis=1)
                if config.oracle:
                    routed_here |= oracles[task.name] == m - len(singles)
                item_ids = np.flatnonzero(routed_here)
                target = branch_scores[task.name][m - len(singles)]
            requests, where = requests_of([task.items[i] for i in item_ids])
            scored = lm.loglikelihood(requests, config.batch_size)
            for (i, j), result in zip(where, scored, strict=True):
                target[item_ids[i], j] = result.logprob
        del lm
        gc.collect()
    if config.branch_history:
        for cluster, branch in enumerate(config.branches):
            final = resolve_checkpoint(branch)
            for checkpoint in complete_checkpoints(final.parent):
                if checkpoint != final:
                    lm = load(checkpoint)
                    heldout = heldout_sets[(cluster, lm.seq_length)]
                    rows.append(heldout_row(lm, f"branch_{cluster}", cluster, heldout, config,
                                            "heldout_history"))  # fmt: skip

    token_share = np.array(data.natural_weights())
    routed = losses[len(singles) + np.arange(data.k), np.arange(data.k)]
    summaries = [*zip(names, losses[: len(singles)], strict=True), ("routed", routed)]
    for name, per_cluster in summaries:
        arm = "specialist" if name == "routed" else name
        rows.append(
            {
                "model": name,
                "arm": arm,
                "eval": "heldout",
                "metric": "loss_cluster_mean",
                "value": float(per_cluster.mean()),
            }
        )
        rows.append({"model": name, "arm": arm, "eval": "heldout", "metric": "loss_mixture",
                     "value": float((per_cluster * token_share).sum())})  # fmt: skip
    if facts_of:
        routed_recall = {c: recalls[f"branch_{c}"][c] for c in range(data.k)}
        for name, per_cluster in [*((n, recalls[n]) for n in names), ("routed", routed_recall)]:
            rows.append({"model": name, "arm": "specialist" if name == "routed" else name,
                         "eval": "facts", "metric": "recall_cluster_mean",
                         "value": float(np.mean(list(per_cluster.values())))})  # fmt: skip
    for task in config.tasks:
        routing = routes[task.name]
        label = "routed" if config.top_k == 1 else f"routed_top{config.top_k}"
        weights = routing.weights(config.temperature)
        family = mix(branch_scores[task.name], routing.clusters, weights)
        answered = [(name, name, single_scores[(name, task.name)]) for name in names]
        answered.append((label, "specialist", family))
        if config.oracle:
            oracle = oracles[task.name]
            per_item = branch_scores[task.name][oracle, np.arange(len(task.items))]
            answered.append(("oracle", "specialist", ChoiceScores(per_item)))
            agree = float((routing.nearest == oracle).mean())
            rows.append({"model": "router", "arm": "specialist", "eval": task.name,
                         "metric": "routing_acc", "value": agree,
                         "n": len(task.items)})  # fmt: skip
        rows += task_rows(task.items, task.name, answered, routing.nearest, data.k)
    return [{**row, "tags": config.tags} for row in rows]


def task_rows(
    items: Sequence[MCItem],
    task: str,
    answered: Sequence[tuple[str, str, ChoiceScores]],
    nearest: np.ndarray,
    k: int,
) -> list[dict[str, Any]]:
    """acc and acc_norm of each (model, arm, scores) over all items, then over the items
    the router sends to each cluster (rows with ``cluster``; ``n`` counts the items)."""
    groups = [({}, np.arange(len(items)))]
    groups += [({"cluster": c}, np.flatnonzero(nearest == c)) for c in range(k)]
    rows = []
    for place, where in groups:
        if not len(where):
            continue
        subset = [items[i] for i in where]
        for name, arm, scores in answered:
            scored = accuracy(subset, ChoiceScores(scores.logprob[where]))
            for metric, (value, stderr) in scored.items():
                rows.append({"model": name, "arm": arm, "eval": task, "metric": metric, **place,
                             "value": value, "stderr": stderr, "n": len(subset)})  # fmt: skip
    return rows


def home_clusters(manifest: dict[str, Any]) -> dict[str, int]:
    """Each document label's cluster: the one holding most of its documents."""
    home: dict[str, tuple[int, int]] = {}  # label -> (documents, cluster)
    for cluster, info in enumerate(manifest["clusters"]):
        for label, count in info.get("labels", {}).items():
            home[label] = max(home.get(label, (0, cluster)), (count, cluster))
    return {label: cluster for label, (_, cluster) in home.items()}


def oracle_clusters(task: Task, home: dict[str, int]) -> np.ndarray:
    """Each item's cluster by its domain label: where the oracle routes it."""
    for item in task.items:
        if item.domain not in home:
            found = "has no domain" if item.domain is None else f"has domain {item.domain!r}"
            raise FamilyError(
                f"{task.name} ({task.source}): item {item.id} {found}; the oracle routes by a "
                "`domain` field naming a label of the clustered documents "
                f"({', '.join(sorted(home)) or 'none: cluster them with a label key'})"
            )
    return np.array([home[item.domain] for item in task.items], dtype=np.int64)


def facts_by_cluster(
    facts: Sequence[dict[str, Any]], manifest: dict[str, Any]
) -> dict[int, list[dict[str, Any]]]:
    """Each cluster's facts: those of the books (document labels) it holds most of."""
    home = home_clusters(manifest)
    by_cluster: dict[int, list[dict[str, Any]]] = {c: [] for c in range(len(manifest["clusters"]))}
    for fact in facts:
        unknown = [book for book in fact["books"] if book not in home]
        if unknown:
            raise FamilyError(
                f"fact {fact['name']!r} is in books {unknown} that label no cluster's documents "
                f"(labels: {sorted(home)}): cluster the books with their label key"
            )
        for cluster in sorted({home[book] for book in fact["books"]}):
            by_cluster[cluster].append(fact)
    return by_cluster


def heldout_row(
    lm: Any, model: str, cluster: int, heldout: Any, config: FamilyEvalConfig, kind: str = "heldout"
) -> dict[str, Any]:
    """The held-out loss of one checkpoint on one cluster, with its place in L(N, D, D')."""
    result = lm.dataset_loss(heldout, config.heldout_samples, config.batch_size)
    return {"model": model, "eval": kind, "cluster": cluster, "metric": "loss",
            "value": result["loss"], "tokens": result["tokens"], "run": lm.name,
            "step": lm.meta["step"], **checkpoint_record(lm.meta)}  # fmt: skip


def checkpoint_record(meta: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint is, for the results table: its arm, its place in L(N, D, D')
    (non-embedding parameters N, pretraining tokens D, specialisation tokens D'), its total
    parameters, the trunk tokens it continued from (its split point), and whether it ended
    a decaying schedule (only such checkpoints are comparable across runs: law points)."""
    from megatron_split.config import from_dict
    from megatron_split.model.config import ModelConfig

    counts = from_dict(ModelConfig, meta["config"]["model"]).parameter_counts()
    run = meta["run"]
    return {"arm": run["arm"], "N": counts["non_embedding"], "N_total": counts["total"],
            "D": run["D"], "D_prime": run["D_prime"],
            "split_tokens": (meta.get("lineage") or {}).get("parent_tokens"),
            "annealed": run["annealed"]}  # fmt: skip


def law_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a scaling law is fitted to: each annealed checkpoint (the end of a decaying
    schedule; a stable-phase trunk is not comparable with them) on the clusters it stands
    for: a specialist on its own cluster, every other model on every cluster
    (laws.load_table reads them, and any directory holding them)."""
    return [
        {"N": r["N"], "D": r["D"], "D_prime": r["D_prime"], "loss": r["value"],
         "domain": f"cluster_{r['cluster']}", "run": r["run"], "arm": r["arm"]}
        for r in rows
        if r["eval"] in ("heldout", "heldout_history") and r["metric"] == "loss"
        and r["annealed"] and (r["arm"] != "specialist" or r["model"] == f"branch_{r['cluster']}")
    ]  # fmt: skip


def write_results(rows: list[dict[str, Any]], out: str | Path, k: int) -> str:
    """results.jsonl, law_points.jsonl, results.md and heldout_loss.png (the loss matrix);
    returns the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(rows, k)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    points = law_points(rows)
    (out / "law_points.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    (out / "results.md").write_text(table)
    plot_loss_matrix(rows, k, out / "heldout_loss.png")
    return table


def loss_matrix(rows: list[dict[str, Any]], k: int) -> tuple[list[str], np.ndarray]:
    cells = [r for r in rows if r["eval"] == "heldout" and r["metric"] == "loss"]
    models = list(dict.fromkeys(r["model"] for r in cells))
    matrix = np.full((len(models), k), np.nan)
    for r in cells:
        matrix[models.index(r["model"]), r["cluster"]] = r["value"]
    return models, matrix


def results_table(rows: list[dict[str, Any]], k: int) -> str:
    models, matrix = loss_matrix(rows, k)
    lines = ["Held-out loss (nats/token) of each model on each cluster; lower is better.", ""]
    lines.append("| model | " + " | ".join(f"cluster {c}" for c in range(k)) + " |")
    lines.append("|---|" + "---|" * k)
    for model, values in zip(models, matrix, strict=True):
        lines.append(f"| {model} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    lines += ["", "| model | eval | metric | value |", "|---|---|---|---|"]
    for r in rows:
        if r["eval"] in ("heldout", "heldout_history") and r["metric"] == "loss":
            continue  # in the matrix above, or in results.jsonl and law_points.jsonl
        if is_task(r) and "cluster" in r:
            continue  # in the task's table below
        stderr = f" ± {r['stderr']:.4f}" if "stderr" in r else ""
        metric = f"{r['metric']} (cluster {r['cluster']})" if "cluster" in r else r["metric"]
        lines.append(f"| {r['model']} | {r['eval']} | {metric} | {r['value']:.4f}{stderr} |")
    for task in dict.fromkeys(r["eval"] for r in rows if is_task(r)):
        lines += ["", *task_table([r for r in rows if r["eval"] == task], task, k)]
    return "\n".join(lines) + "\n"


def is_task(row: dict[str, Any]) -> bool:
    return row["eval"] not in ("heldout", "heldout_history", "facts")


def task_table(rows: list[dict[str, Any]], task: str, k: int) -> list[str]:
    """One task's acc (acc_norm) of every model side by side, over all items and over the
    items the router sends to each cluster."""
    cells = {(r["model"], r.get("cluster"), r["metric"]): r for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows if r["metric"] == "acc"))
    lines = [f"{task}: acc (acc_norm) over all items, and over the items routed to each "
             "cluster (its specialist answers them in the routed family)", "",
             "| items | n | " + " | ".join(models) + " |",
             "|---|---|" + "---|" * len(models)]  # fmt: skip
    for cluster in (None, *range(k)):
        if (models[0], cluster, "acc") not in cells:
            continue  # the router sent no item there
        n = cells[(models[0], cluster, "acc")]["n"]
        scores = [f"{cells[(m, cluster, 'acc')]['value']:.3f} "
                  f"({cells[(m, cluster, 'acc_norm')]['value']:.3f})" for m in models]  # fmt: skip
        place = "all" if cluster is None else f"cluster {cluster}"
        lines.append(f"| {place} | {n} | " + " | ".join(scores) + " |")
    return lines


def plot_loss_matrix(rows: list[dict[str, Any]], k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, matrix = loss_matrix(rows, k)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 0.5 * len(models) + 1.5))
    image = ax.imshow(matrix, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(k), [f"cluster {c}" for c in range(k)])
    ax.set_yticks(range(len(models)), models)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white", fontsize=8)
    for cluster in range(k):  # each specialist on its own cluster
        if f"branch_{cluster}" in models:
            row = models.index(f"branch_{cluster}")
            ax.add_patch(plt.Rectangle((cluster - 0.5, row - 0.5), 1, 1, fill=False, lw=2))
    fig.colorbar(image, ax=ax, label="held-out loss (nats/token)")
    ax.set_title("Each model on each cluster's held-out documents (boxed: own cluster)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
