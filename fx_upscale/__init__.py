"""fx_upscale: UPSCALE unconstrained channel pruning as torch.fx graph passes.

Start with :func:`export` (``export.py``): it traces a model, analyses its channels (``channels.py``), groups them
into segments (``segments.py``), plans which channels to keep and in which order (``planning.py``,
``ordering.py``) and applies the plan with FX passes (``passes/``). :func:`mask` chooses channels to prune and
:class:`PruneSpec` names them; :func:`register_pointwise` / :func:`register_per_channel` (``registry.py``) teach it
custom ops. Around the export: :func:`compile_backend` (``compile.py``) prunes inside
``torch.compile``; :func:`save` / :func:`load` (``serialization.py``) write and read a pruned model as a ``.pt2``
file; ``passes/`` composes with other passes under ``PassManager``.
"""

from .compile import compile_backend
from .errors import SpecError, TracingError, UnsupportedGraphError, UnsupportedOpError, UpscaleError
from .export import ExportResult, export, plan
from .masking import mask
from .planning import ChannelPlan
from .registry import register_per_channel, register_pointwise, unregister
from .report import ExportReport
from .serialization import load, save
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
    "compile_backend",
    "export",
    "load",
    "mask",
    "plan",
    "register_per_channel",
    "register_pointwise",
    "save",
    "trace",
    "unregister",
]
__version__ = "0.1.0"
