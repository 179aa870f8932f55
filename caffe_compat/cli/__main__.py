"""``python -m caffe_compat.cli ...``: the same command as ``python -m caffe_compat``."""

import sys

from .main import main

sys.exit(main())
