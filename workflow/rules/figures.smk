"""Stage 4: one rule per figure of itlin.figures.FIGURES, named like the figure (`snakemake
training_curves` draws it).

A figure reads only a table (never a run) and the plotting code, so restyling a figure redraws
it and reruns no training. The report lists the figures by claim (its labels sort them)."""

from itlin import figures

for figure in figures.FIGURES.values():

    rule:
        name:
            figure.name
        input:
            table=figure.path,
            extra=figure.extra_paths,
            code=code("plots"),
        # The report shows the PNG; the PDF (vector, for papers) lies beside it in figures/.
        output:
            png=report(
                f"figures/{figure.name}.png",
                caption=f"../../{figure.caption}",
                category="Figures",
                labels={"claim": figure.claim, "figure": figure.label},
            ),
            pdf=f"figures/{figure.name}.pdf",
        log:
            f"results/logs/figures/{figure.name}.log",
        localrule: True
        params:
            figure=figure.name,
            # the keyword arguments of its draw function (the claims' tolerances it shades, the twins)
            options=figure.options(config, TWINS),
        script:
            "../scripts/figure.py"
