"""The pass pipeline that applies a ChannelPlan, and the way back to an fx_upscale error from PassManager's.

:func:`upscale_passes` lists the passes (put them in your own ``PassManager`` between other passes);
:func:`apply_plan` runs them; :func:`upscale_error` finds the :class:`~fx_upscale.errors.UpscaleError` under the
plain ``Exception`` with which ``PassManager`` wraps whatever a pass raises.
Run in a ``PassManager``, the passes get recompiled after each one as well (PassManager recompiles
unconditionally); :func:`apply_plan` runs them directly, so an export generates code twice in all: once for the
traced graph, once for the pruned one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.fx.passes.infra.pass_manager import PassManager

from ..errors import UpscaleError
from ..ops import HandlerTable
from ..plan_types import ChannelPlan
from .cleanup import CleanupPass
from .reorder import ChannelReorderPass


def upscale_passes(plan: ChannelPlan, handlers: HandlerTable | None = None) -> list[PassBase]:
    """The passes that apply ``plan``, in order: ``[ChannelReorderPass(plan, handlers), CleanupPass()]``;
    ``handlers`` is the table the plan was made with (its invariants are checked after the reorder)."""
    return [ChannelReorderPass(plan, handlers), CleanupPass()]


def apply_plan(
    graph_module: fx.GraphModule, plan: ChannelPlan, *, steps: int = 1, handlers: HandlerTable | None = None
) -> PassResult:
    """Run :func:`upscale_passes`: once each, in order (each pass recompiles the module only if it changed the
    graph, so the module's code is generated once); with ``steps > 1`` under a ``PassManager``, which reruns
    them and recompiles after every pass. An fx_upscale error is raised as itself, unwrapped."""
    if steps == 1:
        modified = False
        for upscale_pass in upscale_passes(plan, handlers):
            result = upscale_pass(graph_module)
            assert result is not None, "fx_upscale's passes return a PassResult"
            graph_module, modified = result.graph_module, modified or result.modified
        return PassResult(graph_module, modified)
    passes: list[Callable[[fx.GraphModule], PassResult | None]] = [*upscale_passes(plan, handlers)]
    try:
        return PassManager(passes, steps=steps)(graph_module)
    except Exception as error:  # PassManager wraps every pass error in a plain Exception
        cause = upscale_error(error)
        if cause is None:
            raise
    raise cause  # outside the handler: the error keeps its own cause and traceback, without the wrapper


def upscale_error(error: BaseException) -> UpscaleError | None:
    """The first :class:`UpscaleError` in ``error``'s chain of causes (``error`` itself included), if any.

    ``PassManager`` raises ``Exception("An error occurred when running the 'ChannelReorderPass' pass ...")`` from
    the pass's own error, so that error is the wrapper's ``__cause__``.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UpscaleError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
