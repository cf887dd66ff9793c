"""CleanupPass: dead code, unused submodules, lint, recompile."""
from __future__ import annotations

import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult


class CleanupPass(PassBase):
    """Remove dead nodes and unused submodules, lint, and recompile if the graph changed. Idempotent.

    Passes that change the graph recompile it themselves (``ChannelReorderPass`` does), so the module it gets is
    already in sync with its graph."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        modules_before = len(list(graph_module.named_modules()))
        removed_nodes = graph_module.graph.eliminate_dead_code()
        graph_module.delete_all_unused_submodules()
        removed_modules = len(list(graph_module.named_modules())) != modules_before
        graph_module.graph.lint()
        if removed_nodes:
            graph_module.recompile()
        return PassResult(graph_module, bool(removed_nodes or removed_modules))
