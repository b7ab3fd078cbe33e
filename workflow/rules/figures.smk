"""Stage 4: one rule per figure, named like the figure (`snakemake training_curves` draws it).

A figure reads only a table (never a run) and the plotting code, so restyling a figure redraws
it and reruns no training."""

# figure name -> the table it is drawn from
FIGURE_TABLES = {
    "training_curves": "results/tables/metrics_sweep.parquet",
    "accuracy_vs_feature_updates": "results/tables/metrics_sweep.parquet",
    "network_vs_linearised": "results/tables/metrics_sweep.parquet",
    "linearise_after_t": "results/tables/metrics.parquet",
    "ntk_distance": "results/tables/ntk.parquet",
    "kernel_alignment": "results/tables/ntk.parquet",
    "kernel_specialisation": "results/tables/ntk.parquet",
    "gauss_newton_damping": "results/tables/gauss_newton.parquet",
    "kernel_regression": "results/tables/kernel_regression.parquet",
}


# figure name -> keyword arguments of its plotting function (the claims' tolerances it shades)
FIGURE_OPTIONS = {
    "accuracy_vs_feature_updates": {"tolerance_pt": config["claims"]["C1"]["tolerance_pt"]},
    "linearise_after_t": {"tolerance_pt": config["claims"]["C4"]["tolerance_pt"]},
    "kernel_specialisation": {"twins": TWINS},
    "gauss_newton_damping": {"tolerance_pt": config["claims"]["C5"]["tolerance_pt"]},
    "kernel_regression": {"tolerance": config["claims"]["C6"]["max_difference"]},
}


for figure, table in FIGURE_TABLES.items():

    rule:
        name:
            figure
        input:
            table=table,
            code=library_source("plots"),
        # The report shows the PNG; the PDF (vector, for papers) lies beside it in figures/.
        output:
            png=report(
                f"figures/{figure}.png",
                caption=f"../report/{figure}.rst",
                category="Figures",
                labels={"figure": figure},
            ),
            pdf=f"figures/{figure}.pdf",
        log:
            f"results/logs/figures/{figure}.log",
        localrule: True
        params:
            figure=figure,
            options=FIGURE_OPTIONS.get(figure, {}),
        script:
            "../scripts/figure.py"
