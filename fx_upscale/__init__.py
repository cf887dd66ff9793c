"""fx_upscale: UPSCALE unconstrained channel pruning as torch.fx graph passes.

Start with :func:`export` (``export.py``): it traces a model, analyses its channels (``channels.py``), groups them
into segments (``segments.py``), plans which channels to keep and in which order (``planning.py``,
``ordering.py``) and applies the plan with FX passes (``passes/``). :func:`mask` chooses channels to prune and
:class:`PruneSpec` names them.
"""
from .errors import SpecError, TracingError, UnsupportedGraphError, UnsupportedOpError, UpscaleError
from .export import ExportResult, export, plan
from .masking import mask
from .planning import ChannelPlan
from .report import ExportReport
from .spec import PruneSpec
from .tracing import trace

__all__ = [
    "ChannelPlan",
    "ExportReport",
    "ExportResult",
    "PruneSpec",
    "SpecError",
    "TracingError",
    "UnsupportedGraphError",
    "UnsupportedOpError",
    "UpscaleError",
    "export",
    "mask",
    "plan",
    "trace",
]
__version__ = "0.1.0"
