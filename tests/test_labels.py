"""Label formats: converters, validation and the helpers every loss relies on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from multilabel_jax import labels as labels_lib


@st.composite
def id_batches(draw):
  b, l, c = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 9))
  ids = draw(st.lists(st.lists(st.integers(-1, c - 1), min_size=l, max_size=l),
                      min_size=b, max_size=b))
  return np.array(ids, np.int32), c


def np_dense(ids, c):
  out = np.zeros((len(ids), c), np.float32)
  for b, row in enumerate(ids):
    for i in row:
      if i >= 0:
        out[b, i] = 1
  return out


@given(id_batches())
def test_ids_to_dense_matches_numpy_and_round_trips(batch):
  ids, c = batch
  dense = np.asarray(labels_lib.ids_to_dense(ids, c))
  np.testing.assert_array_equal(dense, np_dense(ids, c))
  back, dropped = labels_lib.dense_to_ids(dense, ids.shape[1])
  np.testing.assert_array_equal(np.asarray(labels_lib.ids_to_dense(back, c)), dense)
  np.testing.assert_array_equal(dropped, 0)
  np.testing.assert_array_equal(labels_lib.num_positives(ids), dense.sum(1))
  np.testing.assert_array_equal(labels_lib.unique_mask(ids).sum(1), dense.sum(1))


def test_dense_to_ids_reports_truncation():
  dense = np.array([[1, 1, 1, 0], [0, 0.5, 0, 2]], np.float32)
  ids, dropped = labels_lib.dense_to_ids(dense, 2)
  np.testing.assert_array_equal(ids, [[0, 1], [3, 1]])  # Heaviest first, ties by class.
  np.testing.assert_array_equal(dropped, [1, 0])
  with pytest.raises(ValueError, match="row 0 has 3 labels, more than max_labels=2"):
    labels_lib.dense_to_ids(dense, 2, on_overflow="raise")
  jitted = jax.jit(lambda d: labels_lib.dense_to_ids(d, 2))(dense)
  np.testing.assert_array_equal(jitted[1], [1, 0])
  ids, dropped = labels_lib.dense_to_ids(dense, 6)
  assert ids.shape == (2, 6) and (np.asarray(ids)[:, 4:] == -1).all()


def test_validate_ids_names_row_and_value():
  labels_lib.validate_ids(np.array([[0, 3, -1]]), 4)
  with pytest.raises(ValueError, match="row 1, column 0 holds id 7"):
    labels_lib.validate_ids(np.array([[0, 1], [7, -1]]), 5)
  with pytest.raises(ValueError, match="holds id -2"):
    labels_lib.validate_ids(np.array([[-2]]), 5)
  with pytest.raises(ValueError, match="integer dtype, got float32"):
    labels_lib.validate_ids(np.array([[0.0]], np.float32), 5)
  with pytest.raises(ValueError, match="rank 2"):
    labels_lib.validate_ids(np.array([0, 1]), 5)


def test_converters_reject_the_wrong_format():
  with pytest.raises(ValueError, match="`ids` must be integer ids"):
    labels_lib.ids_to_dense(np.array([[0.0, 1.0]], np.float32), 2)
  with pytest.raises(ValueError, match="`dense` must be float/bool"):
    labels_lib.dense_to_ids(np.array([[0, 1]], np.int32), 2)
  with pytest.raises(ValueError, match="contains id 3 but num_classes is 3"):
    labels_lib.ids_to_dense(np.array([[3]]), 3)
  with pytest.raises(ValueError, match="must be float/bool dense labels or integer ids"):
    labels_lib.check_labels(np.array([[1 + 1j]]))


def test_weighted_sum_and_gather_ignore_padding_and_duplicates():
  values = jnp.arange(8.0).reshape(2, 4)
  ids = jnp.array([[1, 1, 3], [-1, -1, -1]])
  np.testing.assert_array_equal(labels_lib.gather_at_ids(values, ids), [[1, 0, 3], [0, 0, 0]])
  np.testing.assert_allclose(labels_lib.weighted_sum(values, ids), [4, 0])
  np.testing.assert_allclose(labels_lib.weighted_sum(values, ids, normalize=True), [2, 0])
  dense = labels_lib.ids_to_dense(ids, 4)
  np.testing.assert_allclose(labels_lib.weighted_sum(values, dense, normalize=True), [2, 0])
  assert list(np.asarray(labels_lib.has_labels(ids))) == [True, False]
