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


for figure, table in FIGURE_TABLES.items():

    rule:
        name:
            figure
        localrule: True
        input:
            table=table,
            code=library_source("plots"),
        output:
            pdf=report(
                f"figures/{figure}.pdf",
                caption=f"../report/{figure}.rst",
                category="Figures",
                labels={"figure": figure, "format": "PDF"},
            ),
            png=report(
                f"figures/{figure}.png",
                caption=f"../report/{figure}.rst",
                category="Figures",
                labels={"figure": figure, "format": "PNG"},
            ),
        params:
            figure=figure,
        log:
            f"results/logs/figures/{figure}.log",
        script:
            "../scripts/figure.py"
