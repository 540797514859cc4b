"""Helpers shared by the loss tests: parity fixtures, mesh, sharded == single-device."""
import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from losses_testing import parity_dir

@pytest.fixture(scope="session")
def load_fixture():
  """load_fixture("ntxent_c0_n8_d16") -> (arrays dict, hyperparameters); skips if missing."""

  def load(name):
    path = os.path.join(parity_dir(), name + ".npz")
    if not os.path.exists(path):
      pytest.skip(f"parity fixture {path} not found")
    with np.load(path, allow_pickle=False) as d:
      arrays = {k: d[k] for k in d.files if k != "meta_json"}
      meta = json.loads(str(d["meta_json"]))
    return arrays, meta.get("hyperparameters", {})

  return load


@pytest.fixture(scope="session")
def fixture_names():
  """All shipped fixture names (without .npz) per loss prefix."""
  folder = parity_dir()
  if not os.path.isdir(folder):
    return []
  return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".npz"))


@pytest.fixture(scope="session")
def mesh():
  return Mesh(np.array(jax.devices()), ("data",))


