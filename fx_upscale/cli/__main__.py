"""``python -m fx_upscale.cli``: the same as ``fx-upscale`` (start reading at :func:`fx_upscale.cli.main`)."""

import sys

from . import main

sys.exit(main())
