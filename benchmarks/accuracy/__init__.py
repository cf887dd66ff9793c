"""Accuracy after post-training pruning, unconstrained versus constrained, measured on the exported models.

Run ``python -m benchmarks.accuracy`` from the repository root. Modules: ``data`` (scikit-learn's digits, split,
upsampled, augmented), ``train`` (training and the checkpoint cache), ``sweep`` (mask, export, evaluate one point;
worker processes), ``compare`` (interpolation at matched sparsity, gain table, plot), ``experiment`` (the whole run,
with tqdm progress bars).
"""
