"""Stage 5: the paper's claims judged per model on the tables, with bootstrap intervals
(itlin.claims): results/claims.md, the same as claims.json (workflow/schemas/claims.schema.json)
and as claims.html, which the report shows (it offers Markdown only as a download)."""


rule claims:
    input:
        **measurement_tables(),
        metrics="results/tables/metrics.parquet",
        predictions="results/tables/predictions.parquet",
        ntk="results/tables/ntk.parquet",
        code=code("claims"),
    output:
        markdown="results/claims.md",
        json="results/claims.json",
        html=report("results/claims.html", caption="../report/claims.rst", category="Claims"),
    log:
        "results/logs/claims/claims.log",
    localrule: True
    params:
        # thresholds and the bootstrap: changing one reruns this rule only
        settings=config["claims"],
        # deep linear twin label -> its companion model: S2 and S5 compare each model with its twin
        twins=TWINS,
    script:
        "../scripts/claims.py"
