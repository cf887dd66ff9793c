"""The FX passes of fx_upscale: they apply a :class:`~fx_upscale.planning.ChannelPlan` to a GraphModule.

Both subclass ``torch.fx.passes.infra.pass_base.PassBase``, return ``PassResult``, check their preconditions in
``requires`` and their invariants in ``ensures``, and are idempotent (a second run reports ``modified=False``), so
they compose with other passes under ``torch.fx.passes.infra.pass_manager.PassManager``, ``steps > 1`` included.
Building the pipeline from a plan::

    graph_module = fx_upscale.trace(spec.apply(model), (x,))     # a private, shape-annotated copy
    plan = fx_upscale.plan(graph_module, mode="upscale")          # a frozen ChannelPlan
    manager = PassManager([my_pass, *upscale_passes(plan), my_other_pass], steps=3)
    manager.add_checks(check_graph_module)                        # optional: run between passes
    manager.run_checks_after_each_pass = True
    result = manager(graph_module)                                 # PassResult(graph_module, modified)

``PassManager`` wraps whatever a pass raises in a plain ``Exception``; :func:`upscale_error` finds the
:class:`~fx_upscale.errors.UpscaleError` beneath it, and :func:`apply_plan` raises it unwrapped.

- :class:`ChannelReorderPass` reslices parameters and buffers, updates module attributes and inserts the
  ``narrow`` / ``index_select`` nodes consumers read through (``reorder.py``).
- :class:`CleanupPass` removes dead code and unused submodules, lints and recompiles (``cleanup.py``).
- ``invariants.py``: what ``ensures`` checks; :func:`check_graph_module` also fits ``PassManager.add_checks``.

``docs/INVARIANTS.md`` is the one page for composing passes: every ``node.meta`` key and buffer fx_upscale writes,
what each pass requires and ensures, what a pass of yours must keep between them, and the handler contract.
"""

from .cleanup import CleanupPass
from .invariants import check_graph_module, check_plan_applied, graph_module_check
from .pipeline import apply_plan, upscale_error, upscale_passes
from .reorder import ChannelReorderPass

__all__ = [
    "ChannelReorderPass",
    "CleanupPass",
    "apply_plan",
    "check_graph_module",
    "check_plan_applied",
    "graph_module_check",
    "upscale_error",
    "upscale_passes",
]
