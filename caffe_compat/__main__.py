"""``python -m caffe_compat ...``: the ``caffe-compat`` command without the console script."""

import sys

from .cli.main import main

sys.exit(main())
