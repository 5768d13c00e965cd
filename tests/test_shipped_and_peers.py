"""Tests for multilabel_jax.studies.shipped (stored runs of a shipped config, their table)
and the peers' data plumbing (multilabel_jax.studies.peers)."""

import json

import numpy as np
import scipy.sparse

from multilabel_jax.studies import peers, shipped


def _report(seed, val_p1, test_p1):
  ranking = {"precision_at_1": test_p1, "precision_at_3": 0.6, "precision_at_5": 0.5,
             "map": 0.4}
  return {"config": {"seed": seed}, "data": {"name": "debtags"},
          "validation": {"ranking": {"precision_at_1": val_p1}},
          "test": {"ranking": ranking}, "train": {"seconds_this_run": 100.0 + seed}}


def test_store_and_section(tmp_path):
  for seed, (v, t) in enumerate([(0.95, 0.946), (0.953, 0.950)]):
    workdir = tmp_path / f"w{seed}"
    workdir.mkdir()
    (workdir / "report.json").write_text(json.dumps(_report(seed, v, t)))
    path = shipped.store(workdir, "default", tmp_path / "results")
    assert path == tmp_path / "results" / "shipped" / f"debtags_default_s{seed}.json"
    assert json.loads(path.read_text())["sweep"]["group"] == "shipped"
  reports = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*/*.json"))]
  reports.append({"peer": "omikuji", "data": {"name": "debtags"},
                  "validation_ranking": {"precision_at_1": 0.94},
                  "test": {"ranking": {"precision_at_1": 0.947, "precision_at_3": 0.66,
                                       "precision_at_5": 0.506, "map": 0.5}},
                  "train": {"seconds_this_run": 12.0}})
  text = "\n".join(shipped.section(reports))
  assert "| debtags: default | 2 | 0.952 ± 0.002 | 0.948 ± 0.003 | 0.600 ± 0.000 |" in text
  assert "| debtags: omikuji | 1 | 0.940 | 0.947 | 0.660 | 0.506 | 0.500 | 12 |" in text
  assert "Linear probes" not in text
  probes = {"data": "debtags", "probes": {"bag": {"precision_at_1": 0.95, "precision_at_5": 0.5},
                                          "bag+bigrams": {"precision_at_1": 0.949,
                                                          "precision_at_5": 0.501}}}
  (tmp_path / "results" / "probes").mkdir()
  (tmp_path / "results" / "probes" / "debtags.json").write_text(json.dumps(probes))
  from multilabel_jax.studies import stats  # pylint: disable=g-import-not-at-top
  text = "\n".join(shipped.section(stats.load(tmp_path / "results") + reports[-1:]))
  assert "Linear probes of feature directions on debtags (validation only" in text
  assert "| bag | 0.9500 | 0.5000 |" in text and "| bag+bigrams | 0.9490 | 0.5010 |" in text
  ensemble = {"data": "debtags", "title": "Score ensembles on debtags (validation only):",
              "probes": {"run0+omikuji": {"precision_at_1": 0.96, "precision_at_5": 0.51}},
              "members": {"runs": {"run0": {"objective": "squared_hinge", "model": "bow",
                                            "total_steps": 940, "seed": 0}}}}
  (tmp_path / "results" / "probes" / "debtags_ensembles.json").write_text(json.dumps(ensemble))
  text = "\n".join(shipped.section(stats.load(tmp_path / "results") + reports[-1:]))
  assert "Linear probes of feature directions on debtags (validation only" in text
  assert "Score ensembles on debtags (validation only):" in text
  assert "| run0+omikuji | 0.9600 | 0.5100 |" in text
  assert "Trained members: run0 = squared_hinge bow, 940 steps, seed 0." in text
  assert shipped.section([]) == []


def test_peers_label_matrix_and_xmc_file(tmp_path):
  y = peers.label_csr(np.array([[0, 2, -1], [1, -1, -1]], np.int32), 3)
  np.testing.assert_array_equal(y.toarray(), [[1, 0, 1], [0, 1, 0]])
  x = scipy.sparse.csr_matrix(np.array([[0.5, 0, 0.25], [0, 1.0, 0]]))
  peers._write_xmc(tmp_path / "t.txt", x, y)
  assert (tmp_path / "t.txt").read_text().splitlines() == [
      "2 3 3", "0,2 0:0.5 2:0.25", "1 1:1"]


def test_a_run_on_another_file_is_stored_and_shown_under_its_own_name(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "report.json").write_text(json.dumps(_report(0, 0.27, 0.266)))
  path = shipped.store(workdir, "lr1e-3", tmp_path / "results", dataset="debsuggests")
  assert path.name == "debsuggests_lr1e-3_s0.json"
  text = "\n".join(shipped.section([json.loads(path.read_text())]))
  assert "| debsuggests: lr1e-3 | 1 | 0.270 | 0.266 |" in text


def test_peers_read_the_file_given_and_store_under_the_dataset_name(tmp_path, monkeypatch):
  seen = {}

  def fake_peer(name, source, dataset=""):
    seen.update(records=sum(source.num_examples(s) for s in ("train", "validation", "test")),
                dataset=dataset)
    return {"peer": name, "test": {"ranking": {"precision_at_1": 0.3, "precision_at_3": 0.2,
                                               "precision_at_5": 0.1}},
            "train": {"seconds_this_run": 1.0}}

  monkeypatch.setattr(peers, "run_peer", fake_peer)
  fixture = "tests/fixtures/tiny_debtags.jsonl"
  assert peers.main(["--config=experiments/debtags.py", f"--data_path={fixture}",
                     "--dataset=tiny", "--only=omikuji", f"--out={tmp_path}"]) == 0
  with open(fixture, encoding="utf-8") as f:  # The fixture's records, not debtags' 30,300.
    assert 0 < seen["records"] <= sum(1 for line in f) and seen["dataset"] == "tiny"
  assert (tmp_path / "tiny_omikuji.json").exists()


def test_read_splits_gives_each_split_as_its_arrays_bags_and_labels():
  from experiments import jsonl as jsonl_config  # pylint: disable=g-import-not-at-top
  from multilabel_jax import builders, labels  # pylint: disable=g-import-not-at-top
  source = builders.build_source(jsonl_config.get_config("runlocal"))
  arrays, x, y = peers.read_splits(source, ("train", "test"))
  assert set(arrays) == set(x) == set(y) == {"train", "test"}
  for split in ("train", "test"):
    ids, weights = arrays[split]["token_ids"], arrays[split]["token_weights"]
    assert x[split].shape == (source.num_examples(split), source.num_embeddings)
    dense = np.zeros(x[split].shape)
    for n in range(ids.shape[0]):
      for i, w in zip(ids[n], weights[n]):
        if w != 0:
          dense[n, i] += w
    np.testing.assert_allclose(x[split].toarray(), dense, rtol=1e-6)
    want = np.asarray(labels.ids_to_dense(arrays[split]["label_ids"],
                                          source.info.num_classes)) > 0
    np.testing.assert_array_equal(y[split].toarray(), want.astype(float))
