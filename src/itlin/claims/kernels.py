"""The kernel claims: C3 (the empirical NTK changes substantially, most in the first phase), judged on the NTK
table of the main paper's runs; S1 (kernel-target alignment rises early, faster and larger in deeper networks),
S2 (class-specific kernels, which deep linear networks do not develop), S4 (the targets' energy in the NTK's
top eigenvectors rises early) and S5 (deep linear networks align but do not specialise), judged on the
companion's runs in its own regime (``ntk_companion``). Per-seed changes of the trained kernel of the K = 1
runs, resampled over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from itlin import record, summaries, tables
from itlin.claims.verdicts import (GROUP_KEYS, ModelVerdict, Settings, Test, formatted, groups, join, judged,
                                   seed_matrix, seed_mean_draws, seed_means, short)


def _completed_runs(ntk: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple, str]]:
    """The NTK rows of runs that trained to the end, and a note per model group naming its diverged runs
    (their last kernels are not those of the end of training) and runs with degenerate (NaN) kernels."""
    notes: dict[tuple, list[str]] = {}
    diverged = tables.diverged_runs(ntk)
    for group, runs in groups(diverged):
        notes.setdefault(group, []).append(f"{len(runs)} diverged run(s) excluded: {tables.describe_runs(runs)}")
    completed = ntk[ntk["status"] == "ok"]
    degenerate = completed[completed["value"].isna()].drop_duplicates(tables.RUN_KEYS)
    for group, runs in groups(degenerate):
        names = ", ".join(f"K={record.format_K(K)} seed {seed}" for K, seed in zip(runs["K"], runs["seed"]))
        notes.setdefault(group, []).append(f"degenerate (zero-norm) kernels, NaN and left out of means: {names}")
    return completed, {group: "; ".join(parts) for group, parts in notes.items()}


def _of_group(rows: pd.DataFrame, group: Sequence[str]) -> pd.DataFrame:
    """The rows of one model group (values of ``GROUP_KEYS``)."""
    return rows[(rows[GROUP_KEYS] == pd.Series(group, index=GROUP_KEYS)).all(axis=1)]


def _models(ntk: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    """(group, rows) of every ReLU model of the NTK table, whether or not its runs finished or measured the
    kernel a claim needs: a model the claim cannot judge is listed as not measured, with the reason. The
    last step of its rows is the end of its training (a run or seed without a snapshot there has none)."""
    return groups(tables.nonlinear(summaries.period_runs(ntk)))


def _change_per_seed(rows: pd.DataFrame, early_fraction: float, relative_to_start: bool,
                     final_step: int) -> pd.DataFrame | None:
    """Per seed of one run group (a metric's rows against step): the value at the last snapshot in the
    first ``early_fraction`` of training (``early``) and at ``final_step``, the model's last (``final``),
    minus the value at step 0 if ``relative_to_start``; with those steps. None without step 0, an early
    snapshot or the last; NaN for a seed without one of them or whose kernel there was degenerate (NaN)."""
    early_steps = rows.loc[(rows["step"] > 0) & (rows["step"] <= early_fraction * final_step), "step"]
    if early_steps.empty or not (rows["step"] == 0).any() or not (rows["step"] == final_step).any():
        return None
    early_step = int(early_steps.max())
    by_step = rows.groupby(["seed", "step"])["value"].mean().unstack("step")
    by_step = by_step.reindex(columns=[0, early_step, final_step])  # a step all NaN or absent: a column of NaN
    start = by_step[0] if relative_to_start else 0.0
    return pd.DataFrame({"early": by_step[early_step] - start, "final": by_step[final_step] - start,
                         "early_step": early_step, "final_step": final_step})


def _seed_draws(settings: Settings, claim: str, group: Sequence[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, draws) of the means over seeds of the rows of ``values`` (conditions × seeds)."""
    rng = settings.bootstrap.generator(claim, *group)
    draws = seed_mean_draws(values, settings.bootstrap.weights(rng, values.shape[1]))
    return seed_means(values), draws


NEEDS_SNAPSHOTS = "needs K = 1 snapshots at step 0, in the early phase and at the end"
COMPANION_NTK = "ntk_companion"
"""The NTK table of the companion's runs, in its regime: the table S1, S2, S4 and S5 are judged on."""


def check_c3(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """C3: per model, the K = 1 trained kernel ends far from its initial one, by its relative change and
    its centred distance, and most of either change happens in the early phase."""
    thresholds = settings["C3"]
    ntk, notes = _completed_runs(measured["ntk"])
    measures = {"relative_change": "relative change ‖Θ − Θ₀‖/‖Θ₀‖", "centred_distance": "centred distance from Θ₀"}
    results = []
    for group, runs in _models(measured["ntk"]):
        changes = {}
        for metric in measures:
            rows = _of_group(summaries.kernel_rows(ntk, metric), group)
            changes[metric] = _change_per_seed(rows[rows["K"] == 1], settings.early_phase_fraction, False,
                                               runs["step"].max())
        if any(change is None for change in changes.values()):
            results.append(ModelVerdict(*group, note=join(NEEDS_SNAPSHOTS, notes.get(group, ""))))
            continue
        seeds = sorted(set().union(*(change.index for change in changes.values())))
        values = np.vstack([changes[metric].reindex(seeds)[column].to_numpy()
                            for metric in measures for column in ("final", "early")])
        point, draws = _seed_draws(settings, "C3", group, values)
        tests = []
        for index, (metric, name) in enumerate(measures.items()):
            final, early = 2 * index, 2 * index + 1
            early_step = int(changes[metric]["early_step"].iloc[0])
            tests.append(Test(f"K = 1 {name} at the end",
                              *judged(settings.bootstrap, lambda v, f=final: v[f], point, draws), ">=",
                              thresholds[f"min_{metric}"], lacking=settings.too_few_seeds(values[[final]])))
            tests.append(Test(f"share of the {name.split(' ‖')[0]} reached by step {early_step}",
                              *judged(settings.bootstrap, lambda v, f=final, e=early: v[e] / v[f], point, draws),
                              ">=", thresholds["min_early_share"],
                              lacking=settings.too_few_seeds(values[[final, early]])))
        results.append(ModelVerdict(*group, tuple(tests), note=join(_c3_detail(ntk, group), notes.get(group, ""))))
    return results


def _c3_detail(ntk: pd.DataFrame, group: Sequence[str]) -> str:
    """The scale-blind Fort distance and the norm ratio at the end (K = 1, K = ∞), reported beside C3's verdict."""
    parts = []
    for metric, name in (("distance_from_init", "Fort distance"), ("norm_ratio", "norm ratio ‖Θ‖/‖Θ₀‖")):
        rows = _of_group(summaries.kernel_rows(ntk, metric), group)
        final = rows[rows["step"] == rows["step"].max()].groupby("K")["value"].mean()
        values = [f"K={record.format_K(K)} {short(v)}" for K, v in final.items() if K == 1 or math.isinf(K)]
        if values:
            parts.append(f"{name} at the end: " + ", ".join(values))
    return "; ".join(parts)


def check_s1(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """S1: per model, the K = 1 centred kernel-target alignment rises, mostly in the early phase; per
    architecture with several depths, deeper models rise faster (per step, over the early phase) and more."""
    ntk, notes = _completed_runs(measured[COMPANION_NTK])
    rises, results = {}, []
    for group, runs in _models(measured[COMPANION_NTK]):
        alignment = _of_group(summaries.kernel_rows(ntk, "alignment"), group)
        change = _change_per_seed(alignment[alignment["K"] == 1], settings.early_phase_fraction, True,
                                  runs["step"].max())
        if change is None:
            results.append(ModelVerdict(*group, note=join(NEEDS_SNAPSHOTS, notes.get(group, ""))))
            continue
        rises[group] = (change, runs[["architecture", "depth"]].iloc[0])
        uncentred = _of_group(summaries.kernel_rows(ntk, "alignment_uncentred"), group)
        uncentred_change = _change_per_seed(uncentred[uncentred["K"] == 1], settings.early_phase_fraction, True,
                                            runs["step"].max())
        detail = (f"uncentred alignment rise {formatted(uncentred_change['final'].mean(), '+.3f')}, "
                  f"{formatted(uncentred_change['early'].mean(), '+.3f')} by step {int(change['early_step'].iloc[0])}"
                  if uncentred_change is not None else "")
        tests = rise_tests(settings, "S1", group, change, "K = 1 centred alignment", settings["S1"], detail)
        results.append(ModelVerdict(*group, tests, notes.get(group, "")))
    return results + _compare_depths(rises, settings)


def rise_tests(settings: Settings, claim: str, group: Sequence[str], change: pd.DataFrame, name: str,
               thresholds: Mapping[str, float], detail: str = "") -> tuple[Test, Test]:
    """A measure rises over training by at least ``min_rise``, and at least ``min_early_share`` of the rise comes
    in the early phase (``change``: per seed, from ``_change_per_seed`` relative to step 0)."""
    values = np.vstack([change["final"].to_numpy(), change["early"].to_numpy()])
    point, draws = _seed_draws(settings, claim, group, values)
    return (Test(f"{name} rise over training", *judged(settings.bootstrap, lambda v: v[0], point, draws), ">=",
                 thresholds["min_rise"], detail=detail, lacking=settings.too_few_seeds(values[[0]])),
            Test(f"share of the rise reached by step {int(change['early_step'].iloc[0])}",
                 *judged(settings.bootstrap, lambda v: v[1] / v[0], point, draws), ">=",
                 thresholds["min_early_share"], lacking=settings.too_few_seeds(values)))


def _compare_depths(rises: dict, settings: Settings) -> list[ModelVerdict]:
    """Per (dataset, variant, architecture) with models of several depths, each deeper model against the
    next shallower one: the early rise per 1000 steps and the final rise of the centred alignment, deeper
    minus shallower (> 0: 'faster and larger in deeper networks')."""
    by_architecture: dict = {}
    for (dataset, model, variant), (change, info) in rises.items():
        if pd.notna(info["depth"]):
            by_architecture.setdefault((dataset, variant, info["architecture"]), []).append((int(info["depth"]), model, change))
    results = []
    for (dataset, variant, architecture), models_ in sorted(by_architecture.items()):
        models_.sort(key=lambda item: item[0])
        for (depth_a, model_a, a), (depth_b, model_b, b) in zip(models_, models_[1:]):
            seeds = sorted(set(a.index) | set(b.index))
            rate = lambda change: 1000 * change["early"] / change["early_step"]  # noqa: E731
            values = np.vstack([rate(b).reindex(seeds), rate(a).reindex(seeds), b["final"].reindex(seeds),
                                a["final"].reindex(seeds)])
            label = f"{model_b} vs {model_a} (depth {depth_b} vs {depth_a})"
            point, draws = _seed_draws(settings, "S1", (dataset, label, variant), values)
            tests = (Test("deeper minus shallower: early rise per 1000 steps",
                          *judged(settings.bootstrap, lambda v: v[0] - v[1], point, draws), ">", 0.0,
                          detail=f"{model_b} {formatted(point[0], '+.3f')}, {model_a} {formatted(point[1], '+.3f')}",
                          lacking=settings.too_few_seeds(values[[0, 1]])),
                     Test("deeper minus shallower: rise over training",
                          *judged(settings.bootstrap, lambda v: v[2] - v[3], point, draws), ">", 0.0,
                          detail=f"{model_b} {formatted(point[2], '+.3f')}, {model_a} {formatted(point[3], '+.3f')}",
                          lacking=settings.too_few_seeds(values[[2, 3]])))
            results.append(ModelVerdict(dataset, label, variant, tests))
    return results


def _final_specialisation(ntk: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per period run, the trained kernel's specialisation for ``metric`` (``specialisation`` or
    ``specialisation_backbone``) at its last snapshot, if that is its model's last (a run without the end of
    training has none). Columns ``RUN_KEYS``, activation, step, contrast and dominant_share (NaN for a
    degenerate kernel)."""
    keys = tables.RUN_KEYS + ["activation", "step"]
    entries = summaries.kernel_rows(ntk, metric)
    summary = pd.concat([summaries.specialisation_contrast(entries, keys),
                         summaries.diagonal_dominance(entries, keys)], axis=1).reset_index()
    last = summary.sort_values("step").groupby(tables.RUN_KEYS, dropna=False).tail(1)
    return last[last["step"] == last.groupby(GROUP_KEYS)["step"].transform("max")]


def check_s2(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """S2: per model with a deep linear twin, at K = 1 at the end of training: most heads of the backbone
    kernel align most with their own class (the effect the claim names), and more of them than in the twin
    (same seeds). The specialisation contrasts are reported beside the verdict."""
    share = settings["S2"]["min_dominant_share"]
    ntk, notes = _completed_runs(measured[COMPANION_NTK])
    backbone = _final_specialisation(ntk, "specialisation_backbone")
    full = _final_specialisation(ntk, "specialisation")
    twin_of = {model: twin for twin, model in twins.items()}
    results = []
    for group, _ in _models(measured[COMPANION_NTK]):
        dataset, model, variant = group
        runs = _of_group(backbone, group)
        twin = backbone[(backbone["model"] == twin_of.get(model)) & (backbone["dataset"] == dataset)
                        & (backbone["variant"] == variant) & (backbone["K"] == 1)]
        standard = runs[runs["K"] == 1]
        note = join(notes.get(group, ""), notes.get((dataset, twin_of.get(model), variant), ""))
        if model not in twin_of or twin.empty or standard.empty:
            results.append(ModelVerdict(*group, note=join("needs completed K = 1 runs of the model and of its deep "
                                                          "linear twin (config companion.models)", note)))
            continue
        seeds = sorted(set(standard["seed"]) | set(twin["seed"]))
        values = np.vstack([seed_matrix(standard, seeds, column) for column in ("dominant_share", "contrast")]
                           + [seed_matrix(twin, seeds, column) for column in ("dominant_share", "contrast")])
        point, draws = _seed_draws(settings, "S2", group, values)

        def mean_contrast(table: pd.DataFrame, label: str, K: float) -> str:
            rows = table[(table["model"] == label) & (table["dataset"] == dataset) & (table["variant"] == variant)
                         & (table["K"] == K)]
            return formatted(rows["contrast"].mean(), "+.3f")

        detail = (f"specialisation contrast (mean diagonal minus mean off-diagonal) of the backbone: {model} "
                  f"{formatted(point[1], '+.3f')}, {twin_of[model]} {formatted(point[3], '+.3f')}; full kernel "
                  f"{model} {mean_contrast(full, model, 1.0)}, {twin_of[model]} {mean_contrast(full, twin_of[model], 1.0)}"
                  + (f"; {model} K = ∞ (frozen) backbone {mean_contrast(backbone, model, math.inf)}"
                     if (runs["K"] == math.inf).any() else ""))
        tests = (Test("share of heads whose final backbone kernel aligns most with their own class",
                      *judged(settings.bootstrap, lambda v: v[0], point, draws), ">", share, detail=detail,
                      lacking=settings.too_few_seeds(values[[0]])),
                 Test(f"that share, {model} minus its deep linear twin",
                      *judged(settings.bootstrap, lambda v: v[0] - v[2], point, draws), ">", 0.0,
                      detail=f"{twin_of[model]} {formatted(point[2], '.2f')}",
                      lacking=settings.too_few_seeds(values[[0, 2]])))
        results.append(ModelVerdict(*group, tests, note))
    return results


def check_s4(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """S4: per model, the share C(k) of the centred targets in the top k = C − 1 eigenvectors of the K = 1 trace
    kernel (the dimension the centred targets span) rises over training, mostly in the early phase."""
    ntk, notes = _completed_runs(measured[COMPANION_NTK])
    results = []
    for group, runs in _models(measured[COMPANION_NTK]):
        energy = _of_group(summaries.kernel_rows(ntk, "target_energy"), group)
        rank = summaries.target_rank(runs)
        change = _change_per_seed(energy[(energy["K"] == 1) & (energy["top_k"] == rank)], settings.early_phase_fraction,
                                  True, runs["step"].max()) if rank else None
        if change is None:
            results.append(ModelVerdict(*group, note=join(NEEDS_SNAPSHOTS, notes.get(group, ""))))
            continue
        final = energy[energy["step"] == runs["step"].max()].groupby("top_k")["value"].mean()
        detail = "C(k) at the end, k = 1 … 2C: " + " ".join(formatted(value, ".2f") for value in final)
        tests = rise_tests(settings, "S4", group, change, f"K = 1 target energy C({rank}) in the top {rank} eigenvectors",
                           settings["S4"], detail)
        results.append(ModelVerdict(*group, tests, notes.get(group, "")))
    return results


def check_s5(measured: Mapping[str, pd.DataFrame], settings: Settings, twins: Mapping[str, str]) -> list[ModelVerdict]:
    """S5: per deep linear twin, its centred alignment rises over training as S1 asks of a network (S1's
    ``min_rise``), while its heads do not specialise (the share of heads whose backbone kernel aligns most with
    their own class stays below S2's ``min_dominant_share``)."""
    ntk, notes = _completed_runs(measured[COMPANION_NTK])
    backbone = _final_specialisation(ntk, "specialisation_backbone")
    results = []
    for group, runs in groups(tables.linear(summaries.period_runs(measured[COMPANION_NTK]))):
        alignment = _of_group(summaries.kernel_rows(ntk, "alignment"), group)
        change = _change_per_seed(alignment[alignment["K"] == 1], settings.early_phase_fraction, True,
                                  runs["step"].max())
        shares = _of_group(backbone, group)
        shares = shares[shares["K"] == 1]
        if change is None or shares.empty:
            results.append(ModelVerdict(*group, note=join(NEEDS_SNAPSHOTS, notes.get(group, ""))))
            continue
        seeds = sorted(set(change.index) | set(shares["seed"]))
        values = np.vstack([change["final"].reindex(seeds).to_numpy(), seed_matrix(shares, seeds, "dominant_share")])
        point, draws = _seed_draws(settings, "S5", group, values)
        network = twins.get(group[1], "its network")
        tests = (Test(f"K = 1 centred alignment rise over training (deep linear twin of {network})",
                      *judged(settings.bootstrap, lambda v: v[0], point, draws), ">=", settings["S1"]["min_rise"],
                      lacking=settings.too_few_seeds(values[[0]])),
                 Test("share of heads whose final backbone kernel aligns most with their own class",
                      *judged(settings.bootstrap, lambda v: v[1], point, draws), "<",
                      settings["S2"]["min_dominant_share"], lacking=settings.too_few_seeds(values[[1]])))
        results.append(ModelVerdict(*group, tests, notes.get(group, "")))
    return results

