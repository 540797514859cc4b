"""The layering of DESIGN rules 2 and 15, checked on jssl's import graph.

losses <- methods <- step <- loop, and sources -> host -> device views: a lower
layer never imports a higher one or a sibling it must not know. Every `import`
in every jssl module counts, including the lazy ones inside functions (a lazy
import still ties the layers together). Parsed with `ast`, nothing imported, so
the test costs milliseconds and needs no TensorFlow.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jssl"

# The device-side views and the recipes they read; they know no source.
_VIEW_SIDE = ("jssl.data.recipes", "jssl.data.device_views", "jssl.data.eval_transform")
_SOURCE_SIDE = ("jssl.data.sources", "jssl.data.digits", "jssl.data.folder", "jssl.data.own",
                "jssl.data.tfds_source", "jssl.data.offline", "jssl.data.loader",
                "jssl.data.host", "jssl.data.pipeline", "jssl.data.tf_ops",
                "jssl.data.captions", "jssl.data.caption_sets")

# (importing modules, forbidden targets, the rule): prefixes, matched on whole
# dotted components.
RULES = (
    (("jssl.models",), ("jssl.losses", "jssl.methods", "jssl.data", "jssl.step", "jssl.train",
                        "jssl.evals"),
     "models never import losses, methods, data, the step, the loop or evals"),
    (("jssl.losses",), ("jssl.models", "jssl.methods", "jssl.data", "jssl.step", "jssl.train",
                        "jssl.evals"),
     "a loss is a pure function of arrays: losses import no models, methods or data"),
    (("jssl.methods",), ("jssl.data", "jssl.step", "jssl.train", "jssl.evals"),
     "methods never import data, the step, the loop or evals"),
    (("jssl.data",), ("jssl.methods", "jssl.models", "jssl.losses", "jssl.step", "jssl.train",
                      "jssl.evals"),
     "the data pipeline knows no method, model or loss"),
    (_VIEW_SIDE, _SOURCE_SIDE, "a view recipe knows no source (DESIGN rule 15)"),
    (("jssl.text",), ("jssl.models", "jssl.losses", "jssl.methods", "jssl.data", "jssl.step",
                      "jssl.train", "jssl.evals"),
     "tokenizers and prompt templates are host-side text: they know no model, data or eval"),
)


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = path.relative_to(root).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, root: pathlib.Path = ROOT):
  """Yields (line, imported jssl module) for every import in `path`.

  `from jssl import data` names the module `jssl.data`; `from jssl.data import
  views` yields `jssl.data.views` (a submodule or a name in `jssl.data`: both
  fall under the `jssl.data` prefix). Relative imports are resolved.
  """
  name = _module_name(path, root)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base


def _under(module: str, prefixes) -> bool:
  return any(module == p or module.startswith(p + ".") for p in prefixes)


def layering_violations(package: pathlib.Path = PACKAGE) -> list[str]:
  out = []
  for path in sorted(package.rglob("*.py")):
    source = _module_name(path, ROOT)
    for line, target in _imports(path):
      for importers, forbidden, why in RULES:
        if _under(source, importers) and _under(target, forbidden):
          out.append(f"{path.relative_to(ROOT)}:{line} imports {target}: {why}")
  return out


def test_the_checker_sees_lazy_relative_and_package_imports(tmp_path):
  """`from jssl import x`, relative imports and in-function imports all count."""
  (tmp_path / "jssl" / "models").mkdir(parents=True)
  net = tmp_path / "jssl" / "models" / "net.py"
  net.write_text("from jssl import losses\n"
                 "def f():\n"
                 "  from ..methods import simclr\n"
                 "  import jssl.data.views\n")
  assert list(_imports(net, tmp_path)) == [
      (1, "jssl.losses"), (3, "jssl.methods.simclr"), (4, "jssl.data.views")]


def test_jssl_modules_respect_the_layers():
  violations = layering_violations()
  assert not violations, "layering broken (DESIGN rules 2, 15):\n" + "\n".join(violations)
