"""The claims of docs/science.md (C1–C6, the paper's; C7, the project's; S1–S5, the companion's) judged per model,
with bootstrap intervals.

Every claim is judged separately for each model (dataset, model label, variant; for C5 the loss
in place of the variant). A judgement is one or more *tests*: a measured quantity, its 95% bootstrap
interval and a rule ``value op threshold``. A test is ``supported`` when its whole interval satisfies
the rule, ``not supported`` when none of it does, and ``inconclusive`` when the interval straddles the
threshold; ``not measured`` when the runs it needs are missing or NaN, or when its interval resamples
seeds alone and fewer than ``Settings.min_seeds`` are measured (``Test.lacking`` says so). A model's
verdict combines its tests (any ``not supported`` decides; then any ``not measured``; then any
``inconclusive``). Thresholds come from the config's ``claims:`` section (``Settings``), never from this
package. Every check judges whatever the tables hold, and a model it cannot judge is listed with the reason.

Intervals (``Bootstrap``): percentile bootstrap over seeds and, for accuracies, over test examples
too, both resampled with replacement; runs that share seeds and the test split are resampled
together (paired), so a difference between two periods K keeps the correlation of their errors.
Each model's resamples are drawn from a generator seeded by the configured seed and the claim and
model names, so the table is deterministic and adding a model changes no other row. No JAX here.

The package: ``verdicts`` (what a verdict is, the bootstrap), the checks by the tables they read
(``accuracy``: C1, C2, C4; ``kernels``: C3, S1, S2, S4, S5; ``phases``: S3; ``solvers``: C5, C6; ``width``: C7), ``registry`` (every claim's
texts and check, in order, and ``evaluate``) and ``render`` (claims.md, .json, .html).
"""

from itlin.claims.registry import CLAIMS, evaluate
from itlin.claims.render import write
from itlin.claims.verdicts import Settings

__all__ = ["CLAIMS", "Settings", "evaluate", "write"]
