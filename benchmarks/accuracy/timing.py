"""CPU latency of an exported model beside the unpruned one: eager, batch 8, one thread, interleaved.

:func:`latency` times the two modules round-robin (``fx_upscale.latency.time_round_robin``: the order changes
every round, so drift and the other worker's load fall on both alike) and returns the export's median and
quartiles, the unpruned model's median over the same rounds, and their ratio, which is what the matched-latency
comparison interpolates.
"""

from __future__ import annotations

import torch
from torch import nn

from fx_upscale.latency import summarize, time_round_robin

BATCH = 8
REPEATS = 11
WARMUP = 2


def latency(unpruned: nn.Module, pruned: nn.Module, x: torch.Tensor) -> dict:
    """Median and quartiles (ms) of ``pruned`` on ``x``, the unpruned median and ``relative_latency``."""
    callables = {("unpruned",): unpruned.eval(), ("pruned",): pruned.eval()}
    samples = time_round_robin(callables, x.contiguous(), repeats=REPEATS, warmup=WARMUP)
    median, q1, q3, _, _ = summarize(samples[("pruned",)])
    base = summarize(samples[("unpruned",)])[0]
    return {
        "latency_ms": round(median, 3),
        "latency_q1_ms": round(q1, 3),
        "latency_q3_ms": round(q3, 3),
        "unpruned_ms": round(base, 3),
        "relative_latency": round(median / base, 4),
    }
