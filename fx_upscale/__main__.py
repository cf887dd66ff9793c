"""``python -m fx_upscale``: the ``fx-upscale`` command line (``cli.py``)."""

import sys

from .cli import main

sys.exit(main())
