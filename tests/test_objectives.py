"""The objective registry: head specs, losses, scores and natural decoders for every name."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multilabel_jax import losses
from multilabel_jax.losses import decoders

C, B = 12, 5
RNG = np.random.default_rng(0)
IDS = np.array([[0, 3, -1], [5, -1, -1], [-1, -1, -1], [1, 2, 11], [7, 7, -1]], np.int32)
EMB = losses.pmi_label_embeddings(RNG.integers(0, C, size=(200, 3)), C, 4)


def build(name):
  options = {"embeddings": EMB} if name == "embedding" else {}
  return losses.get_objective(name, C, **options)


def fake_outputs(objective, scale=1.0):
  return {name: jnp.asarray(RNG.normal(size=(B, spec.width)) * scale, jnp.float32)
          for name, spec in objective.head_outputs.items()}


@pytest.mark.parametrize("name", sorted(losses.OBJECTIVES))
def test_every_objective_trains_scores_and_decodes(name):
  objective = build(name)
  outputs = fake_outputs(objective)
  loss = objective.loss(outputs, IDS)
  assert loss.shape == (B,) and np.isfinite(loss).all()
  grads = jax.grad(lambda o: jnp.sum(objective.loss(o, IDS)))(outputs)
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
  scores = objective.scores(outputs)
  assert scores.shape == (B, C)
  t = decoders.calibrate_average_k(np.asarray(scores), 2.0)
  sets = objective.decode(outputs, t=t)
  assert isinstance(sets, decoders.DecodedSets) and sets.ids.shape[0] == B
  weights = objective.example_weights(IDS)
  expected = np.array([1, 1, 0, 1, 1]) if objective.empty_rows_masked else np.ones(B)
  np.testing.assert_array_equal(weights, expected)


def test_heads_and_priors():
  assert build("sigmoid").head_outputs == {"logits": losses.HeadOutput(C, math.log(1 / (C - 1)))}
  assert build("softmax").head_outputs["logits"].bias_init == pytest.approx(-math.log(C))
  assert set(build("two_head").head_outputs) == {"logits", "multilabel_logits"}
  count = losses.get_objective("count_distribution", C, mean_labels=2.5)
  assert count.head_outputs["log_count"] == losses.HeadOutput(1, math.log(2.5))
  assert build("embedding").head_outputs == {"embedding": losses.HeadOutput(4, 0.0)}
  assert losses.get_objective("sigmoid", 21843, bias_init=-10.0).head_outputs["logits"] == (
      losses.HeadOutput(21843, -10.0))


def test_natural_decoders():
  assert (build("sigmoid").decoder, build("sigmoid").decoder_params) == ("threshold", {"t": 0.5})
  assert build("softmax").decoder == "top_k"
  assert build("two_head").decoder == "average_k"
  assert build("count_distribution").decoder == "by_count"
  assert build("embedding").decoder == "nearest"
  objective = build("count_distribution")
  outputs = fake_outputs(objective)
  outputs["log_count"] = jnp.log(jnp.array([[1.0], [2.0], [0.2], [3.0], [2.6]]))
  np.testing.assert_array_equal(objective.decode(outputs).sizes, [1, 2, 0, 3, 3])
  with pytest.raises(ValueError, match="calibrated average-K"):
    build("two_head").decode(fake_outputs(build("two_head")))


def test_registry_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown objective 'sigmiod'"):
    losses.get_objective("sigmiod", C)
  with pytest.raises(ValueError, match=r"does not take option\(s\) \['gama'\]"):
    losses.get_objective("focal", C, gama=2.0)
  with pytest.raises(ValueError, match="needs head outputs"):
    build("two_head").loss({"logits": jnp.zeros((B, C))}, IDS)
  with pytest.raises(ValueError, match=r"`embeddings` must have shape \(12, d\)"):
    losses.get_objective("embedding", C, embeddings=np.zeros((3, 4)))
