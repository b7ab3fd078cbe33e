"""Stage 5: the paper's claims checked against the tables, one row per claim of docs/science.md."""


rule claims:
    localrule: True
    input:
        table="results/tables/metrics.parquet",
        ntk="results/tables/ntk.parquet",
        **measurement_tables(),
        code=library_source("claims"),
    output:
        report("results/claims.md", caption="../report/claims.rst", category="Claims"),
    log:
        "results/logs/claims/claims.log",
    script:
        "../scripts/claims.py"
