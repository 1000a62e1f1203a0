"""Figures a student can decode: codes sort as numbers, clusters are labelled, shared colour scales."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minirec.viz import plots  # noqa: E402


def test_code_legend_sorts_numerically():
    fig, ax = plt.subplots()
    labels = np.array([11, 2, 20, 2, 11, 1])
    plots.scatter_by_label(ax, np.random.default_rng(0).normal(size=(6, 2)), labels, "codes")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1", "2", "11", "20"]
    plt.close(fig)


def test_cluster_hierarchy_writes_every_code_at_its_centre():
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, 12, 300), rng.integers(0, 5, 300)], axis=1)
    fig = plots.cluster_hierarchy(rng.normal(size=(300, 2)), codes)
    first = fig.axes[0]
    assert sorted(int(t.get_text()) for t in first.texts) == sorted(set(codes[:, 0].tolist()))
    plt.close(fig)


def test_attention_heads_share_one_colour_bar():
    att = np.random.default_rng(0).random((3, 2, 4, 6))            # (levels, layers, heads, items)
    fig = plots.thinking_attention_grid(att)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 2 * 4 and len({im.get_clim() for im in images}) == 1
    assert len(fig.axes) == 2 * 4 + 1                              # the panels and one colour bar
    plt.close(fig)


def test_attention_labels_keep_whole_titles():
    title = "Star Wars: Episode V - The Empire Strikes Back (1980)"
    fig = plots.thinking_attention(np.random.default_rng(0).random((3, 1, 1, 2)), [title, "Fargo (1996)"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [title, "Fargo (1996)"]
    plt.close(fig)


def test_seed_curves_colour_a_model_and_dash_its_seeds():
    rows = [{"epoch": e, "val_ndcg10": 0.1 * e, "lr": 2e-3 / 2 ** e} for e in range(3)]
    fig = plots.seed_curves({"Base": {0: rows, 1: rows}, "align": {0: rows[:2]}})
    val, lr = fig.axes
    assert [line.get_label() for line in val.lines] == ["Base, seed 0", "Base, seed 1", "align, seed 0"]
    assert val.lines[0].get_color() == val.lines[1].get_color() != val.lines[2].get_color()
    assert val.lines[0].get_linestyle() != val.lines[1].get_linestyle()
    assert lr.get_yscale() == "log" and val.get_yscale() == "linear"
    assert list(val.lines[2].get_xdata()) == [1, 2]                # epochs counted from 1
    legend, = fig.legends                                           # one legend for the figure, below the panels
    assert [t.get_text() for t in legend.get_texts()] == ["Base, seed 0", "Base, seed 1", "align, seed 0"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).y1 <= min(ax.get_tightbbox(renderer).y0 for ax in fig.axes)
    plt.close(fig)


def test_rl_curves_count_optimiser_steps_and_start_validation_at_the_sft_model():
    rows = [{"epoch": e, "reward": 0.1 * e, "kl": 0.01, "flat_groups": 0.5, "val_ndcg10": 0.2 + 0.01 * e}
            for e in range(2)]
    fig = plots.rl_curves({"beam": rows}, steps_per_epoch=4, start=0.15)
    reward, *_, val = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["reward", "kl", "flat_groups", "val_ndcg10"]
    assert list(reward.lines[0].get_xdata()) == [4, 8]
    assert list(val.lines[0].get_xdata()) == [0, 4, 8] and val.lines[0].get_ydata()[0] == 0.15
    plt.close(fig)
