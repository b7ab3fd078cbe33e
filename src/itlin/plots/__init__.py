"""Figures testing the paper's claims, drawn from the tidy tables (see ``itlin.tables``).

Every figure function has the signature ``(table, out_pdf, out_png, **options) -> Figure``: it draws
the figure from its table (``itlin.figures`` names each figure's table, claim and options), writes it
as PDF and PNG and returns the (closed) matplotlib figure so callers can inspect it. Seeds are
aggregated as a mean with a band (or bars) spanning the range over seeds (``seed_range``). Every run
is evaluated with ``tables.TRAINED_EVALUATOR`` (the linear model f_lin, which is what is trained; for
K = 1 it equals the network up to one optimiser step). No JAX is imported here.

The package: ``style`` (what every figure shares) and the figures by the tables they read:
``accuracy`` (C1, C2, C4: the metrics table), ``kernels`` (C3, S1, S2: the NTK tables), ``companion`` (S3, S4:
the companion's runs), ``solvers`` (C5, C6: their own tables), ``width`` (C7: the width sweep's runs).
"""

import matplotlib

matplotlib.use("Agg")  # before any module of the package imports pyplot

from itlin.plots.accuracy import (accuracy_vs_feature_updates, linearise_after_t,  # noqa: E402
                                  network_vs_linearised, training_curves)
from itlin.plots.companion import eigenfunction_alignment, loss_phases  # noqa: E402
from itlin.plots.kernels import kernel_alignment, kernel_specialisation, ntk_distance  # noqa: E402
from itlin.plots.solvers import gauss_newton_damping, kernel_regression  # noqa: E402
from itlin.plots.style import K_colours, K_label, seed_range  # noqa: E402
from itlin.plots.width import width_scaling  # noqa: E402

__all__ = ["K_colours", "K_label", "accuracy_vs_feature_updates", "eigenfunction_alignment", "gauss_newton_damping",
           "kernel_alignment", "kernel_regression", "loss_phases", "kernel_specialisation", "linearise_after_t", "network_vs_linearised", "ntk_distance",
           "seed_range", "training_curves", "width_scaling"]
