"""TFDS multi-label datasets as random-access sources (``tfds.data_source``, ArrayRecord).

One small adapter per dataset maps a TFDS example to ``(input, class ids)``:

=============== ============================ ======= =========================================
name            TFDS builder                 C       labels
=============== ============================ ======= =========================================
``voc``         ``voc/2007``                 20      ``labels`` (classes of the image's objects)
``coco``        ``coco/2017``                80      distinct ``objects/label``
``open_images`` ``open_images_v4``           7,186   ``objects_trainable/label`` with
                                                     ``confidence > 0`` (human-verified
                                                     positive image-level labels)
``celeb_a``     ``celeb_a``                  40      the attributes that are True
``bigearthnet`` ``bigearthnet/rgb``          43      ``labels``
``goemotions``  ``goemotions``               28      the emotions that are True
=============== ============================ ======= =========================================

Inputs: ``image`` float32 ``[H, W, 3]`` in ``[0, 1]``, resized (bilinear, antialiased, aspect
ratio not kept) to ``image_size``; for goemotions ``token_ids``/``token_weights`` from
:mod:`multilabel_jax.data.text`, fit on the train split.

At construction the labels of every split are read once (images not decoded) to build
``label_ids``, ``info.train_label_counts`` and ``info.stats``; :meth:`TfdsSource.read` then
decodes only the requested images. An example whose labels cannot be read (e.g. label and
confidence lists of different lengths) is a malformed example: counted in
``malformed_lines`` and left out, so index ``i`` of a split is its ``i``-th good example. Nothing is downloaded unless ``download=True``: prepare
the datasets with ``tfds build`` (or ``tfds.data_source(..., download=True)``) into
``data_dir`` beforehand. ``data_source`` needs the ArrayRecord file format (the default of
recent TFDS builds).

COCO's test split has no annotations, so ``coco`` defaults to splits train and validation;
bigearthnet has only a train split, carved into train/validation/test 80/10/10 by TFDS
slicing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from multilabel_jax.data import base
from multilabel_jax.data import label_map as label_map_lib
from multilabel_jax.data import text as text_lib


def _names(feature) -> List[str]:
  return list(feature.names)


@dataclasses.dataclass(frozen=True)
class Adapter:
  """How one TFDS dataset maps to ``(input, class ids)``.

  Attributes:
    tfds_name: the TFDS builder (with config/version), e.g. ``"voc/2007"``.
    splits: our split name -> TFDS split (slicing allowed).
    input_key: the example key of the input (an image or a text).
    input_kind: ``"image"`` or ``"text"``.
    class_names: builder features -> ``[C]`` class names.
    labels: (example, class names) -> class ids of the example; ValueError if the example
      is malformed (counted in ``malformed_lines`` and skipped).
  """
  tfds_name: str
  splits: Mapping[str, str]
  input_key: str
  input_kind: str
  class_names: Callable[[object], List[str]]
  labels: Callable[[dict, Sequence[str]], np.ndarray]


_STANDARD_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
_CELEB_A_ATTRIBUTES = "attributes"
_GOEMOTIONS_TEXT = "comment_text"


def _positive(objects) -> np.ndarray:
  """Labels with ``confidence > 0``; ValueError if the two lists differ in length."""
  label, confidence = np.asarray(objects["label"]), np.asarray(objects["confidence"])
  if label.shape != confidence.shape:
    raise ValueError(f"{len(label)} labels but {len(confidence)} confidences")
  return label[confidence > 0]


def _true_keys(features_or_dict, exclude=()) -> List[str]:
  return [k for k in features_or_dict.keys() if k not in exclude]


ADAPTERS: Dict[str, Adapter] = {
    "voc": Adapter(
        "voc/2007", _STANDARD_SPLITS, "image", "image",
        class_names=lambda f: _names(f["labels"].feature),
        labels=lambda ex, names: np.asarray(ex["labels"])),
    "coco": Adapter(
        "coco/2017", {"train": "train", "validation": "validation"}, "image", "image",
        class_names=lambda f: _names(f["objects"]["label"]),
        labels=lambda ex, names: np.asarray(ex["objects"]["label"])),
    "open_images": Adapter(
        "open_images_v4", _STANDARD_SPLITS, "image", "image",
        class_names=lambda f: _names(f["objects_trainable"]["label"]),
        labels=lambda ex, names: _positive(ex["objects_trainable"])),
    "celeb_a": Adapter(
        "celeb_a", _STANDARD_SPLITS, "image", "image",
        class_names=lambda f: _true_keys(f[_CELEB_A_ATTRIBUTES]),
        labels=lambda ex, names: np.asarray(
            [i for i, n in enumerate(names) if ex[_CELEB_A_ATTRIBUTES][n]], np.int64)),
    "bigearthnet": Adapter(
        "bigearthnet/rgb",
        {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"},
        "image", "image",
        class_names=lambda f: _names(f["labels"].feature),
        labels=lambda ex, names: np.asarray(ex["labels"])),
    "goemotions": Adapter(
        "goemotions", _STANDARD_SPLITS, _GOEMOTIONS_TEXT, "text",
        class_names=lambda f: _true_keys(f, exclude=(_GOEMOTIONS_TEXT,)),
        labels=lambda ex, names: np.asarray(
            [i for i, n in enumerate(names) if ex[n]], np.int64)),
}


def resize_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
  """uint8 ``[h, w, c]`` -> float32 ``[*size, 3]`` in ``[0, 1]`` (grey is repeated)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  out = tf.image.resize(tf.convert_to_tensor(image, tf.float32), size, method="bilinear",
                        antialias=True)
  return np.clip(out.numpy() / 255.0, 0.0, 1.0).astype(np.float32)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TfdsSource:
  """A TFDS dataset as a :class:`~multilabel_jax.data.base.Source`.

  Args:
    dataset: a key of :data:`ADAPTERS` (``"voc"``, ``"coco"``, ...).
    data_dir: TFDS data directory (None: TFDS default).
    image_size: ``(H, W)`` of the ``image`` input.
    max_labels: L; None: the most labels of a training example.
    splits: our split name -> TFDS split, overriding the adapter's.
    text: text featurisation for text datasets (goemotions).
    download: let TFDS download and prepare (never in tests).
    strict: raise on the first bad example or label set instead of counting.
    scan_decodes_images: decode images in the label pass too (slow). Only needed where
      ``SkipDecoding`` fails, e.g. TFDS's random mock data for Sequence-of-dict features.
  """

  def __init__(self, dataset: str, *, data_dir: Optional[str] = None,
               image_size: Tuple[int, int] = (224, 224), max_labels: Optional[int] = None,
               splits: Optional[Mapping[str, str]] = None,
               text: text_lib.TextConfig = text_lib.TextConfig(),
               download: bool = False, strict: bool = False,
               scan_decodes_images: bool = False):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if dataset not in ADAPTERS:
      raise ValueError(f"Unknown TFDS dataset {dataset!r}; known: {sorted(ADAPTERS)}.")
    self.adapter = adapter = ADAPTERS[dataset]
    self.image_size = tuple(image_size)
    split_map = dict(splits or adapter.splits)
    if "train" not in split_map:
      raise ValueError(f"splits must include 'train', got {sorted(split_map)}.")
    builder = tfds.builder(adapter.tfds_name, data_dir=data_dir)
    self.class_names = adapter.class_names(builder.info.features)
    num_classes = len(self.class_names)
    skip = None
    if adapter.input_kind == "image" and not scan_decodes_images:
      skip = {adapter.input_key: tfds.decode.SkipDecoding()}
    self._data, self._index, label_lists = {}, {}, {}
    malformed = {}
    texts: Dict[str, List[str]] = {}
    for split, tfds_split in split_map.items():
      kwargs = dict(split=tfds_split, data_dir=data_dir, download=download)
      self._data[split] = tfds.data_source(adapter.tfds_name, **kwargs)
      scan = tfds.data_source(adapter.tfds_name, decoders=skip, **kwargs) if skip else \
          self._data[split]
      label_lists[split], texts[split], index, malformed[split] = [], [], [], 0
      for i in range(len(scan)):  # One pass over the labels; images stay encoded.
        ex = scan[i]
        try:
          labels = adapter.labels(ex, self.class_names).tolist()
        except (ValueError, KeyError, TypeError) as e:
          if strict:
            raise ValueError(f"{adapter.tfds_name}/{tfds_split}[{i}]: malformed example: "
                             f"{e}.") from None
          malformed[split] += 1
          continue
        index.append(i)
        label_lists[split].append(labels)
        if adapter.input_kind == "text":
          texts[split].append(_text(ex[adapter.input_key]))
      self._index[split] = np.asarray(index, np.int64)
    if max_labels is None:
      max_labels = max((len(set(l)) for l in label_lists["train"]), default=1) or 1
    self.split_stats, self._label_ids, self._tokens = {}, {}, {}
    self.featurizer = self.num_embeddings = None
    if adapter.input_kind == "text":
      self.featurizer = text_lib.TextFeaturizer(text).fit(texts["train"])
      self.num_embeddings = self.featurizer.num_embeddings
    for split, lists in label_lists.items():
      stats = base.DataStats(malformed_lines=malformed[split])
      origins = [f"{adapter.tfds_name}/{split_map[split]}[{i}]" for i in self._index[split]]
      self._label_ids[split] = label_map_lib.pack_label_ids(
          lists, max_labels, num_classes, stats=stats, strict=strict, origins=origins)
      if self.featurizer is not None:
        ids, weights, dropped = self.featurizer.transform(texts[split])
        stats.truncated_tokens += int(dropped.sum())
        self._tokens[split] = (ids, weights)
      self.split_stats[split] = stats
    total = base.DataStats()
    for s in self.split_stats.values():
      total.update(s)
    if adapter.input_kind == "image":
      inputs = {"image": base.InputSpec((*self.image_size, 3), "float32")}
    else:
      inputs = self.featurizer.input_specs()
    self.info = base.DatasetInfo(
        name=dataset, num_classes=num_classes, max_labels=max_labels, inputs=inputs,
        train_label_counts=label_map_lib.train_label_counts(self._label_ids["train"], num_classes),
        num_train_examples=len(self._label_ids["train"]), class_names=self.class_names,
        stats=total)

  def num_examples(self, split: str) -> int:
    return len(self._labels(split))

  def _labels(self, split: str) -> np.ndarray:
    if split not in self._label_ids:
      raise KeyError(f"{self.info.name} has no split {split!r}; "
                     f"splits: {sorted(self._label_ids)}.")
    return self._label_ids[split]

  def _indices(self, split: str, indices) -> np.ndarray:
    n = len(self._labels(split))
    indices = np.asarray(indices, np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
      raise IndexError(f"{self.info.name}/{split}: indices outside [0, {n}).")
    return indices

  def read_labels(self, split: str, indices: np.ndarray) -> np.ndarray:
    """``label_ids`` only, without decoding images (``base.read_labels`` fast path)."""
    return self._labels(split)[self._indices(split, indices)]

  def read(self, split: str, indices: np.ndarray) -> dict:
    indices = self._indices(split, indices)
    out = {"label_ids": self._labels(split)[indices]}
    if self.featurizer is not None:
      ids, weights = self._tokens[split]
      out.update(token_ids=ids[indices], token_weights=weights[indices])
    else:
      data, key = self._data[split], self.adapter.input_key
      images = np.zeros((len(indices), *self.image_size, 3), np.float32)
      for j, i in enumerate(self._index[split][indices]):
        images[j] = resize_image(data[int(i)][key], self.image_size)
      out["image"] = images
    return out
