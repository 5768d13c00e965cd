r"""debtags: real Debian package descriptions with 598 curated tags (see ../shared/data).

  python -m experiments.run --config=debtags.py                 # softmax 1/k, bag of words
  python -m experiments.run --config=debtags.py:loss=sigmoid
  python -m experiments.run --config=debtags.py:runlocal

The data path defaults to ``../shared/data/debtags.jsonl.gz`` next to the repository (or
``$MULTILABEL_JAX_DEBTAGS``); override with ``--config.data.options.path=...``. The
reference to beat (README of the data): P@1 0.947, P@3 0.663, P@5 0.506 on test.
"""

from experiments import hashtag_pretrain
from multilabel_jax import configs


def get_config(arg=None):
  args = hashtag_pretrain.parse_arg(arg)
  c = configs.base_config()
  c.data.name = "debtags"
  c.data.options = {}
  c.objective = args["loss"]
  c.objective_options = hashtag_pretrain.OBJECTIVE_OPTIONS.get(args["loss"], {})
  c.model = "bow"
  c.model_options = dict(embed_dim=256, widths=(512,), pooling="sum", dropout=0.2)
  c.batch_size = 128
  c.total_steps = 4000
  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 200
  c.optimizer.weight_decay = 1e-4
  c.log_every = 200
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.eval.validation_examples = 0  # All 3,026 validation records.
  c.eval.oracle = False
  if args["runlocal"]:
    c.total_steps = 20
    c.log_every = 10
    c.eval_every = 0
    c.checkpoint_every = 20
    c.eval.validation_examples = 256
    c.eval.test_examples = 256
  if args["full"]:
    c.total_steps = 20_000
  return c
