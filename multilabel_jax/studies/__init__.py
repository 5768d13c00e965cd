"""The results study: runs the sweep, reads its stored run JSONs, writes the report.

``sweep_runner`` launches and stores the runs that ``experiments/sweep.py`` defines (as
``results/<group>/<name>.json``); ``report`` turns the stored runs into docs/RESULTS.md,
its plots (``plots``) and the README's results sections, with the statistics and verdict
rule of ``stats`` and the claims of ``claims``; ``ovr_baseline`` is the scikit-learn
baseline of claim 5.

Needs the ``results`` extra (``pip install -e '.[results]'``: matplotlib, scikit-learn),
which the core install does not have; the core library never imports this package. It
imports the run definitions from ``experiments/sweep.py``, which is not installed: run it
from the repository root, e.g.

  python -m multilabel_jax.studies.report --results=results --docs=docs --readme=README.md
"""
