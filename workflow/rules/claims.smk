"""Stage 5: the paper's claims checked against the tables, one row per claim of docs/science.md."""


rule claims:
    input:
        **measurement_tables(),
        table="results/tables/metrics.parquet",
        ntk="results/tables/ntk.parquet",
        code=library_source("claims"),
    output:
        markdown="results/claims.md",
        # the same table as an HTML page, which the report shows (it offers Markdown only as a download)
        html=report("results/claims.html", caption="../report/claims.rst", category="Claims"),
    log:
        "results/logs/claims/claims.log",
    localrule: True
    script:
        "../scripts/claims.py"
