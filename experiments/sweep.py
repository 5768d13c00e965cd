r"""The results sweep behind docs/RESULTS.md: every objective on every dataset, with seeds.

  python -m experiments.sweep --out=results                 # everything not yet stored
  python -m experiments.sweep --out=results --only=hw1k     # runs whose name contains hw1k
  python -m experiments.sweep --out=results --dry_run       # list the runs and their state
  python -m multilabel_jax.studies.report --results=results  # docs/RESULTS.md, plots, README

This file defines the runs; :mod:`multilabel_jax.studies.sweep_runner` trains each in a
scratch workdir and stores its report as ``<out>/<group>/<name>.json``. Runs whose JSON
exists are skipped, so an interrupted sweep resumes where it stopped; delete a file to redo
that run.

Groups (see :func:`plan`):

* ``main``: the ten objectives on debtags and on hashtag_world at 1k, 20k and 100k
  classes (the 100k row uses the fused head where the objective has one), with seeds.
* ``ambiguity``: two_head vs softmax on hashtag_world (1k classes) at three ambiguity
  levels, set by the simulator's synonym group size and feature noise.
* ``baseline``: one-vs-rest logistic regression on debtags' TF-IDF features
  (:mod:`multilabel_jax.studies.ovr_baseline`).
* ``tune``: a small validation search for debtags (sigmoid, 1000 steps, ``DEBTAGS_TUNING``:
  learning rate and model width).
* ``long``: debtags at the full schedule of ``experiments/debtags.py`` (4000 steps) for the
  objectives that lead the shrunk runs (``LONG_OBJECTIVES``), and sigmoid with the variant
  chosen on validation in ``tune`` (``DEBTAGS_TUNED``): claim 5 compares our *best*
  configuration with the baseline, and 300 steps at default settings is not that.

On the 2-core CPU machine the step counts are shrunk (not the class counts); a preset
holds them. ``--preset=accelerator`` has the longer schedules for a GPU/TPU host.

``--preset=tuned`` is the tuned protocol (:mod:`multilabel_jax.studies.tuning`): every
objective's learning rate (``LEARNING_RATES``) and own hyperparameter
(``OBJECTIVE_HYPERPARAMETERS``) chosen on validation (groups ``tuned_tune``,
``tuned_length``, ``tuned_final``, ``tuned_check``, debtags' peers in ``peers``,
``TUNED_PEERS``, and in ``oracle`` each hashtag_world row's oracle mAP with its ties read
both ways, :mod:`multilabel_jax.studies.oracle_ranking`); ``--dry_run`` prints each run's
state and expected time.

  python -m experiments.sweep --out=results --preset=tuned --dry_run
  python -m experiments.sweep --out=results --preset=tuned --only=hw20k

``--only`` takes several names or groups, comma-separated. Sweep processes on one machine
share the runs through ``--claims=DIR`` (each takes the next unclaimed run and waits while
runs it could do next are in flight elsewhere); ``experiments/sweep_on_gpu.sh`` starts N of
them on one GPU, reading batches without tf.data (``--prefetch=0``) where TensorFlow is
missing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Optional

from experiments import debtags, hashtag_pretrain
from multilabel_jax import losses
from multilabel_jax.studies import sweep_runner, tuning
from multilabel_jax.studies.sweep_runner import Run
from multilabel_jax.studies.tuning import Stages

OBJECTIVES = ("sigmoid", "softmax", "embedding", "two_head", "count_distribution", "abs_kl",
              "focal", "asl", "zlpr", "squared_hinge")
# Ambiguity levels of the simulator: (synonym group size, feature noise).
AMBIGUITY = {"low": (1, 0.15), "mid": (2, 0.25), "high": (4, 0.4)}


@dataclasses.dataclass(frozen=True)
class Scale:
  """How long one run of a dataset row trains, and how much it evaluates."""
  steps: int
  seeds: int
  num_classes: int = 0        # hashtag_world only.
  batch_size: int = 256
  num_validation: int = 1000  # hashtag_world only (debtags uses its fixed split).
  num_test: int = 2000        # hashtag_world only.
  num_evals: int = 8          # Periodic validation points (convergence curve).
  widths: tuple = (512,)


# Step counts, seeds and eval sizes per preset; the rows are datasets.
PRESETS: Dict[str, Dict[str, Scale]] = {
    # The shared 2-core CPU machine: steps shrunk to fit about an hour in all.
    "cpu": {
        "debtags": Scale(steps=300, seeds=3, batch_size=128, num_evals=3),
        "hw1k": Scale(steps=150, seeds=3, num_classes=1_000, num_validation=500,
                      num_test=1000, num_evals=3),
        "hw20k": Scale(steps=120, seeds=3, num_classes=20_000, num_validation=500,
                       num_test=1000, num_evals=3),
        "hw100k": Scale(steps=60, seeds=1, num_classes=100_000, num_validation=500,
                        num_test=1000, num_evals=2),
        "ambiguity": Scale(steps=150, seeds=3, num_classes=1_000, num_validation=500,
                           num_test=1000, num_evals=3),
        "debtags_tune": Scale(steps=1000, seeds=1, batch_size=128, num_evals=2),
        "debtags_long": Scale(steps=4000, seeds=2, batch_size=128, num_evals=4),
    },
    "accelerator": {
        "debtags": Scale(steps=8000, seeds=5, batch_size=128),
        "hw1k": Scale(steps=5000, seeds=5, num_classes=1_000),
        "hw20k": Scale(steps=20_000, seeds=5, num_classes=20_000, num_test=10_000),
        "hw100k": Scale(steps=50_000, seeds=3, num_classes=100_000, batch_size=1024,
                        num_test=10_000, num_validation=5000, widths=(1024, 1024)),
        "ambiguity": Scale(steps=5000, seeds=5, num_classes=1_000),
        "debtags_tune": Scale(steps=4000, seeds=1, batch_size=128, num_evals=4),
        "debtags_long": Scale(steps=20_000, seeds=3, batch_size=128, num_evals=10),
    },
    # For tests: seconds in all.
    "tiny": {
        "hw1k": Scale(steps=2, seeds=2, num_classes=48, batch_size=16, num_validation=64,
                      num_test=64, num_evals=2, widths=(16,)),
        "ambiguity": Scale(steps=2, seeds=1, num_classes=48, batch_size=16, num_validation=64,
                           num_test=64, num_evals=2, widths=(16,)),
    },
}
# Run order: one seed of every row first, so a sweep cut short still has every claim's
# evidence at one seed; then the seeds that the verdicts need, the objectives the claims
# compare first. (row, seed, objectives or None for all); "ambiguity" is the ambiguity
# group. Runs not listed here follow at the end.
CLAIM_OBJECTIVES = ("softmax", "sigmoid", "embedding")
LONG_OBJECTIVES = ("sigmoid", "embedding", "softmax")  # The leaders at 300 steps on debtags.
# debtags variants searched on validation (sigmoid; overrides of experiments/debtags.py).
DEBTAGS_TUNING = {
    "lr1e-3": dict(lr=1e-3),  # debtags.py's defaults.
    "lr3e-3": dict(lr=3e-3),
    "lr1e-2": dict(lr=1e-2),
    "wide_lr3e-3": dict(lr=3e-3, embed_dim=512, widths=(1024,), dropout=0.5),
}
DEBTAGS_TUNED = "wide_lr3e-3"  # Highest validation P@1 in the tune group (the report checks it).
ORDER = (("hw1k", 0, None), ("ambiguity", 0, None), ("debtags", 0, None),
         ("baseline", 0, None), ("hw20k", 0, None), ("ambiguity", 1, None), ("hw1k", 1, None),
         ("ambiguity", 2, None), ("hw1k", 2, None), ("hw100k", 0, ("softmax", "sigmoid")),
         ("hw20k", 1, CLAIM_OBJECTIVES), ("hw20k", 2, CLAIM_OBJECTIVES), ("hw100k", 0, None),
         ("debtags", 1, None), ("debtags", 2, None), ("hw20k", 1, None), ("hw20k", 2, None),
         ("debtags_tune", 0, None), ("debtags_long", 0, None))


# The tuned protocol: 3 learning rates spanning 10x, and the hyperparameter each objective
# is known to need (2-3 values); see multilabel_jax.studies.tuning.
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
OBJECTIVE_HYPERPARAMETERS = {"asl": ("gamma_neg", (2.0, 4.0)), "focal": ("gamma", (1.0, 2.0)),
                             "two_head": ("weight", (0.5, 1.0, 2.0)),
                             "embedding": ("dim", (64, 128, 256))}
_HW = dict(num_validation=1000, num_test=2000, num_evals=10, widths=(256,))  # The main job's.
TUNED_PRESETS: Dict[str, Dict[str, Stages]] = {
    "tuned": {  # The 2-core CPU.
        "hw20k": Stages(tune=Scale(steps=2400, seeds=1, num_classes=20_000, **_HW),
                        final=Scale(steps=2400, seeds=3, num_classes=20_000, **_HW),
                        note="tuned at the final length: tuning at 600 and at 1,200 steps "
                        "chose another learning rate than 2,400 steps"),
        "debtags": Stages(tune=Scale(steps=940, seeds=1, num_evals=10),
                          final=Scale(steps=940, seeds=3, num_evals=10),
                          # The wide path's rate; the MLP's rates follow in proportion.
                          learning_rates=(0.3, 1.0, 3.0),
                          note="tuned at the final length: tuning at 235 steps chose the "
                          "wide rate 10 for squared_hinge, 940 steps chose 1"),
        "hw1k": Stages(final=Scale(steps=2000, seeds=3, num_classes=1_000, **_HW),
                       choices_from="hw20k"),
        "ambiguity_low": Stages(final=Scale(steps=2000, seeds=3, num_classes=1_000, **_HW),
                                choices_from="hw20k", objectives=("softmax", "two_head")),
        "ambiguity_high": Stages(final=Scale(steps=2000, seeds=3, num_classes=1_000, **_HW),
                                 choices_from="hw20k", objectives=("softmax", "two_head")),
        "hw100k": Stages(
            final=Scale(steps=300, seeds=3, num_classes=100_000, num_validation=500,
                        num_test=1000, num_evals=10, widths=(256,)),
            choices_from="hw20k",
            objectives=("sigmoid", "softmax", "embedding", "two_head", "count_distribution"),
            note="budget-limited: 300 steps, about 2 s a step here"),
    },
    "tuned_tiny": {  # For tests: seconds in all.
        "hw1k": Stages(tune=Scale(steps=2, seeds=1, num_classes=48, batch_size=16,
                                  num_validation=64, num_test=64, num_evals=2, widths=(16,)),
                       final=Scale(steps=2, seeds=2, num_classes=48, batch_size=16,
                                   num_validation=64, num_test=64, num_evals=2, widths=(16,)),
                       objectives=("softmax", "asl"), length_check="softmax"),
        "ambiguity_low": Stages(final=Scale(steps=2, seeds=1, num_classes=48, batch_size=16,
                                            num_validation=64, num_test=64, num_evals=2,
                                            widths=(16,)),
                                choices_from="hw1k", objectives=("softmax",)),
    },
}
# Wall seconds of one run here, (fixed, per step), until stored runs of the row replace it:
# from the stored cpu-preset runs and the shipped debtags runs (docs/RESULTS.md set-up).
COST_MODEL = {"hw20k": (40.0, 0.28), "hw1k": (30.0, 0.06), "ambiguity_low": (30.0, 0.06),
              "ambiguity_high": (30.0, 0.06), "hw100k": (130.0, 2.0),
              "debtags": (60.0, 0.55)}


def _finish(c, scale: Scale, seed: int):
  """Fields shared by every sweep run: seed, schedule, periodic eval, few checkpoints."""
  c.seed = seed
  c.total_steps = scale.steps
  c.batch_size = scale.batch_size
  c.optimizer.warmup_steps = max(1, min(c.optimizer.warmup_steps, scale.steps // 10))
  c.eval_every = max(1, scale.steps // scale.num_evals)
  c.log_every = c.eval_every
  c.checkpoint_every = scale.steps
  c.keep_checkpoints = 1
  c.async_checkpoints = False
  return c


def hashtag_config(objective: str, seed: int, scale: Scale, *, group_size: int = 2,
                   noise: float = 0.25, oracle: bool = True):
  """hashtag_world (world seed fixed at 0: seeds vary the init and the data order)."""
  c = hashtag_pretrain.get_config(f"loss={objective}")
  c.data.options.update(num_classes=scale.num_classes, num_validation=scale.num_validation,
                        num_test=scale.num_test, group_size=group_size, noise=noise, seed=0)
  c.model_options = dict(widths=tuple(scale.widths))
  c.optimizer.lr = 2e-3  # The shrunk presets' shared rate; the tuned protocol sets its own.
  c.eval.validation_examples = scale.num_validation
  c.data.stats_examples = min(c.data.stats_examples, 10 * scale.num_validation)
  c.eval.oracle = oracle
  if objective == "embedding" and scale.widths[0] < 128:
    c.objective_options = dict(dim=8)
  return _finish(c, scale, seed)


def debtags_config(objective: str, seed: int, scale: Scale, variant: Optional[dict] = None):
  """experiments/debtags.py, with a ``DEBTAGS_TUNING`` variant's overrides if given."""
  c = debtags.get_config(f"loss={objective}")
  variant = dict(variant or {})
  if "lr" in variant:
    c.optimizer.lr = variant.pop("lr")
    if c.optimizer.deep_lr_with_wide:  # The MLP's rate, with or without the wide path.
      c.optimizer.deep_lr_with_wide = c.optimizer.lr
  c.model_options.update(variant)
  return _finish(c, scale, seed)


def _world(row: str) -> dict:
  """The hashtag_world options of a tuned row: ``ambiguity_<level>`` or the "mid" world."""
  group_size, noise = AMBIGUITY[row.split("_")[1] if row.startswith("ambiguity") else "mid"]
  return dict(group_size=group_size, noise=noise)


def _oracle(row: str, scale: Scale) -> dict:
  """The oracle's test mAP of a hashtag_world row, ties read both ways, on the test rows of
  the row's final runs (only the config's data part is read: any objective will do)."""
  from multilabel_jax.studies import oracle_ranking  # pylint: disable=g-import-not-at-top
  return oracle_ranking.evaluate(hashtag_config("softmax", 0, scale, **_world(row)))


def tuned_config(row: str, objective: str, seed: int, scale: Scale, setting: tuning.Setting,
                 stage: str):
  """A run of the tuned protocol: the row's config with the setting's learning rate and
  objective options. The oracle is evaluated in every stage, so a row tuned at its final
  length takes its chosen tune run as the final seed 0 (``tuning.plan``). A setting that
  diverges skips its non-finite updates (counted in the report) and loses on validation,
  instead of stopping the sweep."""
  del stage  # The same config in every stage.
  if row == "debtags":  # Its wide path carries the ranking: every rate scales with its own.
    c = debtags_config(objective, seed, scale)
    factor = setting.lr / c.optimizer.wide_lr
    c.optimizer.wide_lr = setting.lr
    c.optimizer.lr *= factor
    c.optimizer.deep_lr_with_wide *= factor
  else:
    c = hashtag_config(objective, seed, scale, **_world(row))
    c.optimizer.lr = setting.lr
  c.objective_options.update(dict(setting.options))
  c.nonfinite = "skip"
  return c


# The peers of the tuned debtags row (multilabel_jax.studies.peers, the `results` extra):
# the same split and bag of words as experiments/debtags.py; (name, expected seconds here).
TUNED_PEERS = (("libmultilabel_1vsrest", 60.0), ("libmultilabel_tree", 60.0),
               ("omikuji", 300.0))


def _peer(name: str) -> dict:
  from multilabel_jax.studies import peers  # pylint: disable=g-import-not-at-top
  return peers.fit_config("experiments/debtags.py", name)


def plan(preset: str = "cpu", out=None) -> List[Run]:
  """Every run of a preset, in the order the sweep runs them (see ``ORDER``); the tuned
  presets read the stored tune runs in ``out`` to plan the runs that depend on them."""
  if preset in TUNED_PRESETS:
    runs = tuning.plan(TUNED_PRESETS[preset], out or "results", objectives=OBJECTIVES,
                       learning_rates=LEARNING_RATES,
                       hyperparameters=OBJECTIVE_HYPERPARAMETERS, make_config=tuned_config,
                       cost_model=COST_MODEL, run_type=Run)
    runs += [Run("oracle", f"{row}_oracle", meta={"row": row}, estimate_s=60.0,
                 fit=functools.partial(_oracle, row, stages.final))
             for row, stages in TUNED_PRESETS[preset].items() if row != "debtags"]
    if "debtags" in TUNED_PRESETS[preset]:
      runs += [Run("peers", f"debtags_{name}", meta={"dataset": "debtags", "peer": name},
                   estimate_s=seconds, fit=functools.partial(_peer, name))
               for name, seconds in TUNED_PEERS]
    return runs
  if preset not in PRESETS:
    raise ValueError(f"`preset` must be one of {sorted(PRESETS | TUNED_PRESETS)}, got "
                     f"{preset!r}.")
  assert set(OBJECTIVES) == set(losses.OBJECTIVES), "the sweep must cover every objective"
  scales = PRESETS[preset]
  order = [(r, s, o) for r, s, o in ORDER
           if r in scales or (r == "baseline" and "debtags" in scales)]
  order += [(r, s, None) for r in scales for s in range(scales[r].seeds)]
  runs, names = [], set()

  def add(run):
    if run.name not in names:
      names.add(run.name)
      runs.append(run)

  for row, seed, objectives in order:
    if row == "baseline":
      add(Run("baseline", "debtags_ovr_logreg", None, {"dataset": "debtags"}))
      continue
    scale = scales[row]
    if seed >= scale.seeds:
      continue
    if row == "ambiguity":
      for level, (group_size, noise) in AMBIGUITY.items():
        for objective in ("softmax", "two_head"):
          make = functools.partial(hashtag_config, objective, seed, scale,
                                   group_size=group_size, noise=noise, oracle=False)
          add(Run("ambiguity", f"{level}_{objective}_s{seed}", make,
                  {"level": level, "group_size": group_size, "noise": noise,
                   "objective": objective, "seed": seed}))
      continue
    if row == "debtags_tune":
      for name, variant in DEBTAGS_TUNING.items():
        add(Run("tune", f"debtags_tune_{name}_s{seed}",
                functools.partial(debtags_config, "sigmoid", seed, scale, variant),
                {"dataset": "debtags", "objective": "sigmoid", "variant": name, "seed": seed}))
      continue
    if row == "debtags_long":
      for objective in objectives or LONG_OBJECTIVES:
        add(Run("long", f"debtags_long_{objective}_s{seed}",
                functools.partial(debtags_config, objective, seed, scale),
                {"dataset": "debtags", "objective": objective, "seed": seed}))
      add(Run("long", f"debtags_long_sigmoid_{DEBTAGS_TUNED}_s{seed}",
              functools.partial(debtags_config, "sigmoid", seed, scale,
                                DEBTAGS_TUNING[DEBTAGS_TUNED]),
              {"dataset": "debtags", "objective": f"sigmoid ({DEBTAGS_TUNED})", "seed": seed}))
      continue
    for objective in objectives or OBJECTIVES:
      if row == "debtags":
        make = functools.partial(debtags_config, objective, seed, scale)
      else:  # The oracle does not depend on the objective: evaluate it once per row.
        make = functools.partial(hashtag_config, objective, seed, scale,
                                 oracle=objective == "softmax" and seed == 0)
      add(Run("main", f"{row}_{objective}_s{seed}", make,
              {"dataset": row, "objective": objective, "seed": seed}))
  return runs


def run_sweep(out, *, preset: str = "cpu", **kwargs) -> List[str]:
  """Runs every run of ``plan(preset)`` whose result is missing (see
  :func:`multilabel_jax.studies.sweep_runner.run_sweep`). Returns the names it ran."""
  return sweep_runner.run_sweep(plan(preset, out), out, preset=preset, **kwargs)


if __name__ == "__main__":
  sweep_runner.main(plan, list(PRESETS) + list(TUNED_PRESETS))
