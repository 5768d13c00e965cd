"""What a builder accepts: ``{option: default}`` read from a function or dataclass signature.

Used to check config dicts (``data.options``, ``objective_options``, ``model_options``)
against the source, objective or model they configure, before any compute.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Dict, Optional


def defaults_of(fn, skip=()) -> Optional[Dict[str, Any]]:
  """``{parameter: default}`` of a function or dataclass (None for a required one), leaving
  out the names in ``skip``; None if ``fn`` takes ``**kwargs`` (any option)."""
  if dataclasses.is_dataclass(fn):
    out = {}
    for f in dataclasses.fields(fn):
      if f.name in skip:
        continue
      if f.default is not dataclasses.MISSING:
        out[f.name] = f.default
      elif f.default_factory is not dataclasses.MISSING:
        out[f.name] = f.default_factory()
      else:
        out[f.name] = None
    return out
  params = inspect.signature(fn).parameters
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return None
  return {k: None if p.default is p.empty else p.default for k, p in params.items()
          if k not in skip}
