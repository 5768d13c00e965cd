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

from typing import Any, Dict, Optional

from multilabel_jax import signatures
from multilabel_jax.data.base import DatasetInfo, DataStats, InputSpec, Source
from multilabel_jax.data.pipeline import InputPipeline, LabelStats

SOURCES = ("hashtag_world", "debtags", "jsonl", "xmc", "tfds")


def _option_target(name):
  """What the options of source ``name`` are checked against (a dataclass or a function)."""
  # pylint: disable=g-import-not-at-top
  if name == "hashtag_world":
    from multilabel_jax.data import hashtag_world
    return hashtag_world.HashtagWorld.__init__
  if name in ("debtags", "jsonl"):
    from multilabel_jax.data import jsonl
    return jsonl.JsonlConfig
  if name == "xmc":
    from multilabel_jax.data import xmc
    return xmc.XmcConfig
  if name == "tfds":
    from multilabel_jax.data import tfds_sources
    return tfds_sources.TfdsSource.__init__
  raise ValueError(f"unknown data source {name!r}; choose one of {list(SOURCES)}.")


def accepted_options(name: str) -> Optional[Dict[str, Any]]:
  """``{option: default}`` that :func:`get_source` accepts for ``name`` (None for a required
  option); None if the source takes any option.

  Raises:
    ValueError: ``name`` is not a source.
  """
  return signatures.defaults_of(_option_target(name), skip=("self",))


def _check_options(name, options):
  """ValueError naming unknown options (instead of a TypeError deep inside)."""
  accepted = accepted_options(name)
  if accepted is None:
    return
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"data source {name!r} does not take option(s) {unknown}; "
                     f"it accepts {list(accepted)}.")


def get_source(name: str, /, **options) -> Source:
  """Builds the data source ``name`` with its options (e.g. from ``config.data.options``)."""
  if name == "hashtag_world":
    from multilabel_jax.data import hashtag_world  # pylint: disable=g-import-not-at-top
    _check_options(name, options)
    return hashtag_world.HashtagWorld(**options)
  if name == "debtags":
    from multilabel_jax.data import debtags  # pylint: disable=g-import-not-at-top
    _check_options(name, options)
    return debtags.load_debtags(**options)
  if name == "jsonl":
    from multilabel_jax.data import jsonl  # pylint: disable=g-import-not-at-top
    _check_options(name, options)
    return jsonl.load_jsonl(jsonl.JsonlConfig(**options))
  if name == "xmc":
    from multilabel_jax.data import xmc  # pylint: disable=g-import-not-at-top
    _check_options(name, options)
    return xmc.load_xmc(xmc.XmcConfig(**options))
  if name == "tfds":
    from multilabel_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top
    _check_options(name, options)
    return tfds_sources.TfdsSource(**options)
  raise ValueError(f"unknown data source {name!r}; choose one of {list(SOURCES)}.")


__all__ = ["DatasetInfo", "DataStats", "InputPipeline", "InputSpec", "LabelStats", "SOURCES",
           "Source", "accepted_options", "get_source"]
