"""Objectives own their behaviour: one registered from outside the package trains and
evaluates end to end, and nothing outside ``losses/`` asks an objective its name."""

import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multilabel_jax import labels as labels_lib
from multilabel_jax import inference, losses, train
from multilabel_jax.losses import objectives as objectives_lib
from tests.train_util import tiny_config

PACKAGE = pathlib.Path(losses.__file__).resolve().parents[1]


def brier_objective(num_classes, *, weight=1.0, data=None):
  """Squared error of sigmoid probabilities (Brier score), a dense-only objective that the
  library does not ship."""
  mean = data.mean_labels if data is not None else 1.0
  p = min(mean / num_classes, 0.5)

  def loss(outputs, label_ids, where):
    probs = jax.nn.sigmoid(outputs["logits"].astype(jnp.float32))
    dense = labels_lib.ids_to_dense(label_ids, num_classes)  # The loop passes padded ids.
    per_example = weight * jnp.sum((probs - dense) ** 2, axis=-1)
    return per_example if where is None else jnp.where(where, per_example, 0.0)

  return losses.Objective(
      name="brier", head_outputs={"logits": losses.HeadOutput(num_classes, math.log(p / (1 - p)))},
      loss_fn=loss, scores_fn=lambda o: jax.nn.sigmoid(o["logits"].astype(jnp.float32)),
      decoder="threshold", decoder_params={"t": 0.5}, options={"weight": weight})


@pytest.fixture
def brier():
  losses.register_objective("brier", brier_objective)
  yield
  del objectives_lib.OBJECTIVES["brier"]


def test_an_objective_registered_from_outside_trains_and_evaluates(tmp_path, brier):
  del brier
  config = tiny_config("sigmoid")
  config.objective = "brier"
  config.objective_options = dict(weight=2.0)
  report = train.train_and_evaluate(config, tmp_path)
  assert report["objective"] == "brier" and report["natural_decoder"] == "threshold_0.5"
  assert {"top_1", "threshold_0.5", "average_k", "class_thresholds"} <= set(
      report["test"]["decoders"])
  assert 0 < report["test"]["ranking"]["precision_at_1"] <= 1
  assert 0 < report["test"]["ranking"]["map"] <= 1
  assert report["train"]["final_loss"] > 0
  predictor = inference.Predictor.from_workdir(tmp_path)  # Prediction asks no name either.
  assert predictor.objective.name == "brier" and predictor.decoder == report["predict"]["decoder"]
  assert len(predictor.top_k({"features": np.zeros((3, 16), np.float32)}, k=2)[2]["labels"]) == 2
  config.objective_options = dict(wieght=2.0)
  with pytest.raises(ValueError, match=r"objective 'brier' does not take option\(s\) \['wieght'\]"):
    train.train_and_evaluate(config, tmp_path / "bad")
  config.objective_options = dict()
  config.head.fused = "on"
  with pytest.raises(ValueError, match="objective 'brier' has no fused head"):
    train.train_and_evaluate(config, tmp_path / "fused")


def test_registering_twice_needs_replace(brier):
  del brier
  with pytest.raises(ValueError, match="already registered"):
    losses.register_objective("brier", brier_objective)
  losses.register_objective("brier", brier_objective, replace=True)


def test_no_code_outside_losses_branches_on_an_objective_name():
  pattern = re.compile(r"(objective\.name|objective_name|\bname)\s*(==|!=|\bin\b|\bnot in\b)\s*"
                       r"[\(\[\"']")
  names = "|".join(re.escape(n) for n in losses.OBJECTIVES)
  literal = re.compile(rf"[\"']({names})[\"']")
  offenders = []
  for path in PACKAGE.rglob("*.py"):
    rel = path.relative_to(PACKAGE)
    if rel.parts[0] in ("losses", "studies"):  # The registry; the study compares objectives.
      continue
    for number, line in enumerate(path.read_text().splitlines(), 1):
      if "objective" in line and (pattern.search(line) or (literal.search(line) and (
          "==" in line or " in (" in line))):
        offenders.append(f"{rel}:{number}: {line.strip()}")
  assert not offenders, "\n".join(offenders)
