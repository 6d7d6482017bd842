"""Result rows, the printed table, and bench/RESULTS.md."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import BENCH_DIR

RESULTS = BENCH_DIR / "RESULTS.md"
BEGIN = "<!-- bench:begin (written by `bench/run.py --write`; edit outside these markers) -->"
END = "<!-- bench:end -->"


@dataclass
class Row:
    """One measured figure of the router beside its baseline.

    ``ratio`` is router / baseline unless the scenario sets it; ``ok`` is None when there is no target.
    """

    scenario: str
    measure: str
    unit: str
    router: float | None
    baseline_name: str = ""
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None
    note: str = ""
    auto_ratio: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if self.auto_ratio and self.ratio is None and self.router is not None and self.baseline:
            self.ratio = self.router / self.baseline


def at_least(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value >= threshold


def at_most(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value <= threshold


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("req/s", "events/s", "invocations/s"):
        return f"{value:,.0f}"
    if unit == "us":
        return f"{value:,.0f} us"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:g}"


def verdict(row: Row) -> str:
    return {True: "met", False: "MISS", None: "n/a" if row.target else ""}[row.ok]


HEADER = ("#", "measure", "router", "baseline", "ratio", "target", "result")


def cells(row: Row) -> tuple[str, ...]:
    base = fmt(row.baseline, row.unit) if row.baseline is not None or row.baseline_name else ""
    if row.baseline_name:
        base = f"{base} ({row.baseline_name})"
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
    return (row.scenario, row.measure, fmt(row.router, row.unit), base, ratio, row.target, verdict(row))


def text_table(rows: list[Row]) -> str:
    data = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in data) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(data):
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) if i in (2, 4) else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * len(HEADER)) + "|"]
    for r in rows:
        c = list(cells(r))
        if c[-1] == "MISS":
            c[-1] = "**MISS**"
        out.append("| " + " | ".join(x.replace("|", "\\|") for x in c) + " |")
    return "\n".join(out)


def results_block(rows: list[Row], machine: dict[str, str], notes: list[str], command: str) -> str:
    lines = [BEGIN, "", f"Command: `{command}`", "", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    lines += ["", markdown_table(rows), ""]
    row_notes = [f"- {r.scenario} {r.measure}: {r.note}" for r in rows if r.note]
    if row_notes or notes:
        lines += ["Notes from this run:", "", *row_notes, *(f"- {n}" for n in notes), ""]
    misses = [f"{r.scenario} {r.measure}" for r in rows if r.ok is False]
    lines.append("Missed targets: " + ("; ".join(misses) if misses else "none") + ".")
    lines += ["", END]
    return "\n".join(lines)


TEMPLATE = """# Benchmark results

Written by `.venv/bin/python bench/run.py --write`.

{block}
"""


def write_results(block: str, path: Path = RESULTS) -> None:
    """Replace the marked block of RESULTS.md (creating the file when needed); text around it stays."""
    if path.exists():
        text = path.read_text()
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
        if pattern.search(text):
            path.write_text(pattern.sub(lambda _m: block, text, count=1))
            return
        path.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    path.write_text(TEMPLATE.format(block=block))
