"""`python -m laws` / `msplit laws`: fit scaling laws, plan the compute split, write reports."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from laws.allocate import ACCOUNTING, AllocationConfig, interval
from laws.data import LOSS_UNIT, DataError, DataWarning, Table, check_design, load_table
from laws.fit import FitConfig, FitError, FitResult, check_identified, result_from_json
from laws.forms import FORMS, get_form, load_plugin
from laws.io import read_json, write_json
from laws.select import (
    CHOSEN_ON,
    CRITERIA,
    HOLDOUTS,
    SelectionConfig,
    heldout_scores,
    holdout_split,
)

EXAMPLES = """examples:
  msplit laws forms
  msplit laws fit results.csv --form auto --holdout largest-N --bootstrap 100 --json fit.json
  msplit laws fit runs/demo --json fit.json   # every law_points.jsonl under a directory
  msplit laws plan --fit fit.json --n 1.3e9 --budget 3.6e11 --k 16 --json plan.json
  msplit laws report --fit fit.json --data results.csv --out report/
"""


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a size, a budget; nan and inf plan nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msplit laws",
        description="Fit scaling laws L(N, D, D') and choose the pretraining/specialisation "
        "split of a compute budget.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    plugin_help = "Python file registering extra forms with @register_form (repeatable)"

    forms = sub.add_parser("forms", help="list the registered functional forms")
    forms.add_argument("--plugin", action="append", default=[], help=plugin_help)

    fit = sub.add_parser("fit", help="fit a form (or pick one by extrapolation) to a table")
    fit.add_argument(
        "data",
        help="results table: .csv, .parquet or .jsonl with N, D, D_prime, loss[, domain, run], "
        "or a directory: every law_points.jsonl under it (what `msplit eval` writes)",
    )
    fit.add_argument(
        "--form",
        default="auto",
        help="form name (see `laws forms`), or 'auto' to fit every candidate and pick one "
        "(default auto)",
    )
    fit.add_argument(
        "--forms",
        type=_csv,
        default=(),
        help="with --form auto: comma-separated candidates (default: every registered form)",
    )
    fit.add_argument(
        "--holdout",
        choices=HOLDOUTS,
        default="largest-N",
        help="held-out extrapolation split (default largest-N); none: no extrapolation "
        "check, and --form auto ranks the forms by AICc of the in-sample log-loss residuals "
        "(in-sample error would always pick the most parameters)",
    )
    fit.add_argument(
        "--criterion",
        choices=CRITERIA,
        default="mre",
        help="held-out score that picks the form with --form auto (default mre; unused "
        "with --holdout none)",
    )
    fit.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=0,
        metavar="B",
        help="bootstrap replicates over runs for confidence intervals (default 0: none)",
    )
    fit.add_argument(
        "--per-domain",
        type=_csv,
        default=(),
        metavar="P1,P2",
        help="parameters fitted once per domain (needs a domain column)",
    )
    fit.add_argument(
        "--huber-delta", type=positive_float, default=1e-3, help="Huber delta on log losses (1e-3)"
    )
    fit.add_argument(
        "--min-inits",
        type=positive_int,
        default=1024,
        help="smallest grid of initialisations (default 1024)",
    )
    fit.add_argument(
        "--n-starts",
        type=positive_int,
        default=32,
        help="best grid points refined by L-BFGS-B (default 32)",
    )
    fit.add_argument("--seed", type=int, default=0, help="grid top-up and bootstrap seed")
    fit.add_argument("--plugin", action="append", default=[], help=plugin_help)
    fit.add_argument("--json", required=True, metavar="OUT", help="write the fit here")

    plan = sub.add_parser("plan", help="optimal split of a budget for a fitted law")
    plan.add_argument("--fit", required=True, metavar="FIT.json", help="what `fit --json` wrote")
    plan.add_argument("--n", type=positive_float, required=True, help="model size (parameters)")
    plan.add_argument("--budget", type=positive_float, required=True, help="total tokens T")
    plan.add_argument(
        "--k", type=positive_int, required=True, help="number of clusters/specialists"
    )
    plan.add_argument(
        "--accounting",
        choices=ACCOUNTING,
        default="total",
        help="cost D + k*D' (total, default) or D + D' (per-model)",
    )
    plan.add_argument(
        "--domain",
        help="with per-domain parameters: plan for this domain, one of the fit's "
        "(default: the mean loss over domains)",
    )
    plan.add_argument("--plugin", action="append", default=[], help=plugin_help)
    plan.add_argument("--json", metavar="OUT", help="also write the plan as JSON")

    report = sub.add_parser("report", help="markdown report with plots")
    report.add_argument("--fit", required=True, metavar="FIT.json", help="what `fit --json` wrote")
    report.add_argument(
        "--data",
        required=True,
        help="the table the law was fitted on; another table (or this one changed since the "
        "fit) is refused: the report's scores, held-out split and size range are the fit's, "
        "so refit on a new table to report it",
    )
    report.add_argument("--out", "--output", required=True, help="output folder")
    report.add_argument(
        "--k", type=positive_int, default=16, help="clusters for the split (default 16)"
    )
    report.add_argument("--accounting", choices=ACCOUNTING, default="total")
    report.add_argument(
        "--n",
        type=positive_float,
        action="append",
        default=[],
        help="model sizes for the split curves (repeatable; default: from data)",
    )
    report.add_argument("--plugin", action="append", default=[], help=plugin_help)
    return parser


def _load_plugins(paths: list[str]) -> list[str]:
    resolved = [str(Path(p).resolve()) for p in paths]
    for path in resolved:
        load_plugin(path)
    return resolved


def _load_fit(path: str, plugins: list[str]) -> tuple[dict[str, Any], FitResult]:
    record = read_json(path)
    if isinstance(record, dict):
        _load_plugins(plugins + [p for p in record.get("plugins", []) if p not in plugins])
    try:
        return record, result_from_json(record)
    except FitError as e:
        raise FitError(f"{path}: {e}") from None


def cmd_forms(args: argparse.Namespace) -> int:
    _load_plugins(args.plugin)
    for name, form in FORMS.items():
        print(f"{name}  ({', '.join(form.param_names)})\n    {form.description}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    plugins = _load_plugins(args.plugin)
    table = load_table(args.data)
    design = check_design(table)
    if len(table.domains) > 1 and not args.per_domain:
        design.append(
            _warn(
                f"{args.data}: {len(table.domains)} domains but no --per-domain parameters: "
                "one curve is fitted through every domain's losses"
            )
        )
    if args.holdout != "none":
        _check_holdout(table, args.holdout)
    fit_config = FitConfig(
        huber_delta=args.huber_delta,
        min_inits=args.min_inits,
        n_starts=args.n_starts,
        per_domain=args.per_domain,
        bootstrap=args.bootstrap,
        seed=args.seed,
        progress=sys.stderr.isatty(),  # bars on a terminal; none in a batch job's log
    )
    selection = SelectionConfig(
        forms=args.forms if args.form == "auto" else (args.form,),
        holdout=args.holdout,
        criterion=args.criterion,
        fit=fit_config,
    ).build()
    for name in selection.forms():
        get_form(name)  # unknown names fail before any fitting
    rows: list[dict[str, Any]] = []
    if args.form == "auto":
        rows = selection.compare(table)
        chosen = selection.pick(rows)
        heldout = next(r for r in rows if r["form"] == chosen).get("heldout")
    else:
        chosen, heldout = args.form, None
        if args.holdout != "none":
            heldout = heldout_scores(table, chosen, args.holdout, selection.fit_config_for(chosen))
    result = selection.fit_config_for(chosen).build(chosen).fit(table)
    design += check_identified(result.law.form, table)
    if result.at_bounds:
        _warn(
            f"{chosen}: {', '.join(result.at_bounds)} ended on a bound; the data may not "
            "constrain them or the form may not describe the data"
        )
    record = result.to_json()
    record.update(data=str(Path(args.data).resolve()), plugins=plugins)
    if design:
        record["design_warnings"] = design
    if heldout:
        record["heldout"] = heldout
        record.update({f"heldout_{k}": heldout[k] for k in ("r2", "mre", "max_err")})
    if rows:
        record["selection"], record["chosen_on"] = rows, selection.chosen_on(rows)
    write_json(args.json, record)
    _print_fit(record)
    return 0


def _warn(message: str) -> str:
    warnings.warn(message, DataWarning, stacklevel=2)
    return message


def _check_holdout(table: Table, how: str) -> None:
    """Fail before any fitting, once, and say how to fit without a held-out split."""
    try:
        holdout_split(table, how)
    except FitError as e:
        raise FitError(
            f"{e}; to fit without an extrapolation check pass --holdout none (with --form "
            "auto the forms are then ranked by AICc), or add runs"
        ) from None


def _print_fit(record: dict[str, Any]) -> None:
    for row in record.get("selection", []):
        v, h = row.get("validation", {}), row.get("heldout", {})
        if "error" in row:
            scores = row["error"]
        elif h:
            scores = (f"validation mre {v['mre']:.4f}  " if v else "") + (
                f"held-out R^2 {h['r2']:.4f}  mre {h['mre']:.4f}  max err {h['max_err']:.4f}"
            )
        else:
            scores = f"AICc {row['aicc']:.4g}  in-sample mre {row['fit_mre']:.4f}"
        print(f"  {row['form']:<22} {scores}")
    if "chosen_on" in record:
        print(f"chosen on: {CHOSEN_ON[record['chosen_on']]}")
    print(f"form: {record['form']}   R^2 {record['r2']:.4f}   mre {record['mre']:.4g}")
    ci = record.get("ci", {})
    for name, value in record["params"].items():
        band = f"   [{ci[name][0]:.4g}, {ci[name][1]:.4g}]" if name in ci else ""
        print(f"  {name:<12} {value:.6g}{band}")
    if "heldout" in record:
        h = record["heldout"]
        print(
            f"held out ({h['split']}, {h['n_test']} points): R^2 {h['r2']:.4f}  "
            f"mre {h['mre']:.4g}  max err {h['max_err']:.4g} {LOSS_UNIT}"
        )


def cmd_plan(args: argparse.Namespace) -> int:
    _, result = _load_fit(args.fit, args.plugin)
    config = AllocationConfig(k=args.k, accounting=args.accounting)

    def loss_of(law):
        return lambda N, D, Dp: law.predict(N, D, Dp, args.domain)

    split = config.build(loss_of(result.law)).plan(args.n, args.budget)
    record: dict[str, Any] = split.to_json()
    if args.domain:
        record["domain"] = args.domain
    if result.bootstrap:
        replicates = [
            config.build(loss_of(law)).plan(args.n, args.budget) for law in result.bootstrap_laws()
        ]
        record["ci"] = {
            key: interval([getattr(s, key) for s in replicates]) for key in PLAN_CI_KEYS
        }
    if args.json:
        write_json(args.json, record)
    ci = record.get("ci", {})

    def show(key: str, digits: str = ".4g") -> str:
        value = getattr(split, key)
        text = "never" if value is None else format(value, digits)
        band = ci.get(key)
        return f"{text} [{band[0]:{digits}}, {band[1]:{digits}}]" if band else text

    print(
        f"N = {split.N:.4g}, budget T = {split.budget:.4g} tokens, k = {split.k} "
        f"({split.accounting} cost)" + (" (95% bootstrap intervals)" if ci else "") + "\n"
        f"  D*  = {show('D_star')} pretraining tokens (fraction {show('fraction', '.4f')})\n"
        f"  D'* = {show('D_prime_star')} tokens per specialist\n"
        f"  loss {show('loss_star', '.4f')} {LOSS_UNIT} (pretraining only: "
        f"{show('loss_pretrain_only', '.4f')})\n"
        f"  D_split = {show('D_split')}{'' if split.D_split is None else ' tokens'}; "
        f"compute multiplier {show('multiplier', '.3f')}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from laws.report import ReportConfig  # matplotlib: loaded only for reports

    record, result = _load_fit(args.fit, args.plugin)
    table = load_table(args.data)
    if not result.fitted_on(table):
        raise DataError(
            f"{args.data} ({len(table)} points) is not the table {args.fit} was fitted on "
            f"({record.get('data', 'not recorded')}, {result.n_points} points): the report "
            "shows a law against its own data; pass that table, or refit on this one"
        )
    config = ReportConfig(
        out=Path(args.out), k=args.k, accounting=args.accounting, sizes=tuple(args.n)
    )
    path = config.build(result, record, table).write()
    print(f"wrote {path} and its plots")
    return 0


PLAN_CI_KEYS = (
    "D_star",
    "D_prime_star",
    "fraction",
    "loss_star",
    "loss_pretrain_only",
    "D_split",
    "multiplier",
)
COMMANDS = {"forms": cmd_forms, "fit": cmd_fit, "plan": cmd_plan, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = _show_warning
        try:
            return COMMANDS[args.command](args)
        except (DataError, FitError, FileNotFoundError, KeyError, ValueError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"laws {args.command}: error: {message}", file=sys.stderr)
            return 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
