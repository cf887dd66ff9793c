"""fx_upscale: UPSCALE unconstrained channel pruning as torch.fx graph passes.

Start with :func:`export` (``export.py``): it traces a model, analyses its channels (``channels.py``), groups them
into segments (``segments.py``), plans which channels to keep and in which order (``planning.py``,
``ordering.py``) and applies the plan with FX passes (``passes/``). :func:`mask` chooses channels to prune and
:class:`PruneSpec` names them. What each op does to channels lives in one handler per op family (``ops/``):
:func:`register_pointwise` / :func:`register_per_channel` teach the default :class:`HandlerTable` custom ops,
and :meth:`HandlerTable.register_handler` adds a full handler. Around the export: :func:`compile_backend`
(``compile.py``) prunes inside ``torch.compile``; :func:`save` / :func:`load` (``serialization.py``) write and read
a pruned model as a ``.pt2`` file; ``passes/`` composes with other passes under ``PassManager``;
:func:`recalibrate_batchnorm` (``recalibration.py``) re-estimates BatchNorm statistics of a pruned model on
calibration batches. Mode ``upscale`` chooses each consumer's access by the latency a :class:`CostModel`
(``cost_model.py``) predicts: :func:`calibrate` measures its constants on this machine, :func:`predict_latency`
prices a whole forward.
"""

from . import cost_model
from .compile import compile_backend
from .cost_model import CostModel, calibrate, predict_latency
from .errors import MaskWarning, SpecError, TracingError, UnsupportedGraphError, UnsupportedOpError, UpscaleError
from .export import ExportResult, export, plan
from .masking import mask
from .ops import HandlerTable, OpHandler, default_handlers
from .plan_types import ChannelPlan
from .recalibration import recalibrate_batchnorm
from .report import ExportReport
from .serialization import load, save
from .spec import PruneSpec
from .tracing import trace

__all__ = [
    "ChannelPlan",
    "CostModel",
    "HandlerTable",
    "MaskWarning",
    "OpHandler",
    "ExportReport",
    "ExportResult",
    "PruneSpec",
    "SpecError",
    "TracingError",
    "UnsupportedGraphError",
    "UnsupportedOpError",
    "UpscaleError",
    "calibrate",
    "compile_backend",
    "cost_model",
    "default_handlers",
    "export",
    "load",
    "mask",
    "plan",
    "predict_latency",
    "recalibrate_batchnorm",
    "register_per_channel",
    "register_pointwise",
    "save",
    "trace",
    "unregister",
]
__version__ = "0.1.0"

register_pointwise = default_handlers().register_pointwise
register_per_channel = default_handlers().register_per_channel
unregister = default_handlers().unregister
