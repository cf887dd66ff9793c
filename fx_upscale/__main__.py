"""``python -m fx_upscale``: the ``fx-upscale`` command line (``cli/``)."""

import sys

from .cli import main

sys.exit(main())
