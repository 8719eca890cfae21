"""The model report train.py writes beside the artifacts: four PNG charts and a markdown summary."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from ..resources import Profile  # noqa: E402

REPORT_DIR = "report"
LIFT_BINS = 20          # 5% of rows a bin, as in the published lift table
CALIBRATION_BINS = 10
_PNG = {"metadata": {"Software": None}}  # no version stamp: same model, same bytes


def lift_table(target: np.ndarray, phat: np.ndarray, bins: int = LIFT_BINS) -> list[dict]:
    """Rows sorted by predicted probability, cut into equal-count bins, lowest first."""
    order = np.argsort(phat, kind="stable")
    table = []
    for number, rows in enumerate(np.array_split(order, bins), start=1):
        table.append({"bin": number, "rows": int(len(rows)), "buyers": int(target[rows].sum()),
                      "observed_rate": float(target[rows].mean()), "mean_phat": float(phat[rows].mean())})
    return table


def calibration_table(target: np.ndarray, phat: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Observed purchase rate against mean predicted probability in equal-width bins."""
    index = np.minimum((phat * bins).astype(int), bins - 1)
    return [{"mean_phat": float(phat[index == b].mean()), "observed_rate": float(target[index == b].mean()),
             "rows": int((index == b).sum())} for b in range(bins) if (index == b).any()]


def _roc_chart(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (target, phat, auc) in curves.items():
        fpr, tpr, _ = roc_curve(target, phat)
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, **_PNG)
    plt.close(fig)


def _lift_chart(path: Path, table: list[dict], cutoff: float) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [row["bin"] for row in table]
    ax.bar(bins, [row["observed_rate"] for row in table], color="tab:blue", label="observed purchase rate")
    ax.plot(bins, [row["mean_phat"] for row in table], color="tab:orange", marker="o", label="mean phat")
    top = next((row["bin"] for row in table if row["mean_phat"] >= cutoff), None)
    if top is not None:
        ax.axvline(top - 0.5, color="grey", linestyle="--", label="business cutoff (top 25%)")
    ax.set(xlabel="5% bin of predicted probability (lowest to highest)", ylabel="rate",
           title="Lift: observed purchase rate per 5% bin", xticks=bins)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, **_PNG)
    plt.close(fig)


def _calibration_chart(path: Path, table: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.plot([r["mean_phat"] for r in table], [r["observed_rate"] for r in table], marker="o", label="held-out rows")
    ax.set(xlabel="mean predicted probability", ylabel="observed purchase rate", title="Calibration")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, **_PNG)
    plt.close(fig)


def _coefficient_chart(path: Path, coefficients: dict, published: dict) -> None:
    names = sorted(coefficients, key=lambda n: coefficients[n]["coef"])
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.errorbar([coefficients[n]["coef"] for n in names], y - 0.15,
                xerr=[2 * coefficients[n]["std_err"] for n in names], fmt="o", label="this model (±2 SE)")
    shared = [n for n in names if n in published]
    ax.errorbar([published[n]["coef"] for n in shared], [y[names.index(n)] + 0.15 for n in shared],
                xerr=[2 * published[n]["std_err"] for n in shared], fmt="s", label="published (±2 SE)")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set(yticks=y, yticklabels=names, xlabel="coefficient (log-odds per unit of model input)",
           title="Coefficients")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, **_PNG)
    plt.close(fig)


def write_report(folder: Path, outcome, metadata: dict, profile: Profile | None = None) -> Path:
    """Charts and REPORT.md in `folder`/report; returns that folder."""
    profile = profile or Profile.load()
    out = Path(folder) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    model = outcome.model
    train_target = outcome.split_train_target
    _roc_chart(out / "roc.png", {
        "held-out": (outcome.held_out_target, outcome.held_out_phat, outcome.held_out_auc),
        "training split": (train_target, outcome.split_train_phat,
                           float(roc_auc_score(train_target, outcome.split_train_phat))),
    })
    lift = lift_table(outcome.all_target, model.train_phat)
    _lift_chart(out / "lift.png", lift, metadata["cutoff"])
    calibration = calibration_table(outcome.held_out_target, outcome.held_out_phat)
    _calibration_chart(out / "calibration.png", calibration)
    _coefficient_chart(out / "coefficients.png", metadata["coefficients"], profile.coefficients)
    (out / "REPORT.md").write_text(_summary(metadata, lift, profile))
    return out


def _summary(metadata: dict, lift: list[dict], profile: Profile) -> str:
    published = profile.coefficients
    shared = [n for n in metadata["features"] if n in published]
    worst = max(abs(metadata["coefficients"][n]["coef"] - published[n]["coef"]) / published[n]["std_err"]
                for n in shared) if shared else float("nan")
    lines = [
        f"# Model report: {metadata['model_name']} {metadata['model_version']}",
        "",
        f"Trained {metadata['trained_at']} on {metadata['rows']:,} rows from `{metadata['training_data']}`.",
        "",
        "| metric | this model | published |",
        "|---|---|---|",
        f"| held-out AUC | {metadata['auc']['held_out']:.4f} | {profile.auc:.4f} |",
        f"| AUC of the all-rows refit | {metadata['auc']['all_rows_refit']:.4f} | "
        f"{profile.raw['published_model']['auc']['all_rows_refit']:.4f} |",
        f"| buyers share | {metadata['class_balance']['1'] / metadata['rows']:.4f} | "
        f"{profile.raw['target']['counts']['1'] / profile.raw['rows']:.4f} |",
        f"| cutoff (75th percentile of phat) | {metadata['cutoff']:.4f} | |",
        f"| published features selected | {len(shared)} of {len(published)} | |",
        f"| largest gap to a published coefficient | {worst:.2f} standard errors | |",
        "",
        "![ROC curve](roc.png) ![Calibration](calibration.png)",
        "",
        "![Lift](lift.png)",
        "",
        "![Coefficients](coefficients.png)",
        "",
        "## Lift table (all rows, final model)",
        "",
        "| bin | rows | buyers | observed rate | mean phat |",
        "|---|---|---|---|---|",
        *[f"| {r['bin']} | {r['rows']} | {r['buyers']} | {r['observed_rate']:.3f} | {r['mean_phat']:.3f} |"
          for r in lift],
        "",
    ]
    return "\n".join(lines)
