"""The figures: one per protocol (:func:`plot_protocol`) and the training curves (:func:`plot_training`).

A protocol's figure has a panel per (side, BatchNorm as trained or recalibrated) row and model column, a colour per
heuristic, unconstrained solid and constrained dashed; Torch-Pruning's points (black crosses) where the x axis is
parameters or latency.
"""

from __future__ import annotations

from collections.abc import Sequence

from .compare import PROTOCOLS, curve, members, x_value, y_column


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shown(protocol: str, x) -> object:
    """What the x axis shows: the amount, parameters kept or relative latency, in percent."""
    return 100 * x if protocol == "amount" else 100 * (1 - x)


def plot_protocol(
    rows: Sequence[dict], bases: dict[bool, dict[str, float]], protocol: str, path: str, tool: Sequence[dict] = ()
) -> None:
    plt = _pyplot()
    spec = PROTOCOLS[protocol]
    models = list(dict.fromkeys(row["model"] for row in rows))
    panels = [(side, recal) for side in dict.fromkeys(row["side"] for row in rows) for recal in (False, True)]
    heuristics = list(dict.fromkeys(row["heuristic"] for row in rows))
    colours = dict(zip(heuristics, plt.get_cmap("tab10").colors))
    figure, axes = plt.subplots(len(panels), len(models), figsize=(3.2 * len(models), 2.6 * len(panels)),
                                squeeze=False, sharey=True)  # fmt: skip
    for i, (side, recal) in enumerate(panels):
        for j, model in enumerate(models):
            ax = axes[i][j]
            for heuristic in heuristics:
                for method, style in (("unconstrained", "-"), ("constrained", "--")):
                    points = members(rows, model=model, side=side, heuristic=heuristic, method=method)
                    if points:
                        xs, ys = curve(points, bases[recal][model], spec.x, y_column(spec, recal))
                        ax.plot(shown(protocol, xs), 100 * ys, style, color=colours[heuristic], lw=1.1, marker=".",
                                ms=3, label=f"{heuristic} {method}")  # fmt: skip
            if protocol != "amount":
                column = "recalibrated_accuracy" if recal else "accuracy"
                points = members(tool, model=model)
                ax.plot([shown(protocol, x_value(r, spec.x)) for r in points], [100 * r[column] for r in points],
                        "kx", ms=5, label="torch-pruning (l2)")  # fmt: skip
            _decorate(ax, f"{model}, {side}, {'recalibrated' if recal else 'as trained'}", protocol)
            if i == len(panels) - 1:
                ax.set_xlabel(spec.axis, fontsize=8)
            if j == 0:
                ax.set_ylabel("test accuracy (%)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(heuristics) + 1, fontsize=7, frameon=False)
    figure.suptitle(f"accuracy at {spec.title}", fontsize=10)
    figure.tight_layout(rect=(0, 0.05, 1, 0.98))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _decorate(ax, title: str, protocol: str) -> None:
    ax.set_title(title, fontsize=8)
    if protocol != "amount":
        ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)


def plot_training(models: Sequence[dict], path: str) -> None:
    """Training loss (log scale) and test accuracy per epoch, a line per model."""
    plt = _pyplot()
    figure, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for info in models:
        history = info.get("history") or []
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], marker=".", ms=3, label=info["model"])
        accuracy_ax.plot(epochs, [100 * h["test_accuracy"] for h in history], marker=".", ms=3, label=info["model"])
    loss_ax.set(yscale="log", xlabel="epoch", ylabel="mean training loss")
    accuracy_ax.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(80, 100))
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
    accuracy_ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
