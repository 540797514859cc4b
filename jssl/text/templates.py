"""Prompt templates and class names for zero-shot classification, as CLIP ships them.

Sources (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision", Sec. 3.1.4 "Prompt engineering and ensembling"):
  * 'imagenet': the 80 templates of openai/CLIP
    notebooks/Prompt_Engineering_for_ImageNet.ipynb (its `imagenet_templates`,
    also in notebooks/imagenet_data.json), in that order.
  * 'cifar10' / 'cifar100': the 18 templates and the class names of openai/CLIP
    data/prompts.md ("CIFAR10" / "CIFAR100" sections; the two template lists
    are identical), in that order. The class order is the datasets' label order
    (CIFAR-100's fine labels are alphabetical).
  * class names 'imagenet': CLIP's 1000 ImageNet names, in label order
    (jssl/text/imagenet_classes.py, from the notebook's imagenet_data.json).

Each template has exactly one '{}', replaced by a class name.
"""
from __future__ import annotations

from jssl import errors

IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

CIFAR100_CLASSES = (
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow tree", "wolf", "woman", "worm",
)

_TEMPLATES = {"imagenet": IMAGENET_TEMPLATES, "cifar10": CIFAR_TEMPLATES,
              "cifar100": CIFAR_TEMPLATES}
_CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES, "imagenet": None}


def templates(name: str) -> list[str]:
  """The prompt templates of `name` ('imagenet': 80, 'cifar10' / 'cifar100': 18)."""
  if name not in _TEMPLATES:
    raise errors.ConfigError(
        f"prompt templates {name!r} are not shipped; choose one of {sorted(_TEMPLATES)}")
  return list(_TEMPLATES[name])


def class_names(name: str) -> list[str]:
  """Class names of `name` in label order ('cifar10': 10, 'cifar100': 100,
  'imagenet': 1000)."""
  if name not in _CLASSES:
    raise errors.ConfigError(
        f"class names {name!r} are not shipped; choose one of {sorted(_CLASSES)}")
  if name == "imagenet":
    from jssl.text import imagenet_classes  # pylint: disable=g-import-not-at-top
    return list(imagenet_classes.IMAGENET_CLASSES)
  return list(_CLASSES[name])


def check_templates(templates_: list[str]) -> None:
  """Raises ConfigError unless there is at least one template and each has
  exactly one '{}'."""
  if not templates_:
    raise errors.ConfigError("zero-shot prompt templates are empty: give at least one")
  for t in templates_:
    if not isinstance(t, str) or t.count("{}") != 1:
      raise errors.ConfigError(
          f"zero-shot prompt template {t!r} must contain exactly one '{{}}' for the class name")


def fill(template: str, class_name: str) -> str:
  """`template` with its '{}' replaced by `class_name` (other braces kept as is)."""
  return template.replace("{}", class_name, 1)
