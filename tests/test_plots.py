"""Tests of the claim figures (itlin.plots): files written, diverged runs marked, missing data noted,
seed bands within the data, symlog axes without a negative side."""

import math
import subprocess
import sys
from pathlib import Path

import examples
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection

from itlin import figures, plots, tables


ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = {"models": ("cnn", "mlp"), "Ks": (1, 100, math.inf), "seeds": (0, 1), "switch_steps": (0, 20), "steps": 200,
           "eval_every": 50}


@pytest.fixture(scope="module")
def metrics():
    return examples.example_metrics(**EXAMPLE, diverged=[("cnn", 100.0, 1), ("mlp", 1.0, 0)])


def texts_of(fig):
    """Every legend title and entry, annotation and text of a figure (its own and its axes')."""
    found = [text.get_text() for legend in fig.legends for text in [legend.get_title(), *legend.get_texts()]]
    found += [text.get_text() for text in fig.texts]
    for ax in fig.axes:
        found += [text.get_text() for text in ax.texts]
        found.append(ax.get_title())
    return found


def figures_of(table):
    """The names of the figures drawn from ``table`` (a ``tables.SPECS`` name) alone, in claim order."""
    return [name for name, figure in figures.FIGURES.items() if figure.table == table and not figure.extra]


METRICS_FIGURES = figures_of("metrics")
NTK_FIGURES = figures_of("ntk")


def draw(name, table, folder, **options):
    """Draw figure ``name`` of ``itlin.figures.FIGURES`` into ``folder`` (with ``options``: its extra tables and
    keyword arguments), check both files are real and non-empty, return the figure."""
    out_pdf, out_png = folder / f"{name}.pdf", folder / f"{name}.png"
    fig = getattr(plots, figures.FIGURES[name].draw)(table, out_pdf, out_png, **options)
    assert out_pdf.read_bytes().startswith(b"%PDF") and out_pdf.stat().st_size > 1000
    assert out_png.read_bytes().startswith(b"\x89PNG") and out_png.stat().st_size > 1000
    return fig


@pytest.fixture(scope="module")
def metrics_figures(metrics, tmp_path_factory):
    """Every registered figure drawn once from the shared synthetic metrics."""
    folder = tmp_path_factory.mktemp("figures")
    return {name: draw(name, metrics, folder) for name in METRICS_FIGURES}


def test_every_figure_is_registered_in_claim_order_with_its_draw_function_and_caption():
    assert set(METRICS_FIGURES) == {"training_curves", "accuracy_vs_feature_updates", "network_vs_linearised",
                                    "linearise_after_t"}
    claims = [figure.claim for figure in figures.FIGURES.values()]
    assert claims == sorted(claims) and set(claims) == {"C1", "C2", "C3", "C4", "C5", "C6", "C7", "S1", "S2", "S3",
                                                         "S4"}
    for figure in figures.FIGURES.values():
        assert callable(getattr(plots, figure.draw))
        assert (ROOT / figure.caption).read_text().startswith(f"**Claim {figure.claim}**")


def test_figure_options_come_from_the_config():
    config = {"claims": {"C1": {"tolerance_pt": 1.5}, "C4": {"tolerance_pt": 2.5}, "C5": {"tolerance_pt": 3.5},
                         "C6": {"max_difference": 0.01}, "C7": {"theory_regime": "ntk", "exponent": -0.5},
                         "S3": {"early_from": 0.02, "late_from": 0.2}}}
    options = {name: figure.options(config, TWINS) for name, figure in figures.FIGURES.items()}
    assert {name: value for name, value in options.items() if value} == {
        "accuracy_vs_feature_updates": {"tolerance_pt": 1.5}, "linearise_after_t": {"tolerance_pt": 2.5},
        "gauss_newton_damping": {"tolerance_pt": 3.5}, "kernel_regression": {"tolerance": 0.01},
        "kernel_alignment": {"twins": TWINS}, "kernel_specialisation": {"twins": TWINS},
        "eigenfunction_alignment": {"twins": TWINS},
        "loss_phases": {"early_from": 0.02, "late_from": 0.2, "twins": TWINS},
        "width_scaling": {"theory_regime": "ntk", "exponent": -0.5, "tolerance_pt": 1.5}}


@pytest.mark.parametrize(("name", "claim"), [("training_curves", "C1"), ("accuracy_vs_feature_updates", "C1"),
                                             ("network_vs_linearised", "C2"), ("linearise_after_t", "C4")])
def test_figure_titled_labelled_and_marks_diverged_runs(metrics_figures, name, claim):
    fig = metrics_figures[name]
    assert fig._suptitle.get_text().startswith(f"{claim}: ")
    for ax in fig.axes:
        assert ax.get_xlabel()
        assert "accuracy (%)" in ax.get_ylabel() or not ax.yaxis.get_visible()  # twin axes carry only x
    texts = texts_of(fig)
    assert "diverged run (x: its last finite accuracy)" in texts
    assert "diverged" in texts  # the annotation next to the marker


def test_training_curves_legend_orders_K_and_draws_infinity_black_dashed(metrics_figures):
    fig = metrics_figures["training_curves"]
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert labels[:3] == ["K = 1 (standard), 1 of 4 runs diverged", "K = 10², 1 of 4 runs diverged", "K = ∞ (linearised)"]
    infinity = fig.legends[0].legend_handles[2]
    assert infinity.get_linestyle() == "--" and infinity.get_color() == "black"
    assert [ax.get_title() for ax in fig.axes] == ["cnn", "mlp"]


def test_diverged_marker_sits_at_the_last_step_of_the_run(metrics, metrics_figures):
    cnn = metrics_figures["training_curves"].axes[0]
    offsets = np.concatenate([collection.get_offsets() for collection in cnn.collections if len(collection.get_offsets())])
    finals = tables.final_metrics(metrics)
    diverged = finals[(finals["status"] == "diverged") & (finals["model"] == "cnn")].iloc[0]
    assert any(np.allclose(point, (diverged["step"], 100 * diverged["last_accuracy"])) for point in offsets)


def test_network_vs_linearised_has_train_and_test_columns(metrics_figures):
    fig = metrics_figures["network_vs_linearised"]
    assert [ax.get_title() for ax in fig.axes] == ["cnn: train", "cnn: test", "mlp: train", "mlp: test"]
    assert any(text.startswith("final gap K=1 − K=∞") for text in texts_of(fig))


def test_network_vs_linearised_notes_a_missing_K(metrics, tmp_path):
    fig = draw("network_vs_linearised", metrics[~np.isinf(metrics["K"])], tmp_path)
    assert "no runs: K = ∞ (linearised)" in texts_of(fig)


EXAMPLE_TABLES = {"metrics": "metrics", "ntk": "ntk_table", "gauss_newton": "damping_table",
                  "kernel_regression": "kernel_regression_table"}


@pytest.mark.parametrize("name", sorted(figures.FIGURES))
def test_empty_table_gives_a_note_instead_of_a_crash(request, tmp_path, name):
    table = request.getfixturevalue(EXAMPLE_TABLES[figures.FIGURES[name].table])
    extra = {"loss_phases": {"ntk_companion": table.iloc[:0], "early_from": 0.01, "late_from": 0.1},
             "width_scaling": {"metrics_width": table.iloc[:0], "theory_regime": "ntk", "exponent": -0.5,
                               "tolerance_pt": 1.0}}.get(name, {})
    fig = draw(name, table.iloc[:0], tmp_path, **extra)
    assert any("nothing to" in text for text in texts_of(fig))


def test_linearise_after_t_without_switch_runs_says_so(metrics, tmp_path):
    fig = draw("linearise_after_t", metrics[metrics["switch_step"].isna()], tmp_path)
    assert any(text.startswith("No switch runs") for text in texts_of(fig))


def test_feature_updates_figure_names_K_on_top_axis(metrics_figures):
    top = [ax for ax in metrics_figures["accuracy_vs_feature_updates"].axes if not ax.yaxis.get_visible()]
    assert [label.get_text() for label in top[0].get_xticklabels()] == ["K=1", "K=10²", "K=∞"]


def test_seed_range_is_min_to_max():
    assert plots.seed_range(np.array([3.0, 1.0, 2.0])) == (1.0, 3.0)
    assert plots.seed_range(np.array([5.0])) == (5.0, 5.0)


def band_heights(fig):
    """The y values of every seed band (PolyCollection) and error bar (LineCollection) of a figure; a
    bar over one seed is NaN (not drawn) and left out."""
    heights = [path.vertices[:, 1] for ax in fig.axes for collection in ax.collections
               if isinstance(collection, (PolyCollection, LineCollection)) for path in collection.get_paths()]
    return [y for y in heights if np.isfinite(y).all()]


@pytest.mark.parametrize("name", sorted(METRICS_FIGURES))
def test_accuracy_bands_stay_within_0_and_100_for_two_far_apart_seeds(metrics, tmp_path, name):
    spread = metrics.copy()
    spread.loc[spread["seed"] == 1, "accuracy"] *= 0.3  # seed 1 ends near 28 %, seed 0 near 95 %
    heights = band_heights(draw(name, spread, tmp_path))
    assert heights, "no seed band drawn"
    assert all(0 <= y.min() and y.max() <= 100 for y in heights)


@pytest.mark.parametrize("name", ["training_curves", "accuracy_vs_feature_updates", "network_vs_linearised",
                                  "linearise_after_t", "ntk_distance", "kernel_alignment"])
def test_figures_with_seed_bands_say_what_the_band_is(metrics_figures, ntk_figures, name):
    assert any("range over seeds" in text for text in texts_of({**metrics_figures, **ntk_figures}[name]))


def symlog_axes(fig):
    """The symlog-x axes of a figure that carry data (not twin axes holding only ticks)."""
    return [ax for ax in fig.axes if ax.get_xscale() == "symlog" and ax.yaxis.get_visible()]


def assert_symlog_axis_starts_at_zero(ax):
    """x = 0 and the largest x sit just inside the axis (markers whole), no tick on a negative side."""
    def position(x):  # fraction of the axis width
        return ax.transAxes.inverted().transform(ax.transData.transform((x, 0)))[0]

    left, right = ax.get_xlim()
    assert 0.03 < position(0) < 0.1
    assert 0.9 < position(ax.dataLim.x1) < 0.97
    assert all(tick >= 0 for tick in ax.get_xticks() if left <= tick <= right)


@pytest.mark.parametrize("name", ["accuracy_vs_feature_updates", "linearise_after_t"])
@pytest.mark.parametrize("diverged", [False, True])
def test_symlog_axes_start_at_zero(metrics_figures, tmp_path, name, diverged):
    """With no diverged run (no marker drawn last) autoscaling once gave linear margins, ticks −10¹."""
    fig = metrics_figures[name] if diverged else draw(name, examples.example_metrics(**EXAMPLE), tmp_path)
    axes = symlog_axes(fig)
    assert axes
    for ax in axes:
        assert_symlog_axis_starts_at_zero(ax)


def test_K_colours_sequential_in_K_and_black_for_infinity():
    colours = plots.K_colours([100.0, 1.0, math.inf, 10.0])
    assert colours[math.inf] == "black"
    viridis = plt.get_cmap("viridis")
    assert [colours[K] for K in (1.0, 10.0, 100.0)] == [viridis(position) for position in np.linspace(0, 0.85, 3)]


def test_plotting_modules_do_not_import_jax():
    code = ("import sys, itlin.plots, itlin.claims, itlin.tables, itlin.figures; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- NTK figures


TWINS = {"cnn_deep_linear": "cnn_deep"}


@pytest.fixture(scope="module")
def ntk_table():
    return examples.example_ntk(Ks=(1, 100, math.inf), seeds=(0, 1), noise=0.01, twins=TWINS)


@pytest.fixture(scope="module")
def ntk_figures(ntk_table, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ntk_figures")
    return {name: draw(name, ntk_table, folder) for name in NTK_FIGURES}


@pytest.mark.parametrize(("name", "claim"), [("ntk_distance", "C3"), ("kernel_alignment", "S1"),
                                             ("kernel_specialisation", "S2")])
def test_ntk_figures_are_titled_with_their_claim_and_labelled(ntk_figures, name, claim):
    fig = ntk_figures[name]
    assert fig._suptitle.get_text().startswith(f"{claim}: ")
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>" and ax.axison:  # (a panel of missing runs is a note, axes off)
            assert ax.get_xlabel() and ax.get_ylabel()


def test_ntk_distance_shows_relative_change_centred_and_fort_distance_and_velocity(ntk_figures):
    fig = ntk_figures["ntk_distance"]
    assert [ax.get_title() for ax in fig.axes] == [
        f"{model}: {panel}" for model in ("cnn", "cnn_deep")
        for panel in ("relative change ‖Θ−Θ₀‖/‖Θ₀‖", "centred distance from Θ₀", "Fort distance from Θ₀", "velocity d(Θ_t, Θ_t+δ)/δ")]
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_color() == "black"  # K = ∞: its kernel never moves
    assert np.all(dashed[0].get_ydata() == 0)
    assert fig.axes[0].get_xscale() == "symlog" and fig.axes[0].get_yscale() == "symlog"
    assert "cnn_deep_linear" not in " ".join(texts_of(fig))  # the deep linear twin is S2's control


def test_kernel_alignment_shows_centred_and_uncentred_and_compares_depths_under_K1(ntk_figures):
    fig = ntk_figures["kernel_alignment"]
    assert [ax.get_title() for ax in fig.axes] == [
        "cnn: centred alignment (verdict)", "cnn: uncentred alignment",
        "cnn_deep: centred alignment (verdict)", "cnn_deep: uncentred alignment",
        "by model, K = 1: centred alignment (verdict)", "by model, K = 1: uncentred alignment"]
    assert {"K = 1: cnn (depth 2)", "K = 1: cnn_deep (depth 4)"} <= set(texts_of(fig))


def test_kernel_specialisation_shows_network_twin_and_frozen_kernel_full_and_backbone(ntk_table, tmp_path):
    out_pdf, out_png = tmp_path / "s.pdf", tmp_path / "s.png"
    fig = plots.kernel_specialisation(ntk_table, out_pdf, out_png, twins=TWINS)
    titles = [ax.get_title() for ax in fig.axes if "cnn_deep" in ax.get_title()]
    assert titles[:3] == [
        "cnn_deep, K = 1\nall parameters, step 1000, contrast +0.300",
        "deep linear twin cnn_deep_linear, K = 1\nall parameters, step 1000, contrast +0.000",
        "cnn_deep, K = ∞ (frozen kernel)\nall parameters, step 1000, contrast +0.000"]
    assert titles[3].startswith("cnn_deep, K = 1\nbackbone, step 1000, contrast")
    assert "no deep linear twin in the config" in texts_of(fig)  # cnn has none
    fig = draw("kernel_specialisation", ntk_table[~np.isinf(ntk_table["K"]) | (ntk_table["model"] != "cnn")], tmp_path)
    assert "no runs: cnn, K = ∞ (frozen kernel)" in texts_of(fig)
    fig = draw("kernel_specialisation", ntk_table[~np.isinf(ntk_table["K"])], tmp_path)  # no K = ∞ runs at all
    assert not any("K = ∞ (frozen" in text for text in texts_of(fig))  # no column for it


def test_specialisation_cells_are_annotated_as_seaborns_annot_does():
    """The S2 figure writes its cells' values after drawing every heatmap (``_annotate_cells``): the same
    texts, places, colours and sizes as seaborn's ``annot``, a missing cell left blank."""
    import pandas as pd
    import seaborn as sns

    from itlin.plots import kernels

    matrix = pd.DataFrame([[0.1, -0.2, np.nan], [0.3, 0.0, -0.35], [0.05, 0.38, 0.1]])
    style = dict(cmap="vlag", vmin=-0.4, vmax=0.4, center=0, square=True)
    fig, (seaborns, ours) = plt.subplots(1, 2)
    sns.heatmap(matrix, ax=seaborns, annot=True, fmt=".2f", annot_kws={"fontsize": 6}, **style)
    sns.heatmap(matrix, ax=ours, **style)
    kernels._annotate_cells(ours, matrix)

    def texts(ax):
        return [(tuple(text.get_position()), text.get_text(), text.get_color(), text.get_fontsize(),
                 text.get_horizontalalignment(), text.get_verticalalignment()) for text in ax.texts]

    assert len(texts(ours)) == 8 and {text[2] for text in texts(ours)} == {".15", "w"}  # light and dark cells
    assert texts(ours) == texts(seaborns)
    plt.close(fig)


def test_kernel_specialisation_leaves_out_diverged_runs_and_says_so(tmp_path):
    """Diverged runs have no kernel at the end of training: the matrices are those of the runs that
    completed, the panel says which runs were left out, and a K whose every run diverged says so."""
    one = examples.example_ntk(Ks=(1, math.inf), seeds=(0, 1), diverged=[("cnn", 1.0, 1)])
    fig = draw("kernel_specialisation", one, tmp_path)
    step = int(tables.diverged_runs(one)["diverged_step"].iloc[0])
    title = next(ax.get_title() for ax in fig.axes if ax.get_title().startswith("cnn, K = 1\nall parameters"))
    assert title.startswith("cnn, K = 1\nall parameters, step 1000, contrast +0.300")
    assert f"1 run(s) diverged, left out: cnn K=1 seed 1 (step {step})" in title
    every = examples.example_ntk(Ks=(1, math.inf), seeds=(0, 1), diverged=[("cnn", 1.0, 0), ("cnn", 1.0, 1)])
    fig = draw("kernel_specialisation", every, tmp_path)
    notes = [text for text in texts_of(fig) if "every run diverged" in text]
    assert notes[0] == ("cnn, K = 1: every run diverged before the end of training:\n"
                        f"cnn K=1 seed 0 (step {step}), cnn K=1 seed 1 (step {step})")


@pytest.mark.parametrize("name", sorted(NTK_FIGURES))
def test_ntk_figures_say_which_runs_diverged_or_have_degenerate_kernels(tmp_path, name):
    """A diverged run is drawn until its divergence and a degenerate kernel (NaN) not at all; the
    figure says both, and draws whatever the table holds (here every K = 1 kernel degenerate)."""
    standard = [("cnn", 1.0, 0)] if name == "eigenfunction_alignment" else []  # a figure of K = 1 alone
    table = examples.example_ntk(Ks=(1, 100, math.inf), seeds=(0, 1), diverged=[("cnn", 100.0, 1), *standard])
    table.loc[(table["K"] == 1) & table["metric"].isin(["alignment", "specialisation"]), "value"] = np.nan
    text = "\n".join(texts_of(draw(name, table, tmp_path)))
    if name == "eigenfunction_alignment":  # K = 1 only
        assert "cnn (network), 1 of 2 runs diverged (drawn until step" in text
    elif name == "kernel_specialisation":
        assert "contrast undefined" in text and "degenerate kernel (NaN)" in text
    else:
        assert "K = 10², 1 of 4 runs diverged (drawn until step" in text  # cnn and cnn_deep, two seeds each
    if name == "kernel_alignment":
        assert "K = 1 (standard), 4 of 4 runs with degenerate kernels (NaN, not drawn)" in text


@pytest.mark.parametrize("name", ["ntk_distance", "kernel_alignment"])
def test_ntk_bands_stay_within_the_values_and_step_axes_start_at_zero(ntk_table, tmp_path, name):
    spread = ntk_table.assign(value=np.where(ntk_table["seed"] == 1, 0.3 * ntk_table["value"], ntk_table["value"]))
    fig = draw(name, spread, tmp_path)
    heights = band_heights(fig)
    assert heights, "no seed band drawn"
    assert all(spread["value"].min() <= y.min() and y.max() <= spread["value"].max() for y in heights)
    assert symlog_axes(fig)
    for ax in symlog_axes(fig):
        assert_symlog_axis_starts_at_zero(ax)


# ---------------------------------------------------------------- Gauss-Newton and kernel-regression figures


@pytest.fixture(scope="module")
def damping_table():
    return examples.example_gauss_newton(models=("cnn", "mlp"), losses=("mse",),
                                         diverged=[("cnn", "mse", "gauss_newton", 30, 1)])


@pytest.fixture(scope="module")
def kernel_regression_table():
    return examples.example_kernel_regression(models=("cnn", "mlp"), difference=2e-3)


def test_gauss_newton_damping_draws_both_methods_and_their_difference_over_lambda(damping_table, tmp_path):
    fig = plots.gauss_newton_damping(damping_table, tmp_path / "c5.pdf", tmp_path / "c5.png", tolerance_pt=1.0)
    assert fig._suptitle.get_text().startswith("C5: ")
    main = [ax for ax in fig.axes if ax.get_xlabel() != "" or ax.get_ylabel() != "" or ax.get_title() != ""]
    assert sum(ax.get_ylabel() == "final test accuracy (%)" for ax in main) == 1  # one row per quantity
    assert sum(ax.get_ylabel() == "IL − GN test accuracy (pt)" for ax in main) == 1
    assert {ax.get_title() for ax in main} >= {"cnn / mse", "mlp / mse"}
    assert all(ax.get_xscale() == "log" for ax in main if ax.get_xlabel().startswith("damping λ"))
    texts = texts_of(fig)
    assert "iterative linearisation, K = 1/(ηλ)" in texts and "damped Gauss-Newton, λ (T/K rounds)" in texts
    assert "within ±1 pt (C5 tolerance)" in texts and "diverged: GN K=30 seed 1" in texts
    difference = next(ax for ax in main if ax.get_ylabel() == "IL − GN test accuracy (pt)")
    lines = [line for line in difference.get_lines() if len(line.get_ydata()) == 5]
    assert lines and all(np.allclose(line.get_ydata(), 0.3, atol=0.06) for line in lines)  # GN 0.3 pt below IL


def test_kernel_regression_figure_shows_the_deviation_and_both_models_over_t(kernel_regression_table, tmp_path):
    fig = plots.kernel_regression(kernel_regression_table, tmp_path / "c6.pdf", tmp_path / "c6.png", tolerance=0.01)
    assert fig._suptitle.get_text().startswith("C6: ")
    deviation = [ax for ax in fig.axes if ax.get_ylabel() == "largest |trained − closed form|"]
    assert len(deviation) == 2 and all(ax.get_yscale() == "log" and ax.get_xscale() == "log" for ax in deviation)
    drawn = np.concatenate([line.get_ydata() for line in deviation[0].get_lines() if len(line.get_ydata()) == 3])
    assert np.allclose(drawn, 2e-3, rtol=0.2)  # the perturbation of the example table
    assert {"C6 tolerance 0.01", "kernel regression (t → ∞)"} <= set(texts_of(fig))


# ---------------------------------------------------------------- the companion's figures (S3, S4)


def test_loss_phases_fits_the_late_power_law_and_marks_where_the_alignment_levels_off(ntk_table, tmp_path):
    metrics = examples.example_companion_metrics(models=("cnn", "cnn_deep", "cnn_deep_linear"))
    fig = draw("loss_phases", metrics, tmp_path, ntk_companion=ntk_table, early_from=0.01, late_from=0.1, twins=TWINS)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [title[:-1] for title in titles[:2]] == ["cnn: late exponent -0.50, early slope -1.4",
                                                    "cnn_deep: late exponent -0.50, early slope -1.4"]
    assert sum(text.startswith("90% of the rise\nby step") for text in texts_of(fig)) == 2
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert "its deep linear twin" in texts_of(fig) and "late phase: fitted power law" in texts_of(fig)


def test_eigenfunction_alignment_draws_each_network_above_its_twin(ntk_table, tmp_path):
    fig = draw("eigenfunction_alignment", ntk_table, tmp_path, twins=TWINS)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["cnn (network)", "cnn_deep (network)", "", "cnn_deep_linear (deep linear twin)"]
    assert "k = C − 1 = 2 (S4)" in texts_of(fig)


def test_kernel_alignment_of_the_companions_runs_compares_depths_with_their_twins_dotted(tmp_path):
    """A table of K = 1 runs alone (the companion's): one row comparing the networks, each twin dotted in its
    network's colour, and no per-K rows or K legend."""
    table = examples.example_ntk(Ks=(1,), seeds=(0, 1), twins=TWINS)
    fig = draw("kernel_alignment", table, tmp_path, twins=TWINS)
    assert [ax.get_title() for ax in fig.axes] == ["by model, K = 1: centred alignment (verdict)",
                                                   "by model, K = 1: uncentred alignment"]
    lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata())]
    assert [line.get_linestyle() for line in lines] == ["-", "-", ":"]  # cnn, cnn_deep, cnn_deep's twin
    assert lines[1].get_color() == lines[2].get_color()
    texts = texts_of(fig)
    assert "dotted: the deep linear twin (S5)" in texts and "K = 1 (standard)" not in texts


# ---------------------------------------------------------------- the width sweep's figure (C7)


def test_width_scaling_draws_each_regime_with_its_fit_the_theory_line_and_the_accuracy_measures(tmp_path):
    metrics, ntk = examples.example_width_tables(exponents={"ntk": -0.5, "standard": -0.2}, noise=0.0)
    fig = draw("width_scaling", ntk, tmp_path, metrics_width=metrics, theory_regime="ntk", exponent=-0.5,
               tolerance_pt=1.0)
    assert fig._suptitle.get_text().startswith("C7: ")
    change, gap, updates = fig.axes
    assert (change.get_xscale(), change.get_yscale(), gap.get_xscale()) == ("log", "log", "log")
    assert [label.get_text() for label in change.get_xticklabels()] == ["64", "128", "256", "512"]
    legend = texts_of(fig)
    assert "ntk regime (fitted exponent -0.50)" in legend and "standard regime (fitted exponent -0.20)" in legend
    assert "theory: width^-0.5" in legend
    np.testing.assert_allclose([line.get_ydata() for line in gap.get_lines()[:2]], 5.0)  # K = 1 minus K = ∞, pt
    np.testing.assert_allclose([line.get_ydata() for line in updates.get_lines()], 99)  # K = 10 on par: 99 updates
