"""The PNG plots of docs/RESULTS.md (matplotlib, Agg backend), from the stored reports."""

from __future__ import annotations

import pathlib
from typing import Dict

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from experiments import sweep  # pylint: disable=wrong-import-position
from multilabel_jax.studies import stats as rs  # pylint: disable=wrong-import-position


def _save(fig, path) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return str(path)


def _panels(n):
  n = max(n, 1)
  fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
  return fig, axes[0]


def convergence(rep, path) -> str:
  """Validation mAP (P@1 on the fused 100k path) vs step, per objective, seed mean."""
  rows = rep.rows()
  fig, axes = _panels(len(rows))
  for ax, row in zip(axes, rows):
    key = None
    for obj in sweep.OBJECTIVES:
      runs = rep.runs(row, obj)
      if not runs:
        continue
      key = rs.history_metric(next(iter(runs.values())))
      steps = [h["step"] for h in next(iter(runs.values()))["validation_history"]]
      values = np.array([[h.get(key, np.nan) for h in r["validation_history"]]
                         for r in runs.values() if len(r["validation_history"]) == len(steps)])
      ax.plot(steps, values.mean(0), marker="o", ms=3, label=obj)
    ax.set_title(row)
    ax.set_xlabel("training step")
    ax.set_ylabel(key or "")
  axes[0].legend(fontsize=7)
  return _save(fig, path)


def pr_curves(rep, path) -> str:
  """Micro precision-recall curves of the scores (seed 0), with each decoder's operating
  point for the softmax and two-head models."""
  rows = [r for r in rep.rows() if r != "hw100k"]
  fig, axes = _panels(max(len(rows), 1))
  markers = dict(zip(["top_1", "top_3", "top_5", "threshold_0.5", "average_k", "average_k_1",
                      "average_k_3", "average_k_5", "class_thresholds", "by_count"],
                     "ov^sDPX*hp"))
  for ax, row in zip(axes, rows):
    for obj in sweep.OBJECTIVES:
      runs = rep.runs(row, obj)
      if not runs:
        continue
      r = runs[min(runs)]
      curve = r["test"].get("pr_curve")
      if curve:
        line, = ax.plot(curve["recall"], curve["precision"], lw=1, label=obj)
        if obj in ("softmax", "two_head", "count_distribution"):
          for dec, m in r["test"]["decoders"].items():
            ax.scatter(m["recall_micro"], m["precision_micro"], color=line.get_color(),
                       marker=markers.get(dec, "."), s=28, zorder=3)
    ax.set(title=f"{row} (markers: decoders of softmax, two_head, count)",
           xlabel="micro recall", ylabel="micro precision", xlim=(0, 1), ylim=(0, 1))
    ax.title.set_fontsize(8)
  handles = [plt.Line2D([], [], ls="", marker=m, color="k", label=d) for d, m in markers.items()]
  axes[0].legend(fontsize=6, loc="upper right")
  axes[-1].legend(handles=handles, fontsize=6, loc="upper right")
  return _save(fig, path)


def set_sizes(rep, path) -> str:
  """Distribution of set sizes per decoder (softmax and count models, seed 0), against the
  true label counts."""
  rows = [r for r in rep.rows() if r != "hw100k"]
  fig, axes = _panels(max(len(rows), 1))
  shown = [("softmax", "top_3"), ("softmax", "threshold_0.5"), ("softmax", "average_k"),
           ("softmax", "class_thresholds"), ("two_head", "average_k"),
           ("count_distribution", "by_count")]
  for ax, row in zip(axes, rows):
    labels_drawn = False
    for obj, dec in shown:
      runs = rep.runs(row, obj)
      if not runs:
        continue
      counts = runs[min(runs)]["test"].get("set_size_counts", {})
      if not labels_drawn and "labels" in counts:
        c = np.asarray(counts["labels"], float)
        ax.bar(np.arange(len(c)), c / c.sum(), color="0.85", label="true labels")
        labels_drawn = True
      if dec in counts:
        c = np.asarray(counts[dec], float)
        ax.step(np.arange(len(c)), c / c.sum(), where="mid", label=f"{obj}: {dec}")
    ax.set(title=row, xlabel="set size", ylabel="fraction of test examples", xlim=(-0.5, 15))
  axes[0].legend(fontsize=6)
  return _save(fig, path)


def _gain_panel(ax, runs_of, rows) -> None:
  """mAP gain over sigmoid per frequency bucket, on the first of ``rows`` with sigmoid runs
  (``runs_of(row, objective) -> {seed: report}``), paired by seed."""
  row = next((r for r in rows if runs_of(r, "sigmoid")), None)
  if not row:
    return
  base = runs_of(row, "sigmoid")
  for obj in sweep.OBJECTIVES:
    runs = runs_of(row, obj)
    if obj == "sigmoid" or not runs:
      continue
    nb = len(rs.bucket(next(iter(runs.values())), "map"))
    gains = [rs.paired(runs, base, lambda r, i=i: rs.bucket(r, "map")[i]).mean
             for i in range(nb)]
    ax.plot(range(nb), gains, marker="o", label=obj)
  ax.axhline(0, color="k", lw=0.5)
  ax.set(title=f"{row}: mAP minus sigmoid's, per bucket", xlabel="frequency bucket "
         "(0 = rare)", ylabel="mAP gain")
  ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.legend(fontsize=6)


def bucket_gain(rep, path) -> str:
  """Left: mAP gain over sigmoid per frequency bucket (largest row with mAP). Right: recall
  gain of two-head over softmax average-K sets (K = 3) per bucket, by ambiguity level."""
  fig, axes = _panels(2)
  _gain_panel(axes[0], rep.runs, ("hw20k", "hw1k", "debtags"))
  for level in sweep.AMBIGUITY:
    a, b = rep.amb.get((level, "two_head"), {}), rep.amb.get((level, "softmax"), {})
    if not a or not b:
      continue
    nb = len(rs.bucket(next(iter(a.values())), "recall_micro", "average_k_3"))
    gains = [rs.paired(a, b, lambda r, i=i: rs.bucket(r, "recall_micro", "average_k_3")[i])
             for i in range(nb)]
    axes[1].errorbar(range(nb), [g.mean for g in gains],
                     yerr=[0 if np.isnan(g.sd) else g.sd for g in gains], marker="o",
                     capsize=3, label=f"ambiguity {level} {sweep.AMBIGUITY[level]}")
  axes[1].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  axes[1].axhline(0, color="k", lw=0.5)
  axes[1].set(title="two_head minus softmax: recall of average-K sets (K=3)",
              xlabel="frequency bucket (0 = rare)", ylabel="recall gain")
  axes[1].title.set_fontsize(9)
  if axes[1].get_legend_handles_labels()[0]:
    axes[1].legend(fontsize=6)
  return _save(fig, path)


def learning_curves(t, path) -> str:
  """Tuned runs: validation P@1 vs step per objective (seed mean), per row; the oracle's test
  P@1 dashed where the row has one."""
  rows = t.rows()
  fig, axes = _panels(len(rows))
  for ax, row in zip(axes, rows):
    for obj in t.objectives_of(row):
      runs = list(t.runs(row, obj).values())
      steps = [h["step"] for h in runs[0]["validation_history"]]
      values = np.array([[h["val_precision_at_1"] for h in r["validation_history"]]
                         for r in runs if len(r["validation_history"]) == len(steps)])
      ax.plot(steps, values.mean(0), marker="o", ms=2, lw=1, label=obj)
    oracle = t.oracle(row)
    if oracle:
      ax.axhline(oracle["ranking"]["precision_at_1"], color="k", ls="--", lw=1,
                 label="oracle (test)")
    ax.set(title=row, xlabel="training step", ylabel="validation P@1")
  axes[0].legend(fontsize=6)
  return _save(fig, path)


def decoder_regret(t, path) -> str:
  """Tuned runs: each decoder's samples-F1 regret against the Bayes-optimal sets, per
  objective (seed mean), one heat map per row with an oracle."""
  rows = [r for r in t.rows() if t.oracle(r)]
  fig, axes = plt.subplots(1, max(len(rows), 1), figsize=(6.5 * max(len(rows), 1), 4.2),
                           squeeze=False)
  for ax, row in zip(axes[0], rows):
    objs = [o for o in t.objectives_of(row)
            if all("against_oracle" in r for r in t.runs(row, o).values())]
    decoders = sorted({d for o in objs for r in t.runs(row, o).values()
                       for d in r["against_oracle"]["regret_f1_samples"]})
    grid = np.array([[rs.stat(t.runs(row, o), lambda r, d=d: r["against_oracle"][
        "regret_f1_samples"].get(d, np.nan)).mean for d in decoders] for o in objs])
    image = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    middle = np.nanmean(grid)
    for (i, j), v in np.ndenumerate(grid):  # Dark text on the light (low-regret) cells.
      if not np.isnan(v):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                color="k" if v < middle else "w")
    ax.set_xticks(range(len(decoders)), decoders, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(objs)), objs, fontsize=7)
    ax.set_title(f"{row}: samples-F1 regret against the Bayes-optimal sets", fontsize=9)
    fig.colorbar(image, ax=ax)
  return _save(fig, path)


def reliability(t, path) -> str:
  """Tuned runs (seed 0): mean oracle target vs mean score per score bin, per objective
  whose scores read as probabilities; the diagonal is calibration."""
  rows = [r for r in t.rows() if t.oracle(r)]
  fig, axes = _panels(max(len(rows), 1))
  for ax, row in zip(axes, rows):
    for obj in t.objectives_of(row):
      runs = t.runs(row, obj)
      rel = runs[min(runs)].get("reliability")
      if not rel:
        continue
      pts = [(s, o) for s, o in zip(rel["score"], rel["oracle"]) if s is not None]
      ax.plot(*zip(*pts), marker="o", ms=3, lw=1,
              label=f"{obj} ({rel['reads_as']}, ECE {rel['ece']:.3f})")
    ax.plot([1e-4, 1], [1e-4, 1], color="k", lw=0.5)
    ax.set(xscale="log", yscale="log", title=f"{row}: reliability against the oracle",
           xlabel="mean score in bin", ylabel="mean oracle marginal (or share)")
    ax.legend(fontsize=5)
  return _save(fig, path)


def draw_all(rep, docs_dir, tuned=None) -> Dict[str, str]:
  """Draws every plot into ``docs_dir``; returns ``{title: path}``. ``tuned``: a
  :class:`tuned_results.Tuned`; its plots are drawn once it has final runs."""
  docs = pathlib.Path(docs_dir)
  plots = {}
  if tuned is not None and tuned.rows():
    plots.update({
        "Tuned runs: validation P@1 vs training step, per objective": learning_curves(
            tuned, docs / "results_tuned_learning_curves.png"),
        "Tuned runs: decoder regret against the Bayes-optimal sets": decoder_regret(
            tuned, docs / "results_tuned_decoder_regret.png"),
        "Tuned runs: reliability of the scores against the oracle marginals": reliability(
            tuned, docs / "results_tuned_reliability.png"),
        "Tuned runs: mAP gain over sigmoid per class-frequency bucket": _save_gain(
            tuned, docs / "results_tuned_bucket_gain.png"),
    })
  if not rep.rows():  # No runs of the shrunk sweep.
    return plots
  return plots | {
      "Validation metric vs training step, per objective": convergence(
          rep, docs / "results_convergence.png"),
      "Precision-recall of the scores and the decoders' operating points": pr_curves(
          rep, docs / "results_precision_recall.png"),
      "Distribution of set sizes": set_sizes(rep, docs / "results_set_sizes.png"),
      "Gain per class-frequency bucket": bucket_gain(rep, docs / "results_bucket_gain.png"),
  }


def _save_gain(t, path) -> str:
  fig, axes = _panels(1)
  _gain_panel(axes[0], t.runs, ("hw20k", "hw1k", "hw100k", "debtags"))
  return _save(fig, path)
