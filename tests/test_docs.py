"""README.md and docs/*.md: every figure comes from somewhere, every link lands, and the README stays short.

**A number with a unit** ("a figure") is a number, optionally signed (``+31 %``, ``−10 %``) and optionally a range
(``8.0–8.3 s``, ``2–3 %``), followed by one of these units, with at most a space (or a hyphen: ``8-minute``) and
an optional multiplier (``k``, ``M``, ``G``: ``0.2 M parameters``) in between:

- time: ``ns``, ``µs``, ``us``, ``ms``, ``s``, ``sec``, ``second(s)``, ``min``, ``minute(s)``, ``h``, ``hour(s)``,
  ``day(s)``;
- data: ``B``, ``KB``, ``kB``, ``KiB``, ``MB``, ``MiB``, ``GB``, ``GiB``, ``TB``, ``byte(s)``;
- network: ``Gbit/s``, ``Mbit/s``, ``Gb/s``, ``GbE``;
- rates: anything per second, one or two words before ``/s`` (``updates/s``, ``env steps/s``, ``gradients/s``)
  or a bare ``/s`` (``1,515/s``);
- shares: ``%``, ``percent``;
- ratios and speedups: ``×`` or ``x`` written right after the number (``2.0×``, ``1.17x``); ``84×84`` (a size)
  and ``2 × server_timeout`` (a product) are not figures;
- model size: ``parameters``, ``params``.

Numbers are decimal with optional thousands commas (``1,440``); a number that is part of a longer dotted number
(``Python 3.11.2``, an IP address) or of a word (``p50``, ``x64``, ``conv2``) is not one. Counts without a unit
(``50,000 updates``, ``2 cores``, scores) and version numbers (``OpenJDK 17``, ``Boost 1.83``) are not figures.
Code — fenced blocks and inline spans (literal text: commands, messages, identifiers) —, HTML comments and link
targets are not read.

Every figure on a page must be listed for that page in ``docs/figures.yaml`` with its source, and every source
must agree: a ``results/*.json`` key path (parts separated by ``/``) whose value equals the figure at the
decimals the figure shows (an arithmetic ``expr`` may combine values), a committed file and a regex whose groups
hold the numbers (code, configs, ``results/REPORT.md``, which ``ddqn/bench/report/`` generates), or the test
that measures it (its id must name an existing test). docs/testing.md says the same for people.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MANIFEST = DOCS / "figures.yaml"
README_MAX_LINES = 150
MAX_LINE = 120
# Linked before it exists: written by another change, which the link check must not block.
PENDING_PAGES = {"docs/own-game.md"}
OWN_GAME_MARKERS = ("<!-- own-game:begin -->", "<!-- own-game:end -->")

NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d]|\.\d)"
SIGNED = rf"(?:[+−]|-(?=\d))?{NUM}"
UNIT = r"""(?:
      [nµμu]s | ms | sec | seconds? | s | min | minutes? | h | hours? | days?
    | [KkMGT]i?B | B | bytes? | [GM]bit/s | Gb/s | GbE
    | (?:[A-Za-z]+\ )?[A-Za-z]+/s | /s
    | % | percent
    | parameters | params
    )(?![\w/])"""
FIGURE = re.compile(
    rf"""(?<![\w.,/])(?:
          (?P<ratio>{SIGNED}(?:\s?[–-]\s?{NUM})?[×x])(?![\w]|\s?\d)
        | (?P<unit>{SIGNED}(?:\s?[–-]\s?{NUM})?[\s\u00a0-]?(?:[kMG]\s)?{UNIT})
        )""", re.VERBOSE)
NUMBER = re.compile(rf"(?<![\w.]){SIGNED}")
FENCE = re.compile(r"^\s*(```|~~~)")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1")
LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str, spans: bool = True) -> str:
    """``text`` without code (fenced blocks, and inline spans unless ``spans`` is false), HTML comments and link
    targets (the link text stays)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else line)
    out = COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), "\n".join(lines))
    out = CODE_SPAN.sub("``", out) if spans else out
    return LINK.sub(lambda m: f"{m.group(1)}[{m.group(2)}]", out)


def normal(figure: str) -> str:
    return " ".join(figure.replace("\u00a0", " ").split())


def figures(text: str) -> list[tuple[int, str]]:
    """Every number with a unit in markdown ``text``: (line number, the figure as written, spaces normalised)."""
    found = []
    for no, line in enumerate(prose(text).splitlines(), 1):
        found += [(no, normal(m.group(0))) for m in FIGURE.finditer(line)]
    return found


def numbers(figure: str) -> list[tuple[float, int]]:
    """The numbers a figure shows, each with its count of decimals (``"8.0–8.3 s"`` → [(8.0, 1), (8.3, 1)])."""
    out = []
    for m in NUMBER.finditer(figure):
        s = m.group(0).replace(",", "").replace("−", "-")
        out.append((float(s), len(s.split(".")[1]) if "." in s else 0))
    return out


# -- sources --------------------------------------------------------------------------------------------------

def json_value(data: object, key: str) -> float:
    """The number at ``key`` in ``data``: its parts separated by ``/`` (dict keys may hold dots and spaces:
    ``reach/async-2 s1/10/minutes``), list indices as numbers; KeyError when absent."""
    node = data
    for part in key.split("/"):
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"no {part!r} on the way to {key!r}")
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise KeyError(f"{key!r} is {node!r}, not a number")
    return float(node)


def source_values(spec: dict) -> list[float]:
    """The numbers one source names: ``json`` + ``key`` (a key or a list of keys), or ``file`` + ``match`` (a regex
    whose groups are the numbers, found in the committed file)."""
    if "json" in spec:
        data = json.loads((ROOT / spec["json"]).read_text())
        keys = spec["key"] if isinstance(spec["key"], list) else [spec["key"]]
        return [json_value(data, k) for k in keys]
    if "file" in spec:
        m = re.search(spec["match"], (ROOT / spec["file"]).read_text(), re.MULTILINE)
        if m is None:
            raise KeyError(f"{spec['file']}: no match for {spec['match']!r}")
        return [float(g.replace(",", "").replace("_", "")) for g in m.groups()]
    raise KeyError(f"a source needs json + key or file + match: {spec}")


OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
       ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCS = {"abs": abs, "min": min, "max": max}


def evaluate(expr: str, names: dict[str, float]) -> float:
    """Arithmetic only: numbers, the given names, + - * / **, abs/min/max."""
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in OPS:
            return OPS[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCS:
            return FUNCS[node.func.id](*(ev(a) for a in node.args))
        raise ValueError(f"not allowed in an expr: {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval"))


def test_ids() -> set[str]:
    """``tests/test_x.py::test_y`` for every test function in tests/ (methods as ``::Class::test_y`` too)."""
    ids = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                ids.add(f"tests/{path.name}::{node.name}")
            if isinstance(node, ast.ClassDef):
                ids |= {f"tests/{path.name}::{node.name}::{f.name}" for f in node.body
                        if isinstance(f, ast.FunctionDef) and f.name.startswith("test")}
    return ids


test_ids.__test__ = False  # a helper, not a test


@dataclass
class Entry:
    figure: str
    pages: list[str]
    spec: dict


def load_manifest(text: str) -> list[Entry]:
    data = yaml.safe_load(text) or {}
    return [Entry(normal(str(e["figure"])), list(e["pages"]), e) for e in data.get("figures", [])]


def entry_problem(entry: Entry, tests: set[str]) -> str | None:
    """Why ``entry``'s source does not back its figure (None when it does)."""
    spec = entry.spec
    if "test" in spec:
        return None if spec["test"] in tests else f"no test {spec['test']}"
    try:
        if "values" in spec:
            names = {name: source_values(src)[0] for name, src in spec["values"].items()}
        else:
            raw = source_values(spec)
            names = {f"x{i}": v for i, v in enumerate(raw)} | {"x": raw[0]}
        exprs = spec.get("expr", [f"x{i}" for i in range(len(names) - 1)] if "values" not in spec else None)
        if exprs is None:
            return "a `values` entry needs an expr"
        want = [evaluate(e, names) for e in (exprs if isinstance(exprs, list) else [exprs])]
    except (KeyError, OSError, ValueError, IndexError, ZeroDivisionError, json.JSONDecodeError) as exc:
        return f"source unreadable: {exc}"
    shown = numbers(entry.figure)
    if len(shown) != len(want):
        return f"shows {len(shown)} number(s), the source gives {len(want)}"
    digits = spec.get("round")
    for i, ((value, decimals), expected) in enumerate(zip(shown, want)):
        places = (digits[i] if isinstance(digits, list) else digits) if digits is not None else decimals
        if not math.isclose(value, expected, abs_tol=0.5 * 10.0 ** -places + 1e-9):
            return f"shows {value:g}, the source says {expected:.6g} (rounded to {places} decimals)"
    return None


def untraced(pages: dict[str, str], entries: list[Entry], tests: set[str]) -> list[str]:
    """Every problem: a figure on a page that no entry lists for it, an entry whose figure is not on one of its
    pages, an entry whose source disagrees. ``pages``: repository-relative path → markdown."""
    problems = []
    listed = {(page, e.figure) for e in entries for page in e.pages}
    for page, text in pages.items():
        problems += [f"{page}:{no}: {fig!r} is not in docs/figures.yaml" for no, fig in figures(text)
                     if (page, fig) not in listed]
    for e in entries:
        for page in e.pages:
            if page not in pages:
                problems.append(f"figures.yaml: {e.figure!r}: no page {page}")
            elif e.figure not in {fig for _, fig in figures(pages[page])}:
                problems.append(f"figures.yaml: {e.figure!r} is not (or no longer) on {page}")
        why = entry_problem(e, tests)
        if why:
            problems.append(f"figures.yaml: {e.figure!r} ({', '.join(e.pages)}): {why}")
    return problems


def markdown_pages() -> dict[str, str]:
    paths = [README, *sorted(DOCS.glob("*.md"))]
    return {p.relative_to(ROOT).as_posix(): p.read_text() for p in paths}


# -- the figures ----------------------------------------------------------------------------------------------

def test_every_figure_is_traced_to_its_source() -> None:
    problems = untraced(markdown_pages(), load_manifest(MANIFEST.read_text()), test_ids())
    assert problems == [], "\n".join(problems)


def test_the_checker_reports_an_untraced_figure() -> None:
    page = ("The server applies a gradient in 41.5 µs.\n\n```bash\nmake bench-ps   # ≈ 3 min\n```\n"
            "Python 3.11.2, OpenJDK 17 and 84×84 frames are no figures; 2 × `server_timeout` neither.\n")
    assert [fig for _, fig in figures(page)] == ["41.5 µs"]
    assert untraced({"docs/x.md": page}, [], set()) == ["docs/x.md:1: '41.5 µs' is not in docs/figures.yaml"]
    made_up = "Breakout: 12,345 agent steps/s, 3.7× random, at most 16 MB, a 48-byte header, 2–13 % slower.\n"
    assert [fig for _, fig in figures(made_up)] == ["12,345 agent steps/s", "3.7×", "16 MB", "48-byte", "2–13 %"]
    assert len(untraced({"docs/x.md": made_up}, [], set())) == 5


def test_the_checker_reports_a_source_that_disagrees() -> None:
    ms = json.loads((ROOT / "results" / "atari.json").read_text())["nets"]["atari_nips"]["forward_backward_ms"]
    right, wrong = f"{ms:.1f}", f"{ms + 2:.0f}"  # the source's figure, and one it does not round to
    manifest = load_manifest(f"""
figures:
  - {{figure: {right} ms, pages: [docs/x.md], json: results/atari.json, key: nets/atari_nips/forward_backward_ms}}
  - {{figure: {wrong} ms, pages: [docs/x.md], json: results/atari.json, key: nets/atari_nips/forward_backward_ms}}
  - {{figure: 25 ms, pages: [docs/x.md], json: results/atari.json, key: nets/no_such_net/forward_backward_ms}}
  - {{figure: 5 s, pages: [docs/x.md], test: tests/test_docs.py::test_no_such_test}}
  - {{figure: 16 MB, pages: [docs/x.md], test: tests/test_docs.py::test_every_figure_is_traced_to_its_source}}
""")
    page = f"NIPS net: {right} ms (not {wrong} ms); Nature net 25 ms; 5 s; 16 MB.\n"
    problems = untraced({"docs/x.md": page}, manifest, test_ids())
    assert len(problems) == 3, problems
    assert f"'{wrong} ms' (docs/x.md): shows {wrong}, the source says {ms:g}" in problems[0]
    assert "'25 ms'" in problems[1] and "no_such_net" in problems[1]
    assert "'5 s'" in problems[2] and "no test" in problems[2]
    assert untraced({"docs/x.md": "16 MB\n"}, manifest[4:], test_ids()) == []
    assert untraced({"docs/x.md": "nothing\n"}, manifest[4:], test_ids()) == [
        "figures.yaml: '16 MB' is not (or no longer) on docs/x.md"]


# -- the README's limits and the links ----------------------------------------------------------------------

def long_lines(text: str) -> list[str]:
    """Lines over MAX_LINE characters that are neither a table row nor only a link."""
    return [line for line in text.splitlines() if len(line) > MAX_LINE and not line.lstrip().startswith("|")
            and not re.fullmatch(r"\s*(?:[-*]\s+)?!?\[[^\]]*\]\([^)]*\)[.,;]?\s*", line)]


def test_readme_is_the_first_five_minutes() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    assert long_lines(text) == []
    begin, end = (text.index(marker) for marker in OWN_GAME_MARKERS)
    assert begin < end and "](docs/own-game.md)" in text[end:]


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_docs_prose_is_wrapped(page: Path) -> None:
    assert long_lines(page.read_text()) == []


def anchors(markdown: str) -> set[str]:
    """GitHub's ids for the headings of ``markdown``: lower case, punctuation dropped, spaces as hyphens."""
    out = set()
    for line in prose(markdown, spans=False).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def test_every_relative_link_lands() -> None:
    broken = []
    for page, text in markdown_pages().items():
        for m in LINK.finditer(COMMENT.sub("", text)):
            target = m.group(3)
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (ROOT / page).parent / path if path else ROOT / page
            rel = file.resolve().relative_to(ROOT).as_posix() if file.resolve().is_relative_to(ROOT) else str(file)
            if not file.exists():
                if rel not in PENDING_PAGES:
                    broken.append(f"{page}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                broken.append(f"{page}: {target} (no such heading)")
    assert broken == [], "\n".join(broken)
