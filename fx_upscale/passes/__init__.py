"""The FX passes of fx_upscale: they apply a :class:`~fx_upscale.planning.ChannelPlan` to a GraphModule.

Both subclass ``torch.fx.passes.infra.pass_base.PassBase`` and return ``PassResult``, so they compose with other
passes under ``torch.fx.passes.infra.pass_manager.PassManager``::

    plan = fx_upscale.export(model, inputs).plan          # or plan_channels(...) on your own GraphModule
    PassManager([ChannelReorderPass(plan), CleanupPass()])(graph_module)

- :class:`ChannelReorderPass` reslices parameters and buffers, updates module attributes and inserts the
  ``narrow`` / ``index_select`` nodes consumers read through. A second run with the same plan changes nothing.
- :class:`CleanupPass` removes dead code and unused submodules, lints and recompiles.
"""
from .cleanup import CleanupPass
from .reorder import ChannelReorderPass

__all__ = ["ChannelReorderPass", "CleanupPass"]
