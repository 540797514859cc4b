"""Fault, end to end: the newest checkpoint of a finished smoke run is damaged
in place (4 KiB of random bytes inside its largest file, size unchanged). The
same command again detects it, moves it to corrupt/6, resumes from step 3 and
ends bit-identical to the undamaged run (today: garbage weights restored)."""
import os
import shutil

import numpy as np
import pytest

from jssl import train
from jssl_testing import export_params, load_config
from reliability_testing import largest_data_file


@pytest.mark.slow
def test_damaged_newest_checkpoint_resumes_from_previous_exactly(tmp_path, caplog):
  wd = str(tmp_path / "run")
  config = load_config("configs/simclr.py:smoke")
  config.eval.at_end = False
  train.run(config, wd)
  reference = export_params(wd)
  shutil.rmtree(os.path.join(wd, "export"))
  path = largest_data_file(wd, 6)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 2 - 2048)
    f.write(np.random.default_rng(0).bytes(4096))

  train.run(config, wd)
  assert "checkpoint step 6" in caplog.text and "damaged" in caplog.text
  assert os.path.isdir(os.path.join(wd, "corrupt", "6"))
  resumed = export_params(wd)
  assert reference.keys() == resumed.keys()
  for k in reference:
    np.testing.assert_array_equal(reference[k], resumed[k], err_msg=k)
