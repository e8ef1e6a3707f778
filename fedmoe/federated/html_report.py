"""``fedmoe report RUN``: one self-contained HTML page of a run folder, finished or still running.

The page holds everything itself: CSS inline, plots as base64 PNG ``data:`` images, no script and
no external address; its Content-Security-Policy forbids loading anything else (or running any
script), so it opens from the file system in any browser without a server. It shows

* the run summary (status, rounds done of planned, last and best score, virtual time, energy),
* plots and the table of the rounds (``rounds.csv``: accuracy, virtual time, energy, selected devices),
* per-device participation and costs (``devices.csv``, :mod:`fedmoe.federated.live_log`): table and plot,
* expert usage (from ``metrics.json`` once the run finished: the gate's choice by link class),
* the configuration (``config.json``).

Every text taken from the run folder is HTML-escaped (:func:`html.escape`): a scenario name or a
value holding ``<script>`` shows as text. A run still going (or stopped) has no ``metrics.json``
yet; the page is built from the rows written so far, and an incomplete last CSV line (being
written while the page is made) is left out.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable, Sequence

from fedmoe.errors import UsageError
from fedmoe.federated.live_log import DEVICES_CSV, ROUNDS_CSV

RUN_FILES = ("config.json", ROUNDS_CSV, "metrics.json")
"""A folder with none of these is not a run folder."""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right}th{background:#f2f2f2}
td.k,th.k{text-align:left}.scroll{overflow-x:auto;max-height:32em;overflow-y:auto}
img{max-width:100%;height:auto;display:block;margin:.5em 0}pre{background:#f7f7f7;padding:.8em;font-size:.8em;
overflow-x:auto}.note{color:#666;font-size:.9em}
"""


class ReportError(UsageError):
    """A folder that is not a run folder, or a run file that cannot be read (one line naming it)."""


@dataclass
class RunFiles:
    """What a run folder holds (any part may be missing while the run goes or after it stopped)."""

    folder: Path
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)


def _value(text: str) -> Any:
    """A CSV cell as a number when it is one, else the text ('' stays '')."""
    try:
        return float(text) if text.strip() else ""
    except ValueError:
        return text


def read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's CSV file (cells as numbers where they are); ``[]`` if it is missing. A last line
    with too few cells is a row still being written and is left out; a short row before it is a
    :class:`ReportError` naming the file and row."""
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
        lines = list(csv.reader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ReportError(f"{path}: not a readable CSV file ({err})") from None
    if not lines:
        return []
    header, body = lines[0], [r for r in lines[1:] if r]
    rows = []
    for i, cells in enumerate(body):
        if len(cells) != len(header):
            if i == len(body) - 1 and not text.endswith("\n"):
                break  # the line being appended right now
            raise ReportError(f"{path}: row {i + 2} has {len(cells)} cells, the header {len(header)}")
        rows.append({k: _value(v) for k, v in zip(header, cells)})
    return rows


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not a JSON document ({err})") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object, got a {type(doc).__name__}")
    return doc


def load_run(folder: Path) -> RunFiles:
    """The files of the run folder ``folder``; a one-line :class:`ReportError` if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such run folder")
    if not any((folder / name).is_file() for name in RUN_FILES):
        raise ReportError(f"{folder}: not a fedmoe run folder (none of {', '.join(RUN_FILES)} in it)")
    return RunFiles(folder, _json(folder / "config.json"), _json(folder / "metrics.json"),
                    read_table(folder / ROUNDS_CSV), read_table(folder / DEVICES_CSV))


# --------------------------------------------------------------------------- pieces of the page


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return escape(str(value))
        return f"{value:.6g}" if value != int(value) or abs(value) >= 1e15 else str(int(value))
    if isinstance(value, (list, dict)):
        return escape(json.dumps(value))
    return escape(str(value))


def table(columns: Sequence[str], rows: Sequence[dict[str, Any]], css_id: str, first_is_key: bool = False,
          scroll: bool = True) -> str:
    """An HTML table of ``rows`` by ``columns`` (in a scrolling box if ``scroll``); every header and cell escaped."""
    head = "".join(f'<th class="k">{escape(c)}</th>' if first_is_key and i == 0 else f"<th>{escape(c)}</th>"
                   for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(
        f'<td class="k">{_cell(r.get(c, ""))}</td>' if first_is_key and i == 0 else f"<td>{_cell(r.get(c, ''))}</td>"
        for i, c in enumerate(columns)) + "</tr>" for r in rows)
    html = f'<table id="{escape(css_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{html}</div>' if scroll else html


def figure_png(draw: Callable[[Any], None], width: float = 10.0, height: float = 3.6) -> bytes:
    """PNG bytes of a matplotlib figure drawn by ``draw(fig)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height))
    try:
        draw(fig)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
    finally:
        plt.close(fig)
    return buf.getvalue()


def image(png: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _integer_rounds(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _numbers(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(rounds, values)`` of the rows where ``key`` is a number."""
    pts = [(float(r["round"]), float(r[key])) for r in rows
           if isinstance(r.get(key), (int, float)) and isinstance(r.get("round"), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def round_plots(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Accuracy vs rounds and vs virtual time; energy and latency per round; devices selected, completed, failed."""
    trained = [r for r in rows if isinstance(r.get("round"), float) and r["round"] > 0]
    out = []
    if any(isinstance(r.get("accuracy"), float) for r in rows):
        def accuracy(fig) -> None:
            for i, x_key in enumerate(("round", "clock_s")):
                ax = fig.add_subplot(1, 2, i + 1)
                for key in ("accuracy", "accuracy_los", "accuracy_blocked"):
                    ev = [r for r in rows if isinstance(r.get(key), float) and isinstance(r.get(x_key), float)]
                    ax.plot([r[x_key] for r in ev], [r[key] for r in ev], marker="o" if key == "accuracy" else None,
                            ms=3, label=key)
                ax.set_xlabel("round" if x_key == "round" else "virtual time (s)")
                if x_key == "round":
                    _integer_rounds(ax)
                ax.set_ylabel("test accuracy")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
        out.append(image(figure_png(accuracy), "test accuracy by round and by virtual time"))
    if trained:
        def costs(fig) -> None:
            ax = fig.add_subplot(1, 2, 1)
            x, e = _numbers(trained, "energy_j")
            ax.bar(x, e, color="tab:orange")
            ax.set_xlabel("round")
            ax.set_ylabel("energy per round (J)")
            ax2 = ax.twinx()
            ax2.plot(*_numbers(trained, "latency_s"), "k.-")
            ax2.set_ylabel("round latency (s)")
            ax = fig.add_subplot(1, 2, 2)
            ax.plot(*_numbers(trained, "clock_s"), marker="o", ms=3)
            ax.set_xlabel("round")
            ax.set_ylabel("virtual clock (s)")
            _integer_rounds(ax)
            ax.grid(alpha=0.3)
        out.append(image(figure_png(costs), "energy and latency per round, virtual clock"))

        def devices(fig) -> None:
            ax = fig.add_subplot(1, 1, 1)
            for key in ("selected", "completed", "failed"):
                ax.plot(*_numbers(trained, key), marker="o", ms=3, label=key)
            ax.set_xlabel("round")
            ax.set_ylabel("devices")
            _integer_rounds(ax)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        out.append(image(figure_png(devices, height=3.0), "devices selected, completed and failed per round"))
    return out


DEVICE_SUMMARY_COLUMNS = ("device", "link_class", "rounds", "samples", "energy_j", "mean_latency_s",
                          "max_latency_s", "upload_bits", "last_train_loss")


def device_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per device over the rounds of ``devices.csv``: rounds taken part, samples, energy and upload bits added up,
    mean and largest round latency, last training loss."""
    by: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r.get("device"), []).append(r)
    out = []
    for dev in sorted(by, key=lambda d: (not isinstance(d, float), d if isinstance(d, float) else str(d))):
        mine = by[dev]
        num = lambda key: [float(r[key]) for r in mine if isinstance(r.get(key), float)]  # noqa: E731
        lat = num("latency_s")
        out.append({"device": dev, "link_class": mine[-1].get("link_class", ""), "rounds": len(mine),
                    "samples": sum(num("samples")), "energy_j": sum(num("energy_j")),
                    "mean_latency_s": sum(lat) / len(lat) if lat else "", "max_latency_s": max(lat, default=""),
                    "upload_bits": sum(num("upload_bits")), "last_train_loss": mine[-1].get("train_loss", "")})
    return out


def device_plot(summary: Sequence[dict[str, Any]]) -> str:
    def draw(fig) -> None:
        names = [_cell(s["device"]) for s in summary]
        ax = fig.add_subplot(1, 2, 1)
        ax.bar(names, [s["energy_j"] for s in summary], color="tab:orange")
        ax.set_xlabel("device")
        ax.set_ylabel("energy, all rounds (J)")
        ax = fig.add_subplot(1, 2, 2)
        ax.bar(names, [s["rounds"] for s in summary], color="tab:blue")
        ax.set_xlabel("device")
        ax.set_ylabel("rounds taken part")
        for a in fig.axes:
            a.tick_params(axis="x", labelsize=7, rotation=90 if len(names) > 20 else 0)
    return image(figure_png(draw), "energy and participation per device")


def expert_usage(metrics: dict[str, Any] | None) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)``: the share of test samples the final gate sends to each expert, by link class."""
    rows = (metrics or {}).get("rounds") or []
    last = next((r for r in reversed(rows) if isinstance(r, dict) and isinstance(r.get("gate_usage_by_class"), dict)),
                None)
    if last is None:
        return [], []
    usage = last["gate_usage_by_class"]
    width = max((len(v) for v in usage.values() if isinstance(v, list)), default=0)
    names = list((metrics or {}).get("experts") or [])
    names = [str(n) for n in names] if len(names) == width else [f"expert {i}" for i in range(width)]
    out = [{"link class": c, **{n: v[i] for i, n in enumerate(names) if i < len(v)}}
           for c, v in usage.items() if isinstance(v, list)]
    return ["link class", *names], out


def usage_plot(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        experts = list(columns[1:])
        width = 0.8 / max(len(rows), 1)
        for j, r in enumerate(rows):
            ax.bar([i + j * width for i in range(len(experts))], [float(r.get(e, 0.0) or 0.0) for e in experts],
                   width, label=str(r["link class"]))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(experts))], experts, rotation=30, fontsize=7)
        ax.set_ylabel("share of test samples")
        ax.legend(fontsize=8)
    return image(figure_png(draw), "expert usage of the final gate by link class")


def summary_rows(run: RunFiles) -> list[dict[str, Any]]:
    """The facts of the summary table (``metrics.json``'s summary once finished, else from the rows so far)."""
    cfg = run.config or {}
    planned = (cfg.get("federated") or {}).get("rounds") if isinstance(cfg.get("federated"), dict) else None
    trained = [r for r in run.rounds if isinstance(r.get("round"), float) and r["round"] > 0]
    evaluated = [r for r in run.rounds if isinstance(r.get("accuracy"), float)]
    facts: list[tuple[str, Any]] = [
        ("run folder", str(run.folder)),
        ("status", "finished" if run.metrics is not None else "in progress, or stopped (no metrics.json yet)"),
        ("scenario", cfg.get("name", "")),
        ("mode", cfg.get("mode", "")),
        ("rounds done", f"{len(trained)}" + (f" of {planned}" if planned is not None else "")),
        ("last test accuracy", evaluated[-1]["accuracy"] if evaluated else ""),
        ("best test accuracy", max((r["accuracy"] for r in evaluated), default="")),
        ("virtual time (s)", trained[-1].get("clock_s", "") if trained else ""),
        ("energy, all devices (J)", sum(float(r["energy_j"]) for r in trained if isinstance(r.get("energy_j"), float))),
        ("devices", len({r.get("device") for r in run.devices})),
    ]
    summary = (run.metrics or {}).get("summary")
    if isinstance(summary, dict):
        facts += [(f"summary: {k}", v) for k, v in summary.items() if not isinstance(v, (dict, list))]
    return [{"fact": k, "value": v} for k, v in facts]


def render(run: RunFiles) -> str:
    """The whole HTML page of ``run`` (module docstring)."""
    from fedmoe import __version__

    title = f"fedmoe run {(run.config or {}).get('name', run.folder.name)}"
    parts = [f"<h1>{escape(title)}</h1>", "<h2>Summary</h2>",
             table(("fact", "value"), summary_rows(run), "summary", first_is_key=True, scroll=False)]
    parts.append("<h2>Rounds</h2>")
    if run.rounds:
        parts += round_plots(run.rounds)
        columns = [c for c in run.rounds[0] if any(r.get(c, "") != "" for r in run.rounds)]
        parts.append(table(columns, run.rounds, "rounds"))
    else:
        parts.append('<p class="note">No round is complete yet.</p>')
    parts.append("<h2>Devices: participation and costs</h2>")
    if run.devices:
        summary = device_summary(run.devices)
        parts.append(device_plot(summary))
        parts.append(table(DEVICE_SUMMARY_COLUMNS, summary, "devices"))
    else:
        parts.append(f'<p class="note">No per-device rows ({escape(DEVICES_CSV)} is missing or empty).</p>')
    columns, usage = expert_usage(run.metrics)
    if usage:
        parts += ["<h2>Expert usage</h2>", usage_plot(columns, usage), table(columns, usage, "expert-usage")]
    parts.append("<h2>Configuration</h2>")
    parts.append(f'<pre id="config">{escape(json.dumps(run.config, indent=2))}</pre>' if run.config is not None
                 else '<p class="note">No config.json.</p>')
    parts.append(f'<p class="note">Written by fedmoe {escape(__version__)} from the files of the run folder.</p>')
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def write_report(folder: Path, out: Path | None = None) -> Path:
    """Write the page of the run folder ``folder`` to ``out`` (default ``<folder>/report.html``); its path."""
    from fedmoe.files import write_atomic

    page = render(load_run(folder))
    target = Path(out) if out is not None else Path(folder) / "report.html"
    write_atomic(target, page.encode("utf-8"))
    return target
