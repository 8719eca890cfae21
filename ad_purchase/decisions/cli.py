"""Commands for the decision log, run from the repository (or the image's /app):

    python -m ad_purchase.decisions load-outcomes outcomes.parquet         bulk load (CSV or Parquet)
    python -m ad_purchase.decisions report [--since 2026-11-01] [--by week] [--plot calibration.png]
    python -m ad_purchase.decisions evaluate scores.csv outcomes.csv [--id-column customer_id] [--plot c.png]

`load-outcomes` and `report` use DATABASE_URL (or --database-url), as the service does.  `evaluate`
needs no database: the file written by score.py is a decision record (id, phat, business_outcome,
model_version, scored_at), joined to the outcomes file by the same rule as the service's, in a
scratch SQLite file that is removed afterwards.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from ..serving.settings import Settings
from . import outcomes, performance, store

LOAD_CHUNK = 50_000          # outcomes per transaction: the service's writers wait at most one chunk
FIGURES = ("auc", "log_loss", "brier", "precision_at_cutoff", "recall_at_cutoff", "lift_at_cutoff")


def _read_table(path: Path):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    if path.suffix.lower() in (".parquet", ".pq"):
        return pq.read_table(path)
    return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))


def _columns(table, names: list[str]) -> dict[str, list]:
    """The named columns as Python lists; times as ISO text, so files and JSON are checked alike."""
    import pyarrow as pa
    found = {}
    for name in names:
        if name not in table.column_names:
            continue
        column = table.column(name)
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            column = column.cast(pa.string())
        found[name] = column.to_pylist()
    return found


def _database_url(given: str | None) -> str:
    return given or Settings.from_env().DATABASE_URL


def load_outcomes(path: Path, url: str, id_field: str) -> tuple[outcomes.Applied, outcomes.Outcomes, float]:
    """Load an outcomes file; what was applied, the outcomes read, and the seconds it took."""
    started = time.perf_counter()
    table = _read_table(path)
    if "outcome" not in table.column_names:
        raise SystemExit(f"{path}: no outcome column")
    items = outcomes.from_columns(_columns(table, [id_field, "request_id", "row", "outcome", "observed_at"]),
                                  id_field)
    engine = store.make_engine(url, writer=True)
    store.migrate(engine)
    applied = outcomes.submit(engine, items, chunk=LOAD_CHUNK)
    return applied, items, time.perf_counter() - started


def table_text(report: dict) -> str:
    """The figures as a plain table: one line per version (and week), realized / expected."""
    header = f"{'version':<20} {'week':<10} {'decisions':>9} {'outcomes':>8}  " + "  ".join(
        f"{name:>21}" for name in FIGURES)
    lines = [header, " " * 52 + "  ".join(f"{'realized / expected':>21}" for _ in FIGURES)]

    def line(version: str, week: str, entry: dict) -> str:
        cells = []
        for name in FIGURES:
            real, expect = entry["realized"][name], entry["expected"][name]
            cells.append(f"{_num(real):>10} / {_num(expect):<8}")
        return f"{version:<20} {week:<10} {entry['decisions']:>9,} {entry['with_outcome']:>8,}  " + "  ".join(cells)

    for entry in report["by_version"]:
        lines.append(line(entry["version"][:20], "all", entry))
        for week in entry.get("weeks", []):
            lines.append(line("", week["week_start"], week))
    if not report["by_version"]:
        lines.append("(no decisions in the window)")
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def plot(report: dict, path: Path) -> None:
    """Calibration: the outcome rate of each phat bin against its mean phat, per version, beside
    the diagonal a calibrated model follows; the counts under it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 8), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated (expected)")
    width = 0.1 / max(len(report["by_version"]), 1)
    for n, entry in enumerate(report["by_version"]):
        bins = [b for b in entry["realized"]["calibration"] if b["count"]]
        top.plot([b["mean_phat"] for b in bins], [b["outcome_rate"] for b in bins], marker="o",
                 label=f"{entry['version']} realized (AUC {_num(entry['realized']['auc'])}, "
                       f"expected {_num(entry['expected']['auc'])})")
        everything = entry["expected"]["calibration"]
        bottom.bar([b["lower"] + width * (n + 0.5) for b in everything], [b["count"] for b in everything],
                   width=width, label=f"{entry['version']} decisions")
    top.set_ylabel("outcome rate")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_title("Calibration by model version")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("phat")
    bottom.set_ylabel("decisions")
    bottom.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def evaluate(scores: Path, outcome_file: Path, id_column: str) -> dict:
    """A score.py output file against an outcomes file, by the service's rules, in a scratch database."""
    table = _read_table(scores)
    needed = [id_column, "phat", "business_outcome", "model_version", "scored_at"]
    absent = [name for name in needed if name not in table.column_names]
    if absent:
        raise SystemExit(f"{scores}: no column {', '.join(absent)} (score.py writes them; the id column is "
                         "--id-column)")
    columns = _columns(table, needed)
    with tempfile.TemporaryDirectory(prefix="ad-purchase-evaluate-") as folder:
        url = f"sqlite:///{Path(folder) / 'evaluate.sqlite3'}"
        engine = store.make_engine(url, writer=True)
        store.migrate(engine)
        scored = []
        for row, (record_id, phat, chosen, version, at) in enumerate(zip(*(columns[n] for n in needed))):
            scored.append({"decided_at": _naive(at), "model_version": str(version), "phat": float(phat),
                           "business_outcome": int(chosen), "request_id": scores.name, "row": row,
                           "caller": None, "record_id": None if record_id is None else str(record_id)})
        with engine.begin() as connection:
            connection.execute(store.decisions.insert(), scored)
        reported = _read_table(outcome_file)
        items = outcomes.from_columns(_columns(reported, [id_column, "outcome", "observed_at"]), id_column)
        applied = outcomes.submit(engine, items, chunk=LOAD_CHUNK)
        with engine.connect() as connection:
            report = performance.report(performance.load(connection))
        engine.dispose()
    report["outcomes"] = {"received": applied.received, "matched": applied.matched,
                          "unmatched_total": len(applied.unmatched)}
    return report


def _naive(value) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is not None:
        from datetime import timezone
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _when(text: str | None) -> datetime | None:
    return None if text is None else _naive(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ad_purchase.decisions", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load-outcomes", help="load an outcomes file (CSV or Parquet) in bulk")
    load.add_argument("file", type=Path)
    load.add_argument("--database-url")
    load.add_argument("--id-field", default=Settings.from_env().ID_FIELD)
    show = commands.add_parser("report", help="realized and expected figures per model version")
    show.add_argument("--database-url")
    show.add_argument("--since")
    show.add_argument("--until")
    show.add_argument("--version")
    show.add_argument("--by", choices=["week"])
    show.add_argument("--plot", type=Path, help="write a calibration plot (PNG) here")
    show.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    judge = commands.add_parser("evaluate", help="a score.py output file against an outcomes file")
    judge.add_argument("scores", type=Path)
    judge.add_argument("outcomes", type=Path)
    judge.add_argument("--id-column", default=Settings.from_env().ID_FIELD)
    judge.add_argument("--plot", type=Path)
    judge.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    try:
        if args.command == "load-outcomes":
            cpu = time.process_time()
            applied, items, seconds = load_outcomes(args.file, _database_url(args.database_url), args.id_field)
            cpu = max(time.process_time() - cpu, 1e-9)
            print(f"loaded {applied.received:,} outcomes in {seconds:.2f} s ({applied.received / seconds:,.0f} rows/s; "
                  f"{applied.received / cpu:,.0f} per CPU second): "
                  f"{applied.matched:,} matched ({applied.recorded:,} new, {applied.corrected:,} corrected, "
                  f"{applied.unchanged:,} unchanged), {len(applied.unmatched):,} unmatched")
            for position in applied.unmatched[:20]:
                print(f"  unmatched: {items.key(position, args.id_field)}")
            return 0
        if args.command == "report":
            url = _database_url(args.database_url)
            engine = store.make_engine(url)
            with engine.connect() as connection:
                report = performance.compute(connection, _when(args.since), _when(args.until), args.version,
                                             args.by == "week")
        else:
            report = evaluate(args.scores, args.outcomes, args.id_column)
    except outcomes.OutcomeError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        for error in exc.errors[:20]:
            print(f"  row {error['row']}, {error['field']}: {error['message']} ({error.get('value', '')!r})",
                  file=sys.stderr)
        return 2
    if args.json:
        import json
        print(json.dumps(report, indent=1))
    else:
        print(table_text(report))
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0
