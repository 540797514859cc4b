"""Prompt templates and class names shipped as data (jssl/text/templates.py)."""
import pytest

from jssl import errors
from jssl.text import templates


def test_counts_and_one_slot_each():
  assert len(templates.templates("imagenet")) == 80  # CLIP's ImageNet ensemble
  assert len(templates.templates("cifar10")) == 18   # CLIP data/prompts.md
  assert templates.templates("cifar100") == templates.templates("cifar10")
  for name in ("imagenet", "cifar10", "cifar100"):
    ts = templates.templates(name)
    assert len(set(ts)) == len(ts), name
    for t in ts:
      assert t.count("{}") == 1 and t.count("{") == 1 and t.count("}") == 1, t
  assert templates.templates("imagenet")[0] == "a bad photo of a {}."
  assert templates.templates("imagenet")[-1] == "a tattoo of the {}."
  assert templates.templates("cifar10")[0] == "a photo of a {}."


def test_class_names():
  c10 = templates.class_names("cifar10")
  assert c10 == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
  c100 = templates.class_names("cifar100")
  assert len(c100) == 100 and len(set(c100)) == 100
  assert c100 == sorted(c100)  # CIFAR-100's fine labels are in alphabetical order
  assert c100[1] == "aquarium fish" and c100[-1] == "worm"
  inet = templates.class_names("imagenet")
  assert len(inet) == 1000
  # Spot checks against ImageNet's label order (CLIP's spellings).
  assert (inet[0], inet[1], inet[207], inet[281], inet[409], inet[954], inet[999]) == (
      "tench", "goldfish", "Golden Retriever", "tabby cat", "analog clock", "banana",
      "toilet paper")
  # CLIP's list keeps two duplicate names.
  assert len(set(inet)) == 998 and inet[657] == inet[744] == "missile"
  assert inet[836] == inet[837] == "sunglasses"
  # A copy: callers cannot edit the shipped data.
  c10.append("x")
  assert len(templates.class_names("cifar10")) == 10


def test_unknown_names_and_checks():
  with pytest.raises(errors.ConfigError, match="'imagenet21k'.*choose one of"):
    templates.templates("imagenet21k")
  with pytest.raises(errors.ConfigError, match="'cifar20'.*choose one of"):
    templates.class_names("cifar20")
  with pytest.raises(errors.ConfigError, match="empty"):
    templates.check_templates([])
  with pytest.raises(errors.ConfigError, match="'a photo'"):
    templates.check_templates(["a photo"])
  with pytest.raises(errors.ConfigError, match="exactly one"):
    templates.check_templates(["{} and {}"])
  assert templates.fill("a photo of a {}.", "cat") == "a photo of a cat."
