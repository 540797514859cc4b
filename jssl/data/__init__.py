"""jssl input pipeline: sources -> host decode/crop -> device views.

Sources yield examples by index: in-memory arrays (`sources`, `digits`), your
own folder or npz (`folder`), TFDS (`tfds_source`); `host` decodes and crops
on host, `loader` batches in worker threads, `device_views` makes the views
on device from a view recipe (`recipes`); `pipeline.build_datasets` picks
them from `config.data`. `eval_transform` is the deterministic resize / centre
crop / normalise of every evaluation and of an exported encoder.

Importing this package never imports TensorFlow; `tfds_source`, `tf_ops` and
`offline` import it inside the functions that need it.
"""
from jssl.data import augment
from jssl.data.digits import ArrayDataset, load_arrays, load_digits
from jssl.data.sources import ArraySource, prefetch
from jssl.data.host import HostCrops
from jssl.data.tfds_source import (DatasetNotPreparedError, TfdsTrainSpec, tfds_eval_batches,
                                   tfds_train_batches)
from jssl.data.device_views import make_view_fn
from jssl.data.eval_transform import eval_preprocess
from jssl.data.recipes import byol_recipe, simclr_recipe, view_config

__all__ = [
    "ArrayDataset", "ArraySource", "DatasetNotPreparedError", "HostCrops", "TfdsTrainSpec",
    "augment", "byol_recipe", "eval_preprocess", "load_arrays", "load_digits", "make_view_fn",
    "prefetch", "simclr_recipe", "tfds_eval_batches", "tfds_train_batches", "view_config",
]
