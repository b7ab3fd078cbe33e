"""Stage 1: prepare the dataset file every run reads (download and verify, or load bundled data)."""


rule prepare_data:
    input:
        code=code("cli"),
    output:
        data="resources/data/{dataset}.npz",
        meta="resources/data/{dataset}.json",
    log:
        "results/logs/prepare_data/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_data/{dataset}.tsv"
    # Local: a download must happen where the network is (the head node of a cluster).
    localrule: True
    params:
        seed=config["dataset"]["split_seed"],
        options=dataset_options(config),
    shell:
        "python -m itlin prepare --dataset {wildcards.dataset} --out {output.data}"
        " --seed {params.seed} {params.options} > {log} 2>&1"
