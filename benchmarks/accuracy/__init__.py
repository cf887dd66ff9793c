"""Accuracy after post-training pruning, unconstrained versus constrained, under three protocols, beside Torch-Pruning.

Run ``python -m benchmarks.accuracy`` from the repository root; start reading at ``experiment.run_experiment``.
Modules: ``data`` (scikit-learn's digits, split, upsampled, augmented), ``train`` (training, its curves and the
checkpoint cache), ``sweep`` (mask, export, evaluate one point as trained and with BatchNorm recalibrated; worker
processes), ``timing`` (CPU latency beside the unpruned model), ``depgraph`` (Torch-Pruning at target parameter
counts), ``compare`` (the protocols: same amount, matched parameter count, matched latency; gain and tool tables),
``plots``, ``experiment`` (the whole run, with tqdm progress bars), ``finetune`` (a short fine-tuning of exports) and
``reproducibility`` (training under other machines' CPU kernels).
"""
