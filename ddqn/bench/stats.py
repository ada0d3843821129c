"""Statistics every benchmark shares: when a run reached a score, how noisy one evaluation is, intervals over seeds.

**When a run reaches a level.** One evaluation is the mean greedy score of ``eval_episodes`` games (50 by default);
its standard error (:func:`standard_error`) is ≈ 0.6–0.8 apples at score 10, so a single lucky evaluation can sit
a point above the curve. A run therefore reaches a level at the first evaluation where the **trailing mean of the
last** :data:`TRAILING_K` **evaluations** (that one and the ``TRAILING_K − 1`` before it) is at or above the level
(:func:`reach`). The mean is causal: it uses no evaluation after the one it is reported at, so the minutes, env
steps and server updates it returns are those of the evaluation at which the crossing was known. A curve with fewer
than ``TRAILING_K`` evaluations, or whose trailing mean never gets there, has **not reached** the level (None) —
never "reached at the budget". :func:`trailing_at` is where that mean stood at a given minute (the REPORT's
curve shape: is a run still rising at the end of its budget?). ``TRAILING_K = 5`` is what the audit used: 5
evaluations average the noise down by √5 (≈ 0.3 apples at score 10) while costing 4 evaluation intervals of delay
(20,000 env steps at the benches' 5,000). No single-evaluation variant is kept: nothing needs one (the best snapshot
of a curve is picked by its single mean and then re-played on fresh games, ``runs.confirm_best``).

**Over seeds.** :func:`seed_interval` takes one value per seed (minutes to a level, a final score…), None where a
seed did not reach, and returns the mean and a two-sided 95 % Student-t interval over the seeds that reached, their
number and the number of seeds (:class:`SeedInterval`). The t quantiles are a table for 1–30 degrees of freedom and
a Cornish–Fisher expansion beyond (error < 1e-5); no scipy.

Units follow the curve rows: ``minutes`` (training wall-clock or simulated), ``env_steps`` (summed over workers),
``updates`` (server updates or serial gradient steps); scores are apples (Snake) or raw game points (Atari).

**Speedups over seeds.** :func:`seed_speedup`: W workers against W = 1 from each seed's minutes to a level: the ratio
of the means, and the range from the slowest seed's ratio to the fastest's against W = 1's mean; a seed that did not
reach the level makes the mean (and the worst seed) "not reached", never the budget; a ratio above W is flagged as
noise. **Curves alike?** :func:`split_test`: a permutation test of whether two groups of curves (simulated and real)
are exchangeable, whose chance of passing under a perfect simulator is known exactly before anything runs.

**A steady rate.** :func:`steady_updates_per_s`: server updates/s over a run's ``train.csv`` rows after its first
quarter of env steps (start-up and warm-up excluded), real or simulated.
"""
from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TRAILING_K = 5  # evaluations in the trailing mean that decides when a level is reached (the audit's choice)
RULE = {"kind": "trailing mean", "k": TRAILING_K}  # how a result's ``reach`` was computed (stored beside it)
TOLERANCE = 1e-9  # a trailing mean this close below a level counts as reaching it (float rounding of the sum)

# two-sided 95 % Student-t quantiles t(0.975, df) for df = 1 … 30
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
        2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
        2.0518, 2.0484, 2.0452, 2.0423)
Z975 = 1.959963984540054  # the normal quantile the expansion starts from


def trailing_means(values: Sequence[float], k: int = TRAILING_K) -> list[float | None]:
    """The mean of each value and the ``k − 1`` before it; None for the first ``k − 1`` positions (no full window)."""
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    out: list[float | None] = [None] * min(k - 1, len(values))
    out += [math.fsum(values[i - k + 1:i + 1]) / k for i in range(k - 1, len(values))]
    return out


def reach(curve: Sequence[Mapping[str, Any]], level: float, k: int = TRAILING_K,
          key: str = "greedy_mean") -> dict[str, Any] | None:
    """Where the trailing ``k``-evaluation mean of ``curve[i][key]`` first reaches ``level``: that evaluation's
    ``minutes``, ``env_steps`` and (when the rows have them) ``updates``, with the ``trailing_mean`` and ``k``; None
    when it never does (or the curve has fewer than ``k`` evaluations)."""
    means = trailing_means([float(r[key]) for r in curve], k)
    for row, mean in zip(curve, means):
        if mean is not None and mean >= level - TOLERANCE:
            hit = {u: row[u] for u in ("minutes", "env_steps", "updates") if u in row}
            return {**hit, "trailing_mean": mean, "k": k}
    return None


def reach_levels(curve: Sequence[Mapping[str, Any]], levels: Iterable[float], k: int = TRAILING_K,
                 key: str = "greedy_mean") -> dict[str, dict[str, Any] | None]:
    """:func:`reach` for each level, keyed by ``str(level)`` (as the results' JSON stores them)."""
    return {str(lv): reach(curve, lv, k, key) for lv in levels}


def within_budget(curve: Sequence[Mapping[str, Any]], minutes: float) -> list[Mapping[str, Any]]:
    """The rows of ``curve`` taken by ``minutes`` (its rows' ``minutes`` ≤ the budget): what a run with that budget
    would have had. :func:`reach` is causal, so a level reached by then is reached at the same row of the cut curve."""
    return [r for r in curve if r["minutes"] <= minutes + TOLERANCE]


def trailing_at(curve: Sequence[Mapping[str, Any]], minutes: float, k: int = TRAILING_K,
                key: str = "greedy_mean") -> float | None:
    """The trailing ``k``-evaluation mean at the last evaluation taken by ``minutes`` (:func:`within_budget`): where
    the curve stood then, causally; None with fewer than ``k`` evaluations by then."""
    rows = within_budget(curve, minutes)
    return trailing_means([float(r[key]) for r in rows[-k:]], k)[-1] if len(rows) >= k else None


def best_trailing_mean(curve: Sequence[Mapping[str, Any]], k: int = TRAILING_K, key: str = "greedy_mean") -> float:
    """The highest trailing ``k``-evaluation mean of a curve (0.0 when it has fewer than ``k`` evaluations): the
    highest level :func:`reach` says the curve reached."""
    return max((m for m in trailing_means([float(r[key]) for r in curve], k) if m is not None), default=0.0)


def speedup(base: Mapping[str, Any] | None, other: Mapping[str, Any] | None, unit: str = "minutes") -> float | None:
    """``base[unit] ÷ other[unit]`` of two :func:`reach` results (how many times sooner ``other`` got there); None
    when either did not reach the level."""
    return base[unit] / other[unit] if base and other and other[unit] else None


def standard_error(scores: Sequence[float]) -> float:
    """The standard error of one evaluation's mean score: sample standard deviation (ddof 1) ÷ √n, in the scores'
    unit; NaN for fewer than 2 games (undefined)."""
    n = len(scores)
    if n < 2:
        return math.nan
    mean = math.fsum(scores) / n
    return math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (n - 1) / n)


def t975(df: int) -> float:
    """The two-sided 95 % Student-t quantile t(0.975, df): the table for df ≤ 30, a Cornish–Fisher expansion beyond."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1 (got {df})")
    if df <= len(T975):
        return T975[df - 1]
    z, v = Z975, float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


@dataclass(frozen=True)
class SeedInterval:
    """Per-seed values summarised: ``mean`` and the 95 % t interval [``low``, ``high``] over the ``reached`` seeds
    with a value (None when none reached; no interval with fewer than 2), of ``n`` seeds. With ``reached < n`` the
    numbers describe the reached seeds only (for minutes to a level: the others needed more than the budget)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    reached: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


def seed_interval(values: Sequence[float | None]) -> SeedInterval:
    """Mean and two-sided 95 % Student-t interval (mean ± t(0.975, m − 1) · s/√m, s the sample standard deviation)
    over the ``m`` values that are not None; ``n`` counts every seed."""
    got = [float(v) for v in values if v is not None]
    m = len(got)
    if m == 0:
        return SeedInterval(None, None, None, len(values), 0)
    mean = math.fsum(got) / m
    if m < 2:
        return SeedInterval(mean, None, None, len(values), m)
    half = t975(m - 1) * standard_error(got)
    return SeedInterval(mean, mean - half, mean + half, len(values), m)


def format_interval(iv: SeedInterval, spec: str = ".1f") -> str:
    """``mean [low, high] (reached of n)`` for a report; "not reached (0 of n)" when no seed has a value, and no
    interval with one."""
    if iv.mean is None:
        return f"not reached (0 of {iv.n})"
    if iv.low is None or iv.high is None:
        return f"{iv.mean:{spec}} ({iv.reached} of {iv.n}; no interval)"
    return f"{iv.mean:{spec}} [{iv.low:{spec}}, {iv.high:{spec}}] ({iv.reached} of {iv.n})"


def format_goal(g: Mapping[str, Any], mark: str = "") -> str:
    """A goal over seeds (``met``: True, False or None while seeds are still to run) in words, e.g. "open (worst seed
    16.10, mean 16.10 over 1 seed; seeds 0, 1 still to run)"; ``mark`` (e.g. ``**``) wraps the verdict."""
    verdict = mark + {True: "met", False: "missed", None: "open"}[g["met"]] + mark
    seeds = (f"worst seed {g['worst']:.2f}, mean {g['mean']:.2f} over {g['seeds']} seed{'s' * (g['seeds'] != 1)}"
             if g["seeds"] else "no seed run yet")
    to_run = g.get("to_run")
    return f"{verdict} ({seeds}" + (f"; seed{'s' * (len(to_run) != 1)} {', '.join(map(str, to_run))} still to run"
                                   if to_run else "") + ")"


def steady_updates_per_s(train_csv: Path) -> float | None:
    """Server updates/s from train.csv's rows after the first quarter of the run (the workers' start excluded)."""
    if not train_csv.exists():
        return None
    with open(train_csv) as f:
        rows = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f) if r.get("server/updates")]
    rows = [r for r in rows if r["step"] >= rows[-1]["step"] / 4] if rows else []
    if len(rows) < 2 or rows[-1]["wall_s"] <= rows[0]["wall_s"]:
        return None
    return (rows[-1]["server/updates"] - rows[0]["server/updates"]) / (rows[-1]["wall_s"] - rows[0]["wall_s"])


def fit_a_b(points: Mapping[int, float]) -> dict[str, float] | None:
    """Least squares cost(S) = a + b/S over ``points`` {S: cost} (a: the cost per message, b: the whole vector's);
    None with fewer than two distinct S. ``rms_us``: the residuals' root mean square."""
    xs = [1 / s for s in points]
    if len(set(xs)) < 2:
        return None
    ys = list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    rms = math.sqrt(sum((a + b * x - y) ** 2 for x, y in zip(xs, ys)) / len(xs))
    return {"a_us": a, "b_us": b, "rms_us": rms}


def mean_if_all(minutes: Sequence[float | None]) -> float:
    """Mean minutes to a level over seeds (None: that seed never reached it) when every seed reached it, else ∞, so
    a seed that never reached a level is never counted as its budget; ∞ for no seeds."""
    return math.fsum(minutes) / len(minutes) if minutes and None not in minutes else math.inf


def seed_speedup(base: Sequence[float | None], runs: Sequence[float | None], workers: int) -> dict[str, Any]:
    """W workers' speedup to one level over W = 1, from minutes per seed (None: that seed did not reach it).

    ``speedup``: mean(base) ÷ mean(runs), None unless every seed of both reached the level; ``worst``/``best``:
    mean(base) ÷ the slowest / fastest seed of ``runs`` (``worst`` None when a seed did not reach it; ``best`` None
    when none did); ``reached``/``n``: seeds of ``runs``; ``noise``: the names of those figures above ``workers``
    (more than W times faster is noise, not a result)."""
    got = [float(m) for m in runs if m is not None]
    mean_base = math.fsum(base) / len(base) if base and all(b is not None for b in base) else None
    full = mean_base is not None and got and len(got) == len(runs)
    out = {"speedup": mean_base / (math.fsum(got) / len(got)) if full else None,
           "worst": mean_base / max(got) if full else None,
           "best": mean_base / min(got) if mean_base is not None and got else None,
           "reached": len(got), "n": len(runs)}
    out["noise"] = [k for k in ("speedup", "worst", "best") if out[k] is not None and out[k] > workers]
    return out


def split_test(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Are the curves ``a`` (e.g. simulated) and ``b`` (real) exchangeable? Every curve: its values at one shared
    grid (e.g. greedy score at the same server update counts). The statistic is the mean, over pairs of one curve
    of each group, of their mean squared difference over the grid: how far apart the groups are. Under
    exchangeability (a perfect simulator: its curves are just more seeds), every way of splitting the n = |a| + |b|
    curves into groups of those sizes is equally likely to be the observed one, so the observed split's rank among
    all C(n, |a|) of them is uniform. ``p``: the share of splits at least as far apart as the observed one; ``pass``:
    some split that is not the observed one or its mirror is at least as far apart. A perfect simulator passes with
    probability ``pass_chance`` = 1 − (splits per value) / C(n, |a|): 0.9 for 3 + 3 curves, exactly (ties count as
    passing)."""
    curves = [list(map(float, c)) for c in (*a, *b)]
    n, k = len(curves), len(a)
    if k < 1 or n - k < 1 or len({len(c) for c in curves}) != 1 or not curves[0]:
        raise ValueError("split_test: two non-empty groups of curves over one non-empty grid")
    d = [[math.fsum((x - y) ** 2 for x, y in zip(ci, cj)) / len(ci) for cj in curves] for ci in curves]

    def apart(group: tuple[int, ...]) -> float:
        other = [j for j in range(n) if j not in group]
        return math.fsum(d[i][j] for i in group for j in other) / (len(group) * len(other))

    observed = tuple(range(k))
    mirror = tuple(range(k, n)) if 2 * k == n else observed
    splits = list(itertools.combinations(range(n), k))
    t = apart(observed)
    at_least = [g for g in splits if apart(g) >= t - 1e-12]
    per_value = 2 if 2 * k == n else 1
    return {"statistic": t, "p": len(at_least) / len(splits), "splits": len(splits),
            "pass": any(g not in (observed, mirror) for g in at_least),
            "pass_chance": 1 - per_value / len(splits), "grid_points": len(curves[0])}
