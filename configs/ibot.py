"""`--config=configs/ibot.py:<preset>` in a checkout: re-exports the run book.

The run book itself (presets, data, expected results) is `jssl/configs/ibot.py`,
installed with jssl so that `--config=ibot:<preset>` works from any directory.
A re-export rather than a symlink: git writes symlinks as plain text files on
Windows checkouts, and a wheel would copy the target anyway.
"""
from jssl.configs.ibot import PRESETS, get_config

__all__ = ("PRESETS", "get_config")
