"""Cells and sentences every REPORT section shares: a value against its goal, how minutes to a score were
found, a config against today's, a best snapshot on fresh games, the machine of a part."""
from __future__ import annotations

from ddqn.bench.common import cpu_label
from ddqn.config import config_values, value_differences


def versus_goal(value: float, goal: float, at_most: bool, spec: str = ",.2f", unit: str = "", mark: str = "") -> str:
    """A measured ``value`` against its ``goal`` (``at_most``: the goal is ≤, else ≥), e.g. "3.55× (goal ≤ 3×:
    missed)"; ``mark`` (e.g. ``**``) wraps the value."""
    met = value <= goal if at_most else value >= goal
    return (f"{mark}{value:{spec}}{unit}{mark} (goal {'≤' if at_most else '≥'} {goal:,g}{unit}: "
            f"{'met' if met else 'missed'})")


def reach_rule(rule: dict | None) -> str:
    """How a result's minutes to a score were found (its ``reach_rule``, absent in results recorded before it)."""
    if rule:
        return f"the first evaluation at which the trailing mean of {rule['k']} evaluations is at or above the score"
    return ("the first single evaluation at or above the score (recorded before the trailing-mean rule: one "
            "evaluation is noisy, so such a time can be early)")


def fmt(x: float | None, spec: str = ".1f") -> str:
    """``x`` formatted by ``spec``; "–" for None."""
    return "–" if x is None else format(x, spec)


def pct(x: float | None) -> str:
    """A percentage (66.4) as "66 %"; "–" for None."""
    return "–" if x is None else f"{x:.0f} %"


def fresh(k: dict | None) -> str:
    """A best snapshot re-played on fresh games (``runs.confirm_best``): mean ± se (games)."""
    return f"{k['greedy_mean']:.2f} ± {k['greedy_se']:.2f} ({k['episodes']})" if k else "–"


def config_today(config: str, recorded: dict | None, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """Whether a result's config (``config``, with ``overrides``) is today's: its ``recorded`` values against the
    config's values now (``ddqn.config.value_differences``). A report must not describe an earlier config as today's."""
    if not recorded:
        return (f"**Config values not recorded**: these rows cannot be checked against today's `{config}`, which may "
                "have changed since they were measured.")
    try:
        diff = value_differences(recorded, config_values(config, list(overrides)))
    except Exception as e:  # a config that no longer loads (renamed, removed): say so rather than fail the report
        return f"**`{config}` cannot be loaded today** ({str(e).splitlines()[0][:120]}): these rows are not today's."
    return (f"**Stale**: `{config}` has changed since ({', '.join(diff)}): these rows are not today's `{config}`."
            if diff else f"Config values as recorded are today's `{config}`.")


def measured_on(m: dict | None) -> list[str]:
    """A line naming the machine of a part measured apart from the rest of its section, or none."""
    if not m:
        return []
    return [f"Measured {m.get('date', '?')} on {m.get('cores', '?')} cores ({cpu_label(m)}).", ""]


def share(x: float | None) -> str:
    """A fraction (0.66) as a whole percent ("66 %"); "–" for none."""
    return "–" if x is None else f"{100 * x:.0f} %"
