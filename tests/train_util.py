"""Tiny configs for train-loop tests, and the test split of the JSONL fixture."""

from experiments import hashtag_pretrain
from experiments import jsonl as jsonl_config
from multilabel_jax.data import jsonl


def tiny_config(loss="softmax", **data_options):
  c = hashtag_pretrain.get_config(f"loss={loss},runlocal")
  c.data.options.update(num_classes=64, dim=16, num_validation=64, num_test=96, **data_options)
  c.total_steps = 12
  c.batch_size = 16
  c.eval.batch_size = 32
  c.eval.validation_examples = 64
  c.checkpoint_every = 4
  c.eval_every = 0
  c.log_every = 4
  c.model_options = dict(widths=(16,))
  c.data.stats_examples = 256
  c.async_checkpoints = False
  if loss == "embedding":
    c.objective_options = dict(dim=8)
  return c


def get_config(arg=None):
  """Lets the CLI load this file: ``--config=tests/train_util.py:<loss>``."""
  return tiny_config(arg or "softmax")


def fixture_test_records():
  """The readable records of tests/fixtures/tiny_posts.jsonl in its test split (md5 bucket
  0 of ``id``), in file order: what ``jsonl.py:runlocal`` evaluates on."""
  records = []
  for line in jsonl_config.FIXTURE.read_text().splitlines():
    try:
      record = jsonl.decode_line(line)
    except ValueError:
      continue
    if "tags" in record and jsonl.md5_bucket(str(record.get("id")), 10) == 0:
      records.append(record)
  return records
