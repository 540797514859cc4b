"""Register a locally held dataset archive into a TFDS data dir, without network.

TFDS normally downloads a dataset's archive and checks its registered sha256
(`tfds build cifar10`, or on first use). On machines without internet, and for
archives obtained elsewhere or rebuilt from public sources (whose bytes, and so
sha256, may differ from the registered ones), we instead seed TFDS's download
cache: TFDS looks for `<data_dir>/downloads/<name>/<fname>` where `fname` is
derived from the registered URL and sha256
(`tensorflow_datasets/core/download/resource.py: get_dl_fname`), plus a `.INFO`
JSON sidecar; when both exist it reuses the file without re-hashing it. Then
`download_and_prepare` runs fully offline.

Command line (the archive in the format TFDS downloads, e.g. CIFAR-10's binary
version `cifar-10-binary.tar.gz`):

  python -m jssl.data.offline --dataset=cifar10 \
      --archive=PATH/TO/cifar-10-binary.tar.gz \
      --data_dir=$HOME/tensorflow_datasets

Preparing CIFAR-10 takes ~35 s per core and writes 134 MB to
`<data_dir>/cifar10/3.0.2`; `<data_dir>/downloads/extracted` can be deleted
afterwards. The archive itself is symlinked, never copied.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence


def _registered_url(builder_cls, url: Optional[str]) -> str:
  """Picks the registered URL the archive stands in for (the only one, or `url`)."""
  url_infos = builder_cls.url_infos or {}
  if url is not None:
    if url not in url_infos:
      raise ValueError(f"URL {url!r} is not registered for {builder_cls.name}; "
                       f"registered: {sorted(url_infos)}")
    return url
  if len(url_infos) != 1:
    raise ValueError(f"{builder_cls.name} registers {len(url_infos)} URLs "
                     f"({sorted(url_infos)}); pass url= to choose one.")
  return next(iter(url_infos))


def seed_download_cache(name: str, archive_path: str, data_dir: str,
                        *, url: Optional[str] = None) -> str:
  """Places `archive_path` in the TFDS download cache of `data_dir`.

  Args:
    name: TFDS dataset name, e.g. 'cifar10'.
    archive_path: the local archive that stands in for the registered download.
    data_dir: TFDS data dir; the cache is `<data_dir>/downloads/<name>/`.
    url: the registered URL the archive replaces, when the dataset has several.

  Returns:
    The path of the (symlinked) cache entry.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.download import resource as resource_lib  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(archive_path):
    raise FileNotFoundError(f"Archive for {name!r} not found: {archive_path}")
  builder_cls = tfds.builder_cls(name)
  url = _registered_url(builder_cls, url)
  sha = builder_cls.url_infos[url].checksum
  dst = os.path.join(data_dir, "downloads", name, resource_lib.get_dl_fname(url, sha))
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  if os.path.lexists(dst):
    os.remove(dst)
  # A symlink, not a copy: the data never moves (and never lands in the repo).
  os.symlink(os.path.abspath(archive_path), dst)
  with open(dst + ".INFO", "w") as f:
    json.dump({"urls": [url]}, f)
  return dst


def register_archive(name: str, archive_path: str, data_dir: str,
                     *, url: Optional[str] = None) -> str:
  """Seeds the download cache and prepares `name` into `data_dir` offline.

  Args:
    name: TFDS dataset name, e.g. 'cifar10'.
    archive_path: local archive in the layout TFDS expects for its registered URL.
    data_dir: TFDS data dir to prepare into (created if absent).
    url: see `seed_download_cache`.

  Returns:
    The prepared dataset's directory, e.g. `<data_dir>/cifar10/3.0.2`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return os.fspath(builder.data_dir)
  seed_download_cache(name, archive_path, data_dir, url=url)
  builder.download_and_prepare(
      download_dir=os.path.join(data_dir, "downloads"),
      # The archive is not byte-identical to the registered one (see module doc),
      # so TFDS must not try to verify or re-fetch it.
      download_config=tfds.download.DownloadConfig(
          register_checksums=False, force_checksums_validation=False),
  )
  return os.fspath(builder.data_dir)


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", required=True, help="TFDS name, e.g. cifar10")
  parser.add_argument("--archive", required=True, help="local archive path")
  parser.add_argument("--data_dir", required=True, help="TFDS data dir to prepare into")
  parser.add_argument("--url", default=None, help="registered URL, if several")
  args = parser.parse_args(argv)
  path = register_archive(args.dataset, args.archive, args.data_dir, url=args.url)
  print(f"Prepared {args.dataset} at {path}")


if __name__ == "__main__":
  main()
