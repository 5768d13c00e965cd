r"""debtags: real Debian package descriptions with 598 curated tags (see ../shared/data).

  python -m experiments.run --config=debtags.py                 # squared hinge, wide & deep
  python -m experiments.run --config=debtags.py:loss=sigmoid
  python -m experiments.run --config=debtags.py:runlocal

The default, chosen on validation (docs/RESULTS.md, "debtags: the shipped config"): the
bag of words of package, section, synopsis, description, ``depends=`` tokens and the
package name's character 3- to 5-grams (``ngram_fields``); a full-rank linear path from the
bag to the 594 tags (``head.wide``, trained by SGD with LIBLINEAR's L2) beside a 256 -> 512
MLP with dropout 0.5 (Adam at 1e-4 beside the wide path); the squared hinge of LIBLINEAR's
L2-loss SVM; 940 steps of 256 (10 epochs of debtags; about 8 minutes here).

With tens of thousands of labels the wide path would exceed ``head.wide_max_params``
(debsuggests: 52,179 words x 11,401 labels = 595M) and is left out; the MLP is then the
whole model and trains at ``optimizer.lr`` = 1e-3 (on debsuggests' validation P@1: 0.269 at
1e-3 against 0.248 at 1e-4, docs/DATA.md).

The data path defaults to ``../shared/data/debtags.jsonl.gz`` next to the repository (or
``$MULTILABEL_JAX_DEBTAGS``); override with ``--config.data.options.path=...``. The
reference to beat (README of the data): P@1 0.947, P@3 0.663, P@5 0.506 on test.
"""

from experiments import hashtag_pretrain
from multilabel_jax import configs


def get_config(arg=None):
  args = hashtag_pretrain.parse_arg(arg, default_loss="squared_hinge")
  c = configs.base_config()
  c.data.name = "debtags"
  c.data.options = dict(ngram_fields=("package",), ngram_range=(3, 5))
  c.objective = args["loss"]
  c.objective_options = hashtag_pretrain.OBJECTIVE_OPTIONS.get(args["loss"], {})
  c.model = "bow"
  # Validation P@1 (docs/RESULTS.md): this 0.950, a 4-unit MLP 0.952 (the same within a
  # standard error of 0.004), lr 3e-4 0.940. The wide path carries debtags' ranking; the
  # MLP stays for label sets too large for it (head.wide_max_params).
  c.model_options = dict(embed_dim=256, widths=(512,), pooling="sum", dropout=0.5)
  c.head.wide = True  # The full-rank linear model on the bag, beside the MLP.
  c.batch_size = 256
  c.total_steps = 940  # 10 epochs of the 24,231 training records.
  c.optimizer.lr = 1e-3  # The MLP alone (no wide path: tens of thousands of labels).
  c.optimizer.deep_lr_with_wide = 1e-4  # Beside the wide path (debtags).
  c.optimizer.warmup_steps = 94
  c.optimizer.weight_decay = 1e-4
  c.optimizer.wide_lr = 1.0
  c.optimizer.wide_weight_decay = 4e-5  # L2 of LIBLINEAR's C = 1: 1 / (C N), N = 24,231.
  c.log_every = 94
  c.eval_every = 188
  c.checkpoint_every = 470
  c.eval.validation_examples = 0  # All 3,026 validation records.
  c.eval.oracle = False
  if args["runlocal"]:
    c.total_steps = 20
    c.log_every = 10
    c.eval_every = 0
    c.checkpoint_every = 20
    c.eval.validation_examples = 256
    c.eval.test_examples = 256
  if args["full"]:  # Twice the budget: the near-convergence check.
    c.total_steps *= 2
    c.checkpoint_every *= 2
  return c
