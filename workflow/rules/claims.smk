"""Stage 5: the paper's claims judged per model on the tables, with bootstrap intervals
(itlin.claims): results/claims.md, the same as claims.json (workflow/schemas/claims.schema.json)
and as claims.html, which the report shows."""


rule claims:
    localrule: True
    input:
        metrics="results/tables/metrics.parquet",
        predictions="results/tables/predictions.parquet",
        ntk="results/tables/ntk.parquet",
        **measurement_tables(),
        code=library_source("claims"),
    output:
        markdown="results/claims.md",
        json="results/claims.json",
        html=report("results/claims.html", caption="../report/claims.rst", category="Claims"),
    params:
        # thresholds and the bootstrap: changing one reruns this rule only
        settings=config["claims"],
        # deep linear twin label -> its model: S2 compares each model with its twin
        twins=TWINS,
    conda:
        "../../environment.yml"
    log:
        "results/logs/claims/claims.log",
    script:
        "../scripts/claims.py"
