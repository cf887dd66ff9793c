"""CleanupPass: dead code, unused submodules, lint, recompile."""

from __future__ import annotations

import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import UnsupportedGraphError, describe_node


class CleanupPass(PassBase):
    """Remove dead nodes and unused submodules, lint, and recompile if the graph changed. Idempotent.

    Passes that change the graph recompile it themselves (``ChannelReorderPass`` does), so the module it gets is
    already in sync with its graph."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        modules_before = len(list(graph_module.named_modules()))
        removed_nodes = graph_module.graph.eliminate_dead_code()
        graph_module.delete_all_unused_submodules()
        removed_modules = len(list(graph_module.named_modules())) != modules_before
        if removed_nodes:
            graph_module.recompile()
        return PassResult(graph_module, bool(removed_nodes or removed_modules))

    def requires(self, graph_module: fx.GraphModule) -> None:
        """The module is a GraphModule (a plain ``nn.Module`` has no graph to clean)."""
        if not isinstance(graph_module, fx.GraphModule):
            raise UnsupportedGraphError(
                f"CleanupPass got a {type(graph_module).__name__}, not a torch.fx.GraphModule; trace the model "
                "first (fx_upscale.trace or torch.fx.symbolic_trace)"
            )

    def ensures(self, graph_module: fx.GraphModule) -> None:
        """The graph lints and has no dead node left (every node without users is an output or has side effects)."""
        graph_module.graph.lint()
        dead = [
            node
            for node in graph_module.graph.nodes
            if not node.users and node.op not in ("output", "placeholder") and not node.is_impure()
        ]
        if dead:
            raise UnsupportedGraphError(
                f"{describe_node(dead[0])} has no users after CleanupPass ({len(dead)} such nodes); the graph was "
                "changed while the pass ran. Run CleanupPass again after the pass that changed it"
            )
