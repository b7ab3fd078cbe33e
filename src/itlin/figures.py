"""The figures, one entry each in the order of the claims they test (docs/science.md): the claim, the
table a figure is drawn from, how the report labels it and the options its draw function takes from
the config. ``workflow/rules/figures.smk`` makes one rule per entry; the figure ``name`` is drawn by
``itlin.plots.<name>`` and captioned by ``workflow/report/<name>.rst``.

No plotting here (nor pandas): the Snakefile imports this to define its rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


def _no_options(config: Mapping, twins: Mapping[str, str]) -> dict:
    """The options of a figure that takes none from the config."""
    return {}


@dataclass(frozen=True)
class Figure:
    """One figure: its ``name`` (rule, files, draw function), the ``claim`` it tests, a ``label`` for the
    report, the ``table`` it is drawn from (a ``tables.SPECS`` name) and that table's ``path``,
    ``options(config, twins)``: the keyword arguments of its draw function, from the workflow config and
    the deep linear twins (twin label -> model label), and ``extra``: more tables (``tables.TABLES`` names, files
    ``results/tables/<name>.parquet``) that the draw function takes as keyword arguments of those names."""

    name: str
    claim: str
    label: str
    table: str
    path: str
    options: Callable[[Mapping, Mapping[str, str]], dict] = _no_options
    extra: tuple[str, ...] = ()

    @property
    def extra_paths(self) -> list[str]:
        """The files of the ``extra`` tables."""
        return [f"results/tables/{name}.parquet" for name in self.extra]

    @property
    def draw(self) -> str:
        """The name of the function in ``itlin.plots`` that draws this figure."""
        return self.name

    @property
    def caption(self) -> str:
        """The report's caption of this figure, relative to the repository root."""
        return f"workflow/report/{self.name}.rst"


def _tolerance(claim: str, key: str = "tolerance_pt", option: str = "tolerance_pt") -> Callable[[Mapping, Mapping], dict]:
    """The options of a figure that shades ``claim``'s tolerance (the config's ``claims.<claim>.<key>``)."""
    return lambda config, twins: {option: config["claims"][claim][key]}


def _twins(config: Mapping, twins: Mapping[str, str]) -> dict:
    """The options of a figure that draws each companion network beside its deep linear twin."""
    return {"twins": dict(twins)}


COMPANION_NTK = "results/tables/ntk_companion.parquet"
"""The NTK table of the companion's runs, in its own regime: the S1, S2 and S4 figures are drawn from it."""
SWEEP = "results/tables/metrics_sweep.parquet"
"""The metrics of the K sweep alone (no switch runs), so that the figures of the sweep never wait for
(or redraw after) the C4 switch runs; linearise_after_t reads metrics.parquet, which has them."""

FIGURES: dict[str, Figure] = {figure.name: figure for figure in (
    Figure("training_curves", "C1", "training curves", "metrics", SWEEP),
    Figure("accuracy_vs_feature_updates", "C1", "accuracy vs feature updates", "metrics", SWEEP, _tolerance("C1")),
    Figure("network_vs_linearised", "C2", "network vs linearised", "metrics", SWEEP),
    Figure("ntk_distance", "C3", "NTK distance", "ntk", "results/tables/ntk.parquet"),
    Figure("linearise_after_t", "C4", "linearise after t", "metrics", "results/tables/metrics.parquet",
           _tolerance("C4")),
    Figure("gauss_newton_damping", "C5", "Gauss-Newton damping", "gauss_newton", "results/tables/gauss_newton.parquet",
           _tolerance("C5")),
    Figure("kernel_regression", "C6", "kernel regression", "kernel_regression",
           "results/tables/kernel_regression.parquet", _tolerance("C6", "max_difference", "tolerance")),
    Figure("width_scaling", "C7", "width scaling", "ntk", "results/tables/ntk_width.parquet",
           lambda config, twins: {"theory_regime": config["claims"]["C7"]["theory_regime"],
                                  "exponent": config["claims"]["C7"]["exponent"],
                                  "tolerance_pt": config["claims"]["C1"]["tolerance_pt"]}, extra=("metrics_width",)),
    Figure("kernel_alignment", "S1", "kernel alignment", "ntk", COMPANION_NTK, _twins),
    Figure("kernel_specialisation", "S2", "kernel specialisation", "ntk", COMPANION_NTK, _twins),
    Figure("loss_phases", "S3", "two phases of the loss", "metrics", "results/tables/metrics_companion.parquet",
           lambda config, twins: {**config["claims"]["S3"], "twins": twins}, extra=("ntk_companion",)),
    Figure("eigenfunction_alignment", "S4", "eigenfunction alignment", "ntk", COMPANION_NTK, _twins),
)}
"""Every figure the pipeline can draw, by name, in claim order (the config's ``figures`` picks some)."""
