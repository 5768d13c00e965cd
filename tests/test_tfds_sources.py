"""Tests for multilabel_jax.data.tfds_sources with tfds.testing.mock_data (no downloads).

Two kinds of mock: hand-written examples (``as_data_source_fn``) with known labels, checked
against hand-computed ids; and TFDS's random examples, checked against the raw examples.
"""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from multilabel_jax.data import base  # pylint: disable=g-import-not-at-top
from multilabel_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top

SIZE = (8, 8)
WHITE = np.full((10, 12, 3), 255, np.uint8)
BLACK = np.zeros((6, 5, 3), np.uint8)
CELEB_A = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
           "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry",
           "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee",
           "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
           "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
           "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
           "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
           "Wearing_Necklace", "Wearing_Necktie", "Young"]
EMOTIONS = ["admiration", "amusement", "anger", "annoyance", "approval", "caring",
            "confusion", "curiosity", "desire", "disappointment", "disapproval", "disgust",
            "embarrassment", "excitement", "fear", "gratitude", "grief", "joy", "love",
            "nervousness", "optimism", "pride", "realization", "relief", "remorse", "sadness",
            "surprise", "neutral"]  # TFDS (and the dataset's) order: neutral last.


def _celeb(image, *true):
  return {"image": image, "attributes": {n: n in true for n in CELEB_A}}


def _emotion(text, *true):
  return {"comment_text": text.encode(), **{n: n in true for n in EMOTIONS}}


# Per dataset: (class count, three train examples, their expected label ids (max_labels=2),
# first class name check).
CASES = {
    "voc": (20, [{"image": WHITE, "labels": np.array([14, 14, 2])},
                 {"image": BLACK, "labels": np.array([6])},
                 {"image": WHITE, "labels": np.array([], np.int64)}],
            [[14, 2], [6, -1], [-1, -1]], (14, "person")),
    "coco": (80, [{"image": WHITE, "objects": {"label": np.array([0, 0, 2])}},
                  {"image": BLACK, "objects": {"label": np.array([79])}},
                  {"image": WHITE, "objects": {"label": np.array([], np.int64)}}],
             [[0, 2], [79, -1], [-1, -1]], None),  # Names need the real metadata.
    "open_images": (7186, [
        {"image": WHITE, "objects_trainable": {"label": np.array([5, 6, 7]),
                                               "confidence": np.array([1, 0, 1])}},
        {"image": BLACK, "objects_trainable": {"label": np.array([9]),
                                               "confidence": np.array([1])}},
        {"image": WHITE, "objects_trainable": {"label": np.array([3]),
                                               "confidence": np.array([0])}}],
                    [[5, 7], [9, -1], [-1, -1]], None),
    "celeb_a": (40, [_celeb(WHITE, "Smiling", "Young"), _celeb(BLACK, "Bald"), _celeb(WHITE)],
                [[31, 39], [4, -1], [-1, -1]], (39, "Young")),
    "bigearthnet": (43, [{"image": WHITE, "labels": np.array([3, 40])},
                         {"image": BLACK, "labels": np.array([0])},
                         {"image": WHITE, "labels": np.array([], np.int64)}],
                    [[3, 40], [0, -1], [-1, -1]], None),
    "goemotions": (28, [_emotion("I love this so much", "joy", "love"),
                        _emotion("so angry", "anger"), _emotion("meh")],
                   [[17, 18], [2, -1], [-1, -1]], (27, "neutral")),
}


def _mock_examples(dataset, train):
  """A mock_data context whose data sources return ``train`` for the train split and its
  first example for the other splits."""
  adapter = tfds_sources.ADAPTERS[dataset]
  train_split = adapter.splits["train"]

  def as_data_source(builder, split, decoders=None, **kwargs):
    del builder, decoders, kwargs
    return list(train) if split == train_split else [train[0]]

  return tfds.testing.mock_data(as_data_source_fn=as_data_source)


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_hand_written_examples(dataset):
  num_classes, train, expected, name_check = CASES[dataset]
  with _mock_examples(dataset, train):
    src = tfds_sources.TfdsSource(dataset, image_size=SIZE, max_labels=2)
    info = src.info
    assert info.num_classes == num_classes == len(info.class_names)
    if name_check:
      assert info.class_names[name_check[0]] == name_check[1]
    assert info.max_labels == 2 and info.num_train_examples == 3
    batch = src.read("train", np.array([0, 1, 2]))
    np.testing.assert_array_equal(batch["label_ids"], expected)
    assert batch["label_ids"].dtype == np.int32
    np.testing.assert_array_equal(src.read_labels("train", [2, 0]), [expected[2], expected[0]])
    counts = np.zeros(num_classes, np.int64)
    for row in expected:
      for c in row:
        if c >= 0:
          counts[c] += 1
    np.testing.assert_array_equal(info.train_label_counts, counts)
    assert src.split_stats["train"].empty_label_sets == 1
    assert src.split_stats["train"].truncated_labels == 0
    assert set(src.split_stats) == set(tfds_sources.ADAPTERS[dataset].splits)
    for split in src.split_stats:
      if split != "train":
        assert src.num_examples(split) == 1
        np.testing.assert_array_equal(src.read(split, [0])["label_ids"], [expected[0]])
    if dataset == "goemotions":
      assert set(batch) == {"label_ids", "token_ids", "token_weights"}
      vocab = src.featurizer.vocabulary
      words = [vocab[i - 1] for i in batch["token_ids"][0] if i]
      assert sorted(words) == ["love", "much", "so", "this"]  # "I" is one letter.
      assert src.num_embeddings == len(vocab) + 1
    else:
      assert set(batch) == {"label_ids", "image"}
      assert batch["image"].shape == (3, *SIZE, 3) and batch["image"].dtype == np.float32
      np.testing.assert_allclose(batch["image"][0], 1.0, atol=1e-6)  # White, resized.
      np.testing.assert_allclose(batch["image"][1], 0.0, atol=1e-6)


def test_strict_names_example():
  _, train, _, _ = CASES["voc"]
  with _mock_examples("voc", train):
    with pytest.raises(ValueError, match=r"voc/2007/train\[0\]: 2 labels, more than "
                                         r"max_labels=1"):
      tfds_sources.TfdsSource("voc", image_size=SIZE, max_labels=1, strict=True)


def test_malformed_example_is_counted_and_skipped():
  bad = {"image": WHITE, "objects_trainable": {"label": np.array([1, 2]),
                                               "confidence": np.array([1])}}
  good = CASES["open_images"][1][1]
  with _mock_examples("open_images", [bad, good]):
    src = tfds_sources.TfdsSource("open_images", image_size=SIZE)
    assert src.split_stats["train"].malformed_lines == 1
    assert src.num_examples("train") == 1
    batch = src.read("train", [0])  # Index 0 is the first good example.
    np.testing.assert_array_equal(batch["label_ids"], [[9]])
    np.testing.assert_allclose(batch["image"], 0.0)
    with pytest.raises(ValueError, match=r"open_images_v4/train\[0\]: malformed example: "
                                         r"2 labels but 1 confidences"):
      tfds_sources.TfdsSource("open_images", image_size=SIZE, strict=True)


@pytest.mark.parametrize("dataset", ["voc", "coco", "celeb_a", "bigearthnet", "goemotions"])
def test_random_mock_matches_raw_examples(dataset):
  adapter = tfds_sources.ADAPTERS[dataset]
  # TFDS's random mock cannot encode Sequence-of-dict features under SkipDecoding, so those
  # datasets scan with decoded images.
  scan_decodes = dataset in ("voc", "coco")
  with tfds.testing.mock_data(num_examples=3):
    src = tfds_sources.TfdsSource(dataset, image_size=SIZE, max_labels=100,
                                  scan_decodes_images=scan_decodes)
    raw = tfds.data_source(adapter.tfds_name, split=adapter.splits["train"])
    batch = src.read("train", np.arange(3))
    for i in range(3):
      want = list(dict.fromkeys(adapter.labels(raw[i], src.class_names).tolist()))
      got = batch["label_ids"][i]
      assert got[got >= 0].tolist() == want
    if adapter.input_kind == "image":
      assert batch["image"].shape == (3, *SIZE, 3)
      assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert isinstance(src.info.stats, base.DataStats)


def test_random_mock_open_images_is_malformed():
  # TFDS's random mock gives label and confidence lists of different lengths.
  with tfds.testing.mock_data(num_examples=2):
    src = tfds_sources.TfdsSource("open_images", image_size=SIZE, scan_decodes_images=True)
    assert src.info.stats.malformed_lines == 2 * len(src.split_stats)


def test_unknown_dataset_and_split():
  with pytest.raises(ValueError, match="Unknown TFDS dataset 'imagenet'"):
    tfds_sources.TfdsSource("imagenet")
  _, train, _, _ = CASES["celeb_a"]
  with _mock_examples("celeb_a", train):
    src = tfds_sources.TfdsSource("celeb_a", image_size=SIZE)
    with pytest.raises(KeyError, match="no split 'dev'"):
      src.read("dev", [0])
    with pytest.raises(IndexError):
      src.read("train", [3])
