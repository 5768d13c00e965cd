"""From a trained run to label sets: :class:`Predictor`.

A run's workdir holds all that prediction needs: ``config.json``, the checkpoint, the
vocabulary, label map and record fields of text sources (``vocab/``), and
``calibration.json`` (every decoder's thresholds and the decoder chosen on validation;
:func:`calibration.save_artifact`). :meth:`Predictor.from_workdir` rebuilds the objective
and the model from them, restores the parameters (not the optimizer state) and reads
records as the training loader does (:func:`data.jsonl.document`)::

  predictor = Predictor.from_workdir("runs/debtags-20250101-120000")
  predictor.predict([{"package": "jq", "synopsis": "lightweight JSON processor"}])
  # [{"labels": [tag names, best first], "scores": [their scores]}]
  predictor.top_k(records, k=5)   # the 5 best labels of each record, with their scores
  predictor.scores(records)       # float32 [B, C] (materialises every class: small heads)
  predictor.export("served/")     # jax.export; multilabel_jax.serving.load("served/")

Inputs are raw records (dicts with the data source's fields: the text fields of JSONL and
debtags; ``{"features": [D floats]}`` for hashtag_world; an XMC run takes its format's
lines, ``"f:v f:v ..."``), a batch
dict of arrays (what the model reads: ``{"token_ids": [B, T], "token_weights": [B, T]}``,
``{"features": [B, D]}``), or a :class:`Batch` from :meth:`Predictor.read`.

Decoding takes the evaluation's own path in one compiled function: pass one of
:func:`scoring.eval_fns` (top-r candidates and the threshold counts), then the decoder of
:func:`evaluate.make_decoders` on jax arrays. The sets are those the run's report scored,
and a fused head (100k-1M classes) is decoded by the streaming top-k, never a ``[B, C]``
array. Nothing here asks which objective it has.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import types
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from multilabel_jax import builders, calibration as calibration_lib, checkpointing, evaluate
from multilabel_jax import models, scoring, serving
from multilabel_jax.data import jsonl
from multilabel_jax.data import text as text_lib
from multilabel_jax.data import xmc


class RecordError(ValueError):
  """A record that cannot be read: not a JSON object, none of the text fields, a field of
  the wrong type, an input array missing or of the wrong shape."""


class Batch(NamedTuple):
  """Read inputs: the batch dict the model reads, and per row whether no token of it is in
  the vocabulary (None for array inputs)."""
  arrays: Dict[str, np.ndarray]
  no_known_tokens: Optional[np.ndarray] = None


class TextReader:
  """Records of a text source -> ``token_ids``/``token_weights``, as the loader reads them.

  Args:
    featurizer: the run's fitted :class:`text.TextFeaturizer`.
    fields: :func:`data.jsonl.record_fields` (text, token, id and label fields).
  """

  def __init__(self, featurizer: text_lib.TextFeaturizer, fields: Mapping[str, Any]):
    self.featurizer = featurizer
    self.text_fields = tuple(fields["text_fields"])
    self.token_fields = tuple(fields["token_fields"])
    self.ngram_fields = tuple(fields.get("ngram_fields", ()))
    self.ngram_range = tuple(fields.get("ngram_range", (3, 5)))
    self.id_field = fields.get("id_field")

  def document(self, record) -> List[str]:
    """One record's tokens (:func:`data.jsonl.document`); :class:`RecordError` if it is
    not a dict or has none of the text and token fields."""
    if not isinstance(record, dict):
      raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    seen: set = set()
    try:
      tokens = jsonl.document(record, self.featurizer, text_fields=self.text_fields,
                              token_fields=self.token_fields, ngram_fields=self.ngram_fields,
                              ngram_range=self.ngram_range, seen=seen)
    except ValueError as e:
      raise RecordError(str(e)) from None
    if not seen:
      keys = ", ".join(repr(k) for k in sorted(map(str, record))[:12]) or "none"
      raise RecordError(f"none of the text fields {list(self.text_fields)} or token fields "
                        f"{list(self.token_fields)} is in the record (its keys: {keys})")
    return tokens

  def batch(self, documents: Sequence[List[str]]) -> Batch:
    ids, weights, _ = self.featurizer.transform(documents)
    return Batch({"token_ids": ids, "token_weights": weights},
                 np.all(ids == text_lib.PAD_TOKEN_ID, axis=1))


class XmcReader:
  """Points of an XMC run (Extreme Classification Repository lines, ``"l1,l2 f:v f:v"`` or
  ``" f:v ..."``; labels are ignored) -> ``token_ids``/``token_weights``, as
  :func:`data.xmc.load_xmc` reads them (:func:`data.xmc.parse_line`,
  :func:`data.xmc.sparse_features`, :func:`data.xmc.pack_features`).

  Args:
    state: the run's ``vocab/xmc_features.json`` (``num_features``, ``max_features``,
      ``normalize``).
  """

  reads_lines = True  # experiments.predict passes each line as it is, not as JSON.
  id_field = None

  def __init__(self, state: Mapping[str, Any]):
    self.state = dict(state)

  def document(self, record):
    line = record.get("features") if isinstance(record, dict) else record
    if not isinstance(line, str):
      raise RecordError(f"expected an XMC line 'f:v f:v ...' (or {{\"features\": line}}), got "
                        f"{type(line).__name__}")
    try:
      _, ids, values = xmc.parse_line(line.rstrip("\n"))
    except ValueError as e:
      raise RecordError(str(e)) from None
    return xmc.sparse_features(ids, values, self.state["num_features"])[0]

  def batch(self, documents) -> Batch:
    ids, weights, _ = xmc.pack_features(list(documents), self.state["max_features"],
                                        normalize=self.state["normalize"])
    return Batch({"token_ids": ids, "token_weights": weights},
                 np.all(ids == text_lib.PAD_TOKEN_ID, axis=1))


class ArrayReader:
  """Records that hold the model's input arrays (``{"features": [...]}``).

  Args:
    inputs: input name -> ``(shape, dtype)`` without the batch axis.
    id_field: the key that names a record in the output, when it has one.
  """

  def __init__(self, inputs: Mapping[str, Sequence], id_field: str = "id"):
    self.inputs = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in inputs.items()}
    self.id_field = id_field

  def document(self, record) -> Dict[str, np.ndarray]:
    if not isinstance(record, dict):
      raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    out = {}
    for name, (shape, dtype) in self.inputs.items():
      if name not in record:
        raise RecordError(f"no input {name!r} (the model reads {sorted(self.inputs)}; the "
                          f"record has keys {sorted(map(str, record))[:12]})")
      try:
        value = np.asarray(record[name], dtype)
      except (TypeError, ValueError) as e:
        raise RecordError(f"input {name!r} is not an array of {dtype}: {e}") from None
      if value.shape != shape:
        raise RecordError(f"input {name!r} has shape {value.shape}, the model reads {shape}")
      out[name] = value
    return out

  def batch(self, documents: Sequence[Dict[str, np.ndarray]]) -> Batch:
    return Batch({k: np.stack([d[k] for d in documents]) if documents
                  else np.zeros((0, *shape), dtype)
                  for k, (shape, dtype) in self.inputs.items()})


def _tuples(value):
  """JSON lists back to the tuples a config holds."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _check_fingerprint(workdir: pathlib.Path, stored: Mapping) -> None:
  now = calibration_lib.fingerprint(workdir)
  for key, what in (("config_sha256", "config.json"), ("vocab_sha256", "vocab/")):
    if stored.get(key) != now[key]:
      raise ValueError(f"{workdir / what} is not the one the checkpoint was trained and "
                       f"calibrated with ({calibration_lib.ARTIFACT_FILE} holds another "
                       f"fingerprint of it: {stored.get(key)} != {now[key]}); restore it, or "
                       "retrain.")


class Predictor:
  """Label sets, top-k labels and scores of a trained model (module docstring).

  Build it with :meth:`from_workdir`; the constructor takes the parts (benchmarks, tests).

  Args:
    model: the Flax model (encoder and the objective's heads).
    objective: the :class:`losses.Objective`.
    variables: ``{"params", "model_state"}``.
    label_names: ``[C]`` class names.
    reader: a :class:`TextReader`, :class:`XmcReader` or :class:`ArrayReader` for raw
      records.
    calibration: thresholds (:func:`calibration.calibrate`'s form); empty: the uncalibrated
      decoders only (top-k, fixed threshold, by count).
    decoder: the default decoder (None: the objective's natural one when it applies).
    r: slots of a variable-size set (the evaluation's candidates per row).
    top_ks: the k of the ``top_<k>`` decoders.
    use_fused: score through the objective's fused head (streaming, no ``[B, C]``).
    chunk_size: classes per chunk of the fused head.
    batch_size: rows per compiled call (inputs are padded to it).
  """

  def __init__(self, model, objective, variables, *, label_names: Sequence[str], reader,
               calibration: Optional[Mapping] = None, decoder: Optional[str] = None,
               r: int = 64, top_ks=(1, 3, 5), use_fused: bool = False,
               chunk_size: int = 8192, batch_size: int = 256):
    self.model, self.objective, self.reader = model, objective, reader
    self.variables = jax.device_put({"params": variables["params"],
                                     "model_state": dict(variables.get("model_state", {}))})
    self.label_names = list(label_names)
    self.num_classes = len(self.label_names)
    self.calibration = dict(calibration or {})
    self.r, self.top_ks = min(int(r), self.num_classes), tuple(int(k) for k in top_ks)
    self.use_fused, self.chunk_size, self.batch_size = use_fused, chunk_size, int(batch_size)
    self.decoders = evaluate.decoder_rules(objective, self.calibration, top_ks=self.top_ks,
                                           r=self.r)
    natural = objective.natural_decoder
    self.decoder = decoder or (natural if natural in self.decoders else next(iter(self.decoders)))
    self.check_decoder(self.decoder)
    self._fns: Dict[tuple, Any] = {}
    self._scores_fn = None

  # ------------------------------------------------------------------ loading

  @classmethod
  def from_workdir(cls, workdir, step: Optional[int] = None, *, batch_size: int = 256,
                   decoder: Optional[str] = None) -> "Predictor":
    """The predictor of a trained run's workdir.

    Args:
      workdir: the run's folder (``experiments.run --workdir``).
      step: the checkpoint step (None: the newest). The calibrated decoders need the step
        that was calibrated (the last); at another step only the uncalibrated ones apply.
      batch_size: rows per compiled call.
      decoder: the default decoder (None: the one ``calibration.json`` names).

    Raises:
      FileNotFoundError: no workdir, no ``config.json``, no checkpoint (or not that step),
        no ``calibration.json``.
      ValueError: ``config.json`` or ``vocab/`` changed since training, a checkpoint that
        does not match the model they build, an unknown decoder.
    """
    workdir = pathlib.Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
      raise FileNotFoundError(f"{config_path}: no such file; {workdir} is not the workdir of "
                              "a run (experiments.run --workdir=...).")
    config = ml_collections.ConfigDict(_tuples(json.loads(config_path.read_text())))
    config.mesh.classes = 1  # One device: the dense or fused single-device form.
    artifact = calibration_lib.load_artifact(workdir)
    _check_fingerprint(workdir, artifact["fingerprint"])
    data = artifact["data"]
    num_classes = int(data["num_classes"])
    names = data.get("class_names") or [str(c) for c in range(num_classes)]
    if (workdir / "vocab" / jsonl.VOCAB_FILE).is_file():
      featurizer, label_map = jsonl.load_vocab(workdir / "vocab")
      if len(label_map) != num_classes:
        raise ValueError(f"{workdir / 'vocab' / jsonl.LABELS_FILE} has {len(label_map)} labels, "
                         f"the run has {num_classes} classes: not this run's label map.")
      names = label_map.names
      reader = TextReader(featurizer, jsonl.load_record_fields(workdir / "vocab"))
    elif (workdir / "vocab" / xmc.FEATURES_FILE).is_file():
      reader = XmcReader(json.loads((workdir / "vocab" / xmc.FEATURES_FILE).read_text()))
    else:
      reader = ArrayReader(data["inputs"])
    objective = builders.rebuild_objective(config, num_classes,
                                           artifact["objective_rebuild_options"])
    model = builders.build_model(config, objective, types.SimpleNamespace(
        num_embeddings=data.get("num_embeddings"),
        ids_by_frequency=data.get("ids_by_frequency", False)), num_classes=num_classes)
    example = {k: jnp.zeros((1, *shape), dtype) for k, (shape, dtype) in data["inputs"].items()}
    abstract = jax.eval_shape(
        lambda: models.split_variables(nn.unbox(model.init({"params": jax.random.key(0)},
                                                            example))))
    abstract = {"params": abstract[0], "model_state": abstract[1]}
    step, variables = checkpointing.load_variables(workdir, abstract, step)
    calibration = artifact["calibration"]
    decoder = decoder or artifact["decoder"]["name"]
    if step != artifact["step"]:
      logging.warning("%s: step %d was not calibrated (step %d was): only the uncalibrated "
                      "decoders apply.", workdir, step, artifact["step"])
      calibration = {}
      decoder = None if decoder == artifact["decoder"]["name"] else decoder
    return cls(model, objective, variables, label_names=names, reader=reader,
               calibration=calibration, decoder=decoder, r=artifact["r"],
               top_ks=artifact["top_ks"], use_fused=builders.use_fused_head(config, objective),
               chunk_size=config.head.chunk_size, batch_size=batch_size)

  # ------------------------------------------------------------------ inputs

  def check_decoder(self, name: str) -> None:
    """ValueError naming the decoders that apply, if ``name`` is not one of them."""
    if name not in self.decoders:
      raise ValueError(f"unknown decoder {name!r} for this run (objective "
                       f"{self.objective.name!r}); choose one of {list(self.decoders)}.")

  def read(self, records: Sequence) -> Batch:
    """Raw records -> :class:`Batch`; :class:`RecordError` naming the first bad record."""
    docs = []
    for i, record in enumerate(records):
      try:
        docs.append(self.reader.document(record))
      except RecordError as e:
        raise RecordError(f"record {i}: {e}") from None
    return self.reader.batch(docs)

  def _batch(self, inputs) -> Batch:
    if isinstance(inputs, Batch):
      return inputs
    if isinstance(inputs, Mapping):
      missing = sorted(set(self._example_inputs()) - set(inputs))
      if missing:
        raise ValueError(f"the model reads inputs {sorted(self._example_inputs())}; the batch "
                         f"lacks {missing}.")
      return Batch({k: np.asarray(v) for k, v in inputs.items()})
    return self.read(list(inputs))

  # ------------------------------------------------------------------ the compiled function

  def _rules(self, top_k: Optional[int]):
    top_ks = tuple(sorted(set(self.top_ks) | ({int(top_k)} if top_k else set())))
    return top_ks, max(self.r, int(top_k or 0))

  def infer_fn(self, decoder: Optional[str] = None, top_k: Optional[int] = None):
    """The pure ``(variables, batch) -> {"ids", "scores", "num_truncated"}`` of one decoder
    (and ``"top_ids"``, ``"top_scores"`` ``[B, top_k]`` with ``top_k``): ``ids`` int32
    ``[B, r]`` (-1 after the set), ``scores`` ``[B, r]``, ``num_truncated`` ``[B]``. What
    :meth:`predict` compiles and :meth:`export` serialises."""
    decoder = decoder or self.decoder
    top_ks, r = self._rules(top_k)
    decoders = evaluate.make_decoders(self.objective, self.calibration, top_ks=top_ks, r=r,
                                      num_classes=self.num_classes)
    if decoder not in decoders:
      self.check_decoder(decoder)
    decode = decoders[decoder]
    thresholds, class_thresholds = evaluate.decoder_inputs(self.objective, self.calibration,
                                                           decoder)
    pass_one, _ = scoring.eval_fns(self.model, self.objective, r=r, use_fused=self.use_fused,
                                   chunk_size=self.chunk_size)

    def infer(variables, batch):
      rows = next(iter(batch.values())).shape[0]
      batch = dict(batch, label_ids=jnp.full((rows, 1), -1, jnp.int32))
      one = pass_one(variables, batch, jnp.asarray(thresholds),
                     None if class_thresholds is None else jnp.asarray(class_thresholds))
      ids, truncated, scores = decode(one, jnp)
      out = {"ids": ids, "scores": scores, "num_truncated": truncated}
      if top_k:  # The barrier keeps XLA from rewriting top_k(r) + slice as a sort (20x
        # slower on CPU at 20k classes).
        ids_r, values_r = jax.lax.optimization_barrier((one.ids, one.values))
        out.update(top_ids=ids_r[:, :top_k], top_scores=values_r[:, :top_k])
      return out

    return infer

  def decode(self, inputs, decoder: Optional[str] = None,
             top_k: Optional[int] = None) -> Dict[str, np.ndarray]:
    """:meth:`infer_fn`'s arrays for ``inputs`` (numpy, one row per input), computed in
    padded batches of ``batch_size`` rows."""
    batch = self._batch(inputs)
    key = (decoder or self.decoder, top_k)
    if key not in self._fns:
      self._fns[key] = jax.jit(self.infer_fn(*key))
    return serving.batched(lambda b: self._fns[key](self.variables, b), batch.arrays,
                           self.batch_size)

  # ------------------------------------------------------------------ results

  def _names(self, ids, scores) -> dict:
    keep = ids >= 0
    return {"labels": [self.label_names[i] for i in ids[keep]],
            "scores": [float(s) for s in scores[keep]]}

  def predict(self, inputs, decoder: Optional[str] = None,
              top_k: Optional[int] = None) -> List[dict]:
    """Each input's label set under ``decoder`` (default :attr:`decoder`).

    Returns:
      One dict per input: ``{"labels": [names, best first], "scores": [floats]}``, plus
      ``"num_truncated"`` (labels that qualified past the r slots) when not 0,
      ``"no_known_tokens": True`` for a text with no token in the vocabulary (its scores
      come from the biases alone), and ``"top_k": {"labels", "scores"}`` with ``top_k``.

    Example:
      >>> predictor.predict([{"title": "Rust async runtime"}], decoder="average_k")
      [{'labels': [...], 'scores': [...]}]
    """
    batch = self._batch(inputs)
    out = self.decode(batch, decoder, top_k)
    results = []
    for i in range(len(out["ids"])):
      row = self._names(out["ids"][i], out["scores"][i])
      if out["num_truncated"][i]:
        row["num_truncated"] = int(out["num_truncated"][i])
      if batch.no_known_tokens is not None and batch.no_known_tokens[i]:
        row["no_known_tokens"] = True
      if top_k:
        row["top_k"] = self._names(out["top_ids"][i], out["top_scores"][i])
      results.append(row)
    return results

  def top_k(self, inputs, k: int = 5) -> List[dict]:
    """Each input's ``k`` best labels, best first: ``[{"labels": [...], "scores": [...]}]``
    (the streaming top-k for a fused head)."""
    name = f"{self.objective.top_k_prefix}_{int(k)}"
    out = self.decode(inputs, name, int(k))
    return [self._names(ids, s) for ids, s in zip(out["top_ids"], out["top_scores"])]

  def scores(self, inputs) -> np.ndarray:
    """float32 ``[B, C]``: every class's score (``objective.scores`` of the dense heads).
    Materialises ``[batch_size, C]``: for large heads use :meth:`top_k` / :meth:`predict`."""
    if self._scores_fn is None:
      def fn(variables, batch):
        out = self.model.apply({"params": variables["params"], **variables["model_state"]},
                               batch)
        return {"scores": self.objective.scores(out)}
      self._scores_fn = jax.jit(fn)
    batch = self._batch(inputs)
    return serving.batched(lambda b: self._scores_fn(self.variables, b), batch.arrays,
                           self.batch_size)["scores"]

  # ------------------------------------------------------------------ export

  def export(self, path, decoder: Optional[str] = None, top_k: Optional[int] = None, *,
             platforms: Optional[Sequence[str]] = None) -> pathlib.Path:
    """Serialises :meth:`infer_fn` with ``jax.export`` (StableHLO, any batch size) into the
    folder ``path``, for :func:`serving.load` (jax + numpy + json only).

    Writes ``model.jax_export`` (the serialised function), ``variables.npz`` (its
    parameters, by ``/``-joined path), ``meta.json`` (format, decoder and its rule with the
    thresholds, label names, inputs, batch size) and ``serve.py`` (a copy of
    :mod:`multilabel_jax.serving`). ``platforms``: e.g. ``("cpu", "cuda")`` (default: this
    backend).

    Example:
      >>> predictor.export("served/", decoder="average_k", top_k=5)
      >>> model = serving.load("served/"); model.predict({"token_ids": ..., ...})
    """
    decoder = decoder or self.decoder
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    infer = self.infer_fn(decoder, top_k)
    flat = serving.flatten(self.variables)

    def serve(flat_variables, batch):
      return infer({"model_state": {}, **serving.unflatten(flat_variables)}, batch)

    rows, = jax.export.symbolic_shape("batch")
    specs = {k: jax.ShapeDtypeStruct((rows, *v.shape[1:]), v.dtype)
             for k, v in self._example_inputs().items()}
    flat_specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}
    exported = jax.export.export(jax.jit(serve), platforms=platforms)(flat_specs, specs)
    (path / serving.MODEL_FILE).write_bytes(exported.serialize())
    np.savez(path / serving.VARIABLES_FILE, **{k: np.asarray(v) for k, v in flat.items()})
    top_ks, r = self._rules(top_k)
    rule = evaluate.decoder_rules(self.objective, self.calibration, top_ks=top_ks, r=r)[decoder]
    if rule["rule"] == "class_thresholds":
      rule = dict(rule, thresholds=np.asarray(self.calibration["class_thresholds"]).tolist())
    meta = {"format": serving.FORMAT, "decoder": decoder, "rule": rule, "r": r,
            "top_k": top_k, "batch_size": self.batch_size, "labels": self.label_names,
            "objective": self.objective.name,
            "inputs": {k: [list(v.shape[1:]), str(v.dtype)]
                       for k, v in self._example_inputs().items()},
            "outputs": ["ids", "scores", "num_truncated"] + (["top_ids", "top_scores"]
                                                             if top_k else [])}
    (path / serving.META_FILE).write_text(json.dumps(meta))
    shutil.copyfile(serving.__file__, path / "serve.py")
    return path

  def _example_inputs(self) -> Dict[str, np.ndarray]:
    if isinstance(self.reader, ArrayReader):
      return {k: np.zeros((1, *s), d) for k, (s, d) in self.reader.inputs.items()}
    return self.reader.batch([[]]).arrays
