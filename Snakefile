"""Iterative linearisation of neural networks: train every (model, K) pair, tabulate, draw the
figures and check the paper's claims. `snakemake` runs the embedded default (MNIST-1D, CPU);
`snakemake --configfile config/paper.yaml` the CIFAR-10 reproduction; `snakemake NAME` one figure."""

from snakemake.utils import min_version

from itlin.validation import load_yaml

min_version("9.0")


# The embedded default, unless config files are given on the command line: each config file
# is complete (every key written out), so `--configfile config/paper.yaml` replaces the default
# instead of being deep-merged into it (which would leak the default's models into the paper's).
# It is read once first to name the line of a YAML syntax error, which Snakemake's loader does not.
if not workflow.overwrite_configfiles:
    load_yaml("config/config.yaml")

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/ntk.smk"
include: "workflow/rules/gauss_newton.smk"
include: "workflow/rules/kernel_regression.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"


# Refuse, before any job is submitted, a SLURM profile left unedited, naming the line to edit.
onstart:
    check_cluster_profile(
        workflow.resource_settings.default_resources or {},
        workflow.resource_settings.overwrite_resources,
        getattr(workflow.executor_settings, "partition_config", None),
        config["resources"]["gpu"],
    )


rule all:
    default_target: True
    input:
        all_targets(),
