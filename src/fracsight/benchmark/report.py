"""What ``fracsight benchmark`` reports: its rows, the targets they are held to, and the tables it prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Goals on the 2-core CPU reference machine (see docs/benchmark.md; speed-up and memory from issue 17).
TARGET_LATENCY_MS = 60.0
TARGET_SPEEDUP = 5.0
TARGET_THROUGHPUT = 40.0
TARGET_RSS_MB = 400.0
RESNET_ROW = "ResNet50-224 recipe"  # the name of the published-recipe row

#: The stages of one ``Predictor.predict`` call, in order (``statistics`` runs beside ``letterbox``).
STAGES = ("read", "statistics", "letterbox", "network", "boxes", "heatmap", "rest")


@dataclass(frozen=True)
class Row:
    name: str
    engine: str
    input_size: int
    latency_median_ms: float | None = None
    latency_p95_ms: float | None = None
    throughput_ips: float | None = None
    peak_rss_mb: float | None = None
    note: str = ""
    round_medians_ms: tuple[float, ...] = ()  # median latency of each round: how much the machine drifted
    # each image timed in several rounds: its median in each (what busy_during compares)
    same_image_rounds_ms: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: not comparable, the machine was busy (what --json says too)


@dataclass(frozen=True)
class BenchmarkReport:
    model: str
    bundle: str
    images: str
    n_images: int
    runs: int
    batch: int
    throughput_images: int  # images predicted in each throughput pass (throughput_pass)
    machine: dict[str, Any]
    rows: list[Row]
    targets: list[Target] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # per bundle: median ms of each stage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count(n: int, thing: str) -> str:
    """``1 timed run``, ``2 timed runs`` (it printed "1 timed single-image runs")."""
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def shown(value: float, bound: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, or more where those would show it equal to ``bound``
    while it is not (59.96 ms printed "60.0 ms" beside "< 60 ms: met"; 4.998 "5.0x", missed)."""
    text = f"{value:.{digits}f}"
    while float(text) == bound and value != bound and digits < 6:
        digits += 1
        text = f"{value:.{digits}f}"
    return text


def targets_of(rows: list[Row], index: int = 0, prefix: str = "", *, comparable: bool = True) -> list[Target]:
    """The targets for the bundle row ``rows[index]``, each name prefixed by ``prefix``; each
    ``met`` is None where not ``comparable`` (a busy machine's figures: `--json` said "met": true
    where the table said "not comparable")."""
    main = rows[index]
    out: list[Target] = []
    if main.latency_median_ms is not None:
        ms = main.latency_median_ms
        out.append(
            Target(
                prefix + "single-image median",
                f"< {TARGET_LATENCY_MS:.0f} ms",
                f"{shown(ms, TARGET_LATENCY_MS, 1)} ms",
                ms < TARGET_LATENCY_MS,
            )
        )
    resnet = next((r for r in rows if r.name == RESNET_ROW), None)
    if resnet and resnet.latency_median_ms and main.latency_median_ms:
        ratio = resnet.latency_median_ms / main.latency_median_ms
        out.append(
            Target(
                prefix + "faster than ResNet50-224 eager",
                f">= {TARGET_SPEEDUP:.0f}x",
                f"{shown(ratio, TARGET_SPEEDUP, 1)}x",
                ratio >= TARGET_SPEEDUP,
            )
        )
    if main.throughput_ips is not None:
        ips = main.throughput_ips
        out.append(
            Target(
                prefix + "batch throughput",
                f">= {TARGET_THROUGHPUT:.0f} images/s",
                f"{shown(ips, TARGET_THROUGHPUT, 1)} images/s",
                ips >= TARGET_THROUGHPUT,
            )
        )
    if main.peak_rss_mb is not None:
        mb = main.peak_rss_mb
        out.append(
            Target(
                prefix + "peak RSS",
                f"< {TARGET_RSS_MB:.0f} MB",
                f"{shown(mb, TARGET_RSS_MB, 0)} MB",
                mb < TARGET_RSS_MB,
            )
        )
    return out if comparable else [replace(t, met=None) for t in out]


def _speedup(main: Row, row: Row) -> str:
    """How many times faster the bundle benchmarked (``--model``, the first row) is than ``row``:
    single-image latency / batch throughput."""

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}x"

    latency = (
        row.latency_median_ms / main.latency_median_ms
        if main.latency_median_ms and row.latency_median_ms
        else None
    )
    batch = main.throughput_ips / row.throughput_ips if main.throughput_ips and row.throughput_ips else None
    return "" if latency is None and batch is None else f"{fmt(latency)} / {fmt(batch)}"


def render_report(report: BenchmarkReport) -> list[Any]:
    """Rich renderables: the measurements with ratios, notes, then the targets."""
    from rich.markup import escape
    from rich.table import Table

    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    m = report.machine
    usable = m.get("usable_cpus")
    # under taskset or a container's CPU quota: the table is read against a 2-core reference
    usable_note = f", {usable} usable" if usable is not None and usable < m["cpus"] else ""
    caption = (
        f"{escape(report.images)}; {count(report.runs, 'timed single-image run')} per row, "
        f"{count(report.throughput_images, 'image')} per throughput pass in batches of {report.batch}; "
        f"{m['cpus']} CPUs{usable_note} ({escape(str(m.get('cpu_model') or 'CPU model unknown'))}"
        f"{', ' + ' '.join(m['cpu_flags']) if m.get('cpu_flags') else ''}), "
        f"load average {m['load_before']} -> {m['load_after']}"
    )
    if m.get("cpu_busy_before") is not None:
        caption += f", CPU busy before the run {m['cpu_busy_before']:.0%}"
    if m["busy"]:
        caption += "\n[yellow]other work was running as the run started: every figure is distorted[/yellow]"
    elif m.get("busy_during"):
        caption += (
            "\n[yellow]other work started during the run (an image took more than twice as long in one "
            "round as in another, or the load ended above the CPU count): every figure is distorted[/yellow]"
        )
    table = Table(title=f"fracsight benchmark: {escape(report.model)}", caption=caption)
    columns = ("", "engine", "input", "median ms", "p95 ms", "images/s", "peak RSS MB", "bundle faster")
    resnet = next((r for r in report.rows if r.name == RESNET_ROW), None)
    if resnet is not None:
        columns += ("faster than ResNet50",)
    for col in columns:
        table.add_column(col, justify="left" if col in ("", "engine") else "right")
    main = report.rows[0]
    notes = []
    for i, row in enumerate(report.rows, start=1):
        table.add_row(
            f"{escape(row.name)} [{i}]",
            row.engine,
            f"{row.input_size} px" if row.input_size else "",
            num(row.latency_median_ms, ".1f"),
            num(row.latency_p95_ms, ".1f"),
            num(row.throughput_ips, ".1f"),
            num(row.peak_rss_mb, ".0f"),
            "(latency / batch)" if row is main else _speedup(main, row),
            *([] if resnet is None else ["" if row is resnet else _speedup(row, resnet)]),
        )
        rounds = ""
        if len(row.round_medians_ms) > 1:
            rounds = f"; median by round {min(row.round_medians_ms):.1f}-{max(row.round_medians_ms):.1f} ms"
        notes.append(f"[{i}] {escape(row.note)}{rounds}")
    targets = Table(title="targets (2-core CPU reference machine)")
    for col in ("target", "goal", "measured", ""):
        targets.add_column(col)
    busy = report.machine["busy"] or report.machine.get("busy_during")
    for t in report.targets:
        # "21.3x, met" on a machine busy mid-run: figures of another machine's state
        if busy or t.met is None:
            said = "[yellow]not comparable (busy machine)[/yellow]"
        else:
            said = "[green]met[/green]" if t.met else "[red]missed[/red]"
        targets.add_row(escape(t.name), escape(t.goal), escape(t.measured), said)
    out = [table, "\n".join(notes), targets]
    if report.stages:
        stages = Table(title="where the time goes: median ms per stage of one image, each timed alone")
        stages.add_column("stage")
        for found in report.stages:
            stages.add_column(escape(found["name"]), justify="right")
        for stage in (*STAGES, "end to end"):
            stages.add_row(
                stage, *["–" if f["ms"][stage] is None else f"{f['ms'][stage]:.1f}" for f in report.stages]
            )
        stages.add_row(
            "page faults (end to end)",
            *["" if f.get("page_faults") is None else f"{f['page_faults']:.0f}" for f in report.stages],
        )
        out.append(stages)
    return out
