"""The one thing pyproject.toml cannot say: megatron_split_lm_eval.pth goes into
site-packages itself (see eval/lm_eval_plugin.py), at the path of the interpreter that
builds the wheel, relative to its prefix as pip's data files are."""

import os
import sys
import sysconfig

from setuptools import setup

site_packages = os.path.relpath(sysconfig.get_path("purelib"), sys.prefix)
setup(data_files=[(site_packages, ["megatron_split_lm_eval.pth"])])
