"""Data sources and the input pipeline; :func:`get_source` builds a source by name.

==============  =============================================================
name            source
==============  =============================================================
hashtag_world   :class:`hashtag_world.HashtagWorld` (simulator, exact oracle)
debtags         :func:`debtags.load_debtags` (real; ``../shared/data``)
jsonl           :func:`jsonl.load_jsonl` on a :class:`jsonl.JsonlConfig`
xmc             :func:`xmc.load_xmc` on a :class:`xmc.XmcConfig`
tfds            :class:`tfds_sources.TfdsSource` (voc, coco, open_images, ...)
==============  =============================================================
"""

from __future__ import annotations

import dataclasses
import inspect

from multilabel_jax.data.base import DatasetInfo, DataStats, InputSpec, Source
from multilabel_jax.data.pipeline import InputPipeline, LabelStats

SOURCES = ("hashtag_world", "debtags", "jsonl", "xmc", "tfds")


def _check_options(name, fn, options):
  """ValueError naming unknown options (instead of a TypeError deep inside)."""
  if dataclasses.is_dataclass(fn):
    accepted = [f.name for f in dataclasses.fields(fn)]
  else:
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
      return
    accepted = [p for p in params if p != "self"]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"data source {name!r} does not take option(s) {unknown}; "
                     f"it accepts {accepted}.")


def get_source(name: str, /, **options) -> Source:
  """Builds the data source ``name`` with its options (e.g. from ``config.data.options``)."""
  if name == "hashtag_world":
    from multilabel_jax.data import hashtag_world  # pylint: disable=g-import-not-at-top
    _check_options(name, hashtag_world.HashtagWorld.__init__, options)
    return hashtag_world.HashtagWorld(**options)
  if name == "debtags":
    from multilabel_jax.data import debtags, jsonl  # pylint: disable=g-import-not-at-top
    _check_options(name, jsonl.JsonlConfig, options)
    return debtags.load_debtags(**options)
  if name == "jsonl":
    from multilabel_jax.data import jsonl  # pylint: disable=g-import-not-at-top
    _check_options(name, jsonl.JsonlConfig, options)
    return jsonl.load_jsonl(jsonl.JsonlConfig(**options))
  if name == "xmc":
    from multilabel_jax.data import xmc  # pylint: disable=g-import-not-at-top
    _check_options(name, xmc.XmcConfig, options)
    return xmc.load_xmc(xmc.XmcConfig(**options))
  if name == "tfds":
    from multilabel_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top
    _check_options(name, tfds_sources.TfdsSource.__init__, options)
    return tfds_sources.TfdsSource(**options)
  raise ValueError(f"unknown data source {name!r}; choose one of {list(SOURCES)}.")


__all__ = ["DatasetInfo", "DataStats", "InputPipeline", "InputSpec", "LabelStats", "SOURCES",
           "Source", "get_source"]
