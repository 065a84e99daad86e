"""Benchmark reports: report.json (every figure and the exact settings), report.md (tables), PNG plots.

``results`` maps direction → rerank mode → one result::

    {
      "text_to_audio": {                       # direction: any name ("audio_to_text", "queries", ...)
        "faiss": ModeResult(...),              # mode: any name ("faiss", "fused", "mean", ...)
        "fused": {"R@1": 0.25, ..., "MedR": 5.0,            # or a plain mapping: metric → float,
                  "ranks": [1, 7, ...],                     # plus the optional reserved keys
                  "ci": {"R@1": [0.22, 0.28], ...},
                  "n_queries": 1000, "n_candidates": 1000},
      },
    }

A :class:`ModeResult` holds ``metrics`` (name → float, as from ``metrics.retrieval_metrics``; recalls
and mAP as fractions in [0, 1]), and optionally ``ranks`` (int (Q,) 1-based first rank per query, used
for recall@K curves and rank histograms and kept in report.json), ``ci`` (metric → (lo, hi) 95 %
bootstrap interval), ``n_queries`` and ``n_candidates``. Metrics beyond the standard ones (e.g.
``IoU@0.5``) get their own columns. ``settings`` is any JSON-able mapping (Paths, numpy scalars and
arrays, tuples and dataclasses are converted); it is written verbatim to report.json and as a table.

report.md shows every fraction (R@K, mAP@K and the IoU figures: IoU>=0.5, mIoU, R@1&IoU>=0.5) in percent
with two decimals (as MusCALL and CoLLAP print them), MedR and MeanR as ranks with one decimal, and says
the unit in each column header (:func:`metric_unit`); report.json keeps fractions. matplotlib is imported
lazily (Agg canvas, no pyplot state); when it is missing the plots are skipped and report.md says so.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from songseek.engine.errors import UsageError
from songseek.engine.version import __version__

REPORT_FORMAT = "songseek-benchmark-report"
REPORT_VERSION = 1
STANDARD_COLUMNS: tuple[str, ...] = ("R@1", "R@5", "R@10", "R@20", "R@100", "mAP@10", "MedR", "MeanR")
_RESERVED = ("ranks", "ci", "n_queries", "n_candidates")


@dataclass(frozen=True)
class ModeResult:
    """Metrics of one (direction, rerank mode) with optional per-query first ranks and intervals."""

    metrics: Mapping[str, float]
    ranks: np.ndarray | None = None
    ci: Mapping[str, tuple[float, float]] | None = None
    n_queries: int | None = None
    n_candidates: int | None = None

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any], where: str = "result") -> ModeResult:
        """Metric → number entries plus the reserved keys ranks, ci, n_queries, n_candidates."""
        metrics: dict[str, float] = {}
        for key, value in obj.items():
            if key in _RESERVED:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise UsageError(f"{where}: metric {key!r} must be a number, got {type(value).__name__}")
            metrics[str(key)] = float(value)
        ranks = None if obj.get("ranks") is None else np.asarray(obj["ranks"], dtype=np.int64).reshape(-1)
        ci = None
        if obj.get("ci") is not None:
            ci = {str(k): (float(v[0]), float(v[1])) for k, v in obj["ci"].items()}
        n_q = None if obj.get("n_queries") is None else int(obj["n_queries"])
        n_c = None if obj.get("n_candidates") is None else int(obj["n_candidates"])
        return cls(metrics=metrics, ranks=ranks, ci=ci, n_queries=n_q, n_candidates=n_c)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": {k: _num(v) for k, v in self.metrics.items()}}
        n_q = self.n_queries if self.n_queries is not None else (None if self.ranks is None else int(self.ranks.size))
        out["n_queries"] = n_q
        out["n_candidates"] = self.n_candidates
        out["ci"] = None if self.ci is None else {k: [_num(lo), _num(hi)] for k, (lo, hi) in self.ci.items()}
        out["ranks"] = None if self.ranks is None else [int(r) for r in self.ranks]
        return out


Results = Mapping[str, Mapping[str, "ModeResult | Mapping[str, Any]"]]


def _num(x: float) -> float | None:
    """JSON has no NaN/inf: those become null."""
    return float(x) if math.isfinite(float(x)) else None


def normalize_results(results: Results) -> dict[str, dict[str, ModeResult]]:
    """Check the structure and turn plain mappings into :class:`ModeResult`."""
    if not isinstance(results, Mapping) or not results:
        raise UsageError("results must be a non-empty mapping direction → mode → result")
    out: dict[str, dict[str, ModeResult]] = {}
    for direction, modes in results.items():
        if not isinstance(modes, Mapping) or not modes:
            raise UsageError(f"results[{direction!r}] must be a non-empty mapping mode → result")
        out[str(direction)] = {}
        for mode, res in modes.items():
            where = f"results[{direction!r}][{mode!r}]"
            if isinstance(res, ModeResult):
                out[str(direction)][str(mode)] = res
            elif isinstance(res, Mapping):
                out[str(direction)][str(mode)] = ModeResult.from_mapping(res, where)
            else:
                raise UsageError(f"{where} must be a ModeResult or a mapping, got {type(res).__name__}")
    return out


def jsonable(obj: Any, where: str = "settings") -> Any:
    """A JSON-ready copy: Path → str, numpy → Python, tuple/set → list, dataclass → dict."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return jsonable(obj.item(), where)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), where)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    raise UsageError(f"{where} is a {type(obj).__name__}, which cannot be written to report.json")


# ------------------------------------------------------------------------------------------------- markdown
# R@K, mAP@K, R@1&IoU>=0.5; IoU, IoU>=0.5, IoU@0.5, mIoU: all fractions of [0, 1]
_FRACTION = re.compile(r"(R@\d+|mAP@\d+)(&IoU\S*)?|m?IoU([@>=]\S*)?")
_RANK = ("MedR", "MeanR")


def metric_unit(metric: str) -> str:
    """How report.md shows a metric: ``"%"`` (a fraction in [0, 1] times 100), ``"rank"`` (1-based) or
    ``"as given"`` (a metric this module does not know, printed unconverted)."""
    if _FRACTION.fullmatch(metric):
        return "%"
    return "rank" if metric in _RANK else "as given"


def format_metric(metric: str, value: float | None) -> str:
    """A metric value in its :func:`metric_unit`: % with two decimals, ranks with one, else 4 digits."""
    if value is None or not math.isfinite(value):
        return "–"
    unit = metric_unit(metric)
    if unit == "%":
        return f"{100.0 * value:.2f}"
    if unit == "rank":
        return f"{value:.1f}"
    return f"{value:.4g}"


def _header(metric: str) -> str:
    return f"{metric} ({metric_unit(metric)})"


def _columns(modes: Mapping[str, ModeResult]) -> list[str]:
    present = {k for r in modes.values() for k in r.metrics}
    extra = sorted(present - set(STANDARD_COLUMNS))
    return [c for c in STANDARD_COLUMNS if c in present] + extra


# What a direction ranks, for notes about its candidate count
_CANDIDATES = {"text_to_audio": "tracks", "audio_to_text": "captions"}


def saturated_recall_note(direction: str, modes: Mapping[str, ModeResult]) -> str | None:
    """A note naming the R@K columns whose K is at least the number of candidates (a small set: a dataset of
    50 tracks and R@100): there every relevant item ranks within K, so R@K is 100 % whatever the model.
    None when no column is."""
    counts = [r.n_candidates for r in modes.values() if r.n_candidates]
    if not counts:
        return None
    n = max(counts)
    ks = sorted({int(c[2:]) for r in modes.values() for c in r.metrics if re.fullmatch(r"R@\d+", c)})
    saturated = [k for k in ks if k >= n]
    if not saturated:
        return None
    what = _CANDIDATES.get(direction, "candidates")
    return (f"{', '.join(f'R@{k}' for k in saturated)}: R@K with K ≥ the number of {what} ({n}) is 100 % "
            "by construction")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _ci_note(settings: Mapping[str, Any]) -> str:
    """What the intervals resample, as the run's settings say (``settings["ci"]``), else the generic rule."""
    note = settings.get("ci") if isinstance(settings, Mapping) else None
    return note if isinstance(note, str) and note else "percentile bootstrap over the queries"


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict) and obj:
        rows: list[tuple[str, Any]] = []
        for k, v in obj.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    return [(prefix, obj)]


def _markdown(
    doc: dict[str, Any], res: dict[str, dict[str, ModeResult]], plots: list[str], plot_note: str | None
) -> str:
    lines = [
        "# songseek benchmark report",
        "",
        f"Created {doc['created_utc']} (UTC) with songseek {doc['songseek_version']}. "
        "Each column header gives its unit: % = a value in [0, 1] times 100 (R@K, mAP@K and the IoU "
        "figures), rank = a 1-based rank (MedR, MeanR), as given = printed unconverted; queries and "
        "candidates are counts; – = not computed. report.json holds the same figures as fractions. "
        "Definitions in docs/benchmarks.md.",
        "",
    ]
    for direction, modes in res.items():
        cols = _columns(modes)
        heads = [_header(c) for c in cols]
        lines += [f"## {direction}", "", "| mode | queries | candidates | " + " | ".join(heads) + " |"]
        lines.append("|" + "---|" * (3 + len(cols)))
        for mode, r in modes.items():
            n_q = r.n_queries if r.n_queries is not None else (None if r.ranks is None else r.ranks.size)
            cells = [
                _md_escape(mode),
                "–" if n_q is None else str(n_q),
                "–" if r.n_candidates is None else str(r.n_candidates),
            ]
            cells += [format_metric(c, r.metrics.get(c)) for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        with_ci = {m: r for m, r in modes.items() if r.ci}
        if with_ci:
            lines += ["", f"95 % bootstrap intervals, lo–hi ({_ci_note(doc['settings'])}):", "",
                      "| mode | " + " | ".join(heads) + " |"]
            lines.append("|" + "---|" * (1 + len(cols)))
            for mode, r in with_ci.items():
                assert r.ci is not None
                cells = [_md_escape(mode)]
                for c in cols:
                    lo_hi = r.ci.get(c)
                    shown = None if lo_hi is None else f"{format_metric(c, lo_hi[0])}–{format_metric(c, lo_hi[1])}"
                    cells.append(shown or "–")
                lines.append("| " + " | ".join(cells) + " |")
        saturated = saturated_recall_note(direction, modes)
        if saturated:
            lines += ["", f"_Note: {saturated}._"]
        for p in plots:
            if p.endswith(f"_{_slug(direction)}.png"):
                lines += ["", f"![{p[:-4]}]({p})"]
        lines.append("")
    if plot_note:
        lines += [f"_Plots: {plot_note}_", ""]
    lines += ["## Settings", "", "Verbatim from report.json: fractions stay fractions (not %), times in seconds.",
              "", "| setting | value |", "|---|---|"]
    for key, value in _flatten(doc["settings"]):
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f"| {_md_escape(key)} | {_md_escape(str(shown))} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- plots
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x"


def _recall_curve(r: ModeResult) -> tuple[np.ndarray, np.ndarray] | None:
    if r.ranks is not None and r.ranks.size:
        top = max(int(r.n_candidates or 0), int(r.ranks.max()), 1)
        ks = np.unique(np.round(np.logspace(0, math.log10(top), 200)).astype(np.int64))
        ranks = np.sort(r.ranks)
        return ks, np.searchsorted(ranks, ks, side="right") / ranks.size
    pts = sorted((int(k[2:]), v) for k, v in r.metrics.items() if re.fullmatch(r"R@\d+", k))
    if not pts:
        return None
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def _plots(out_dir: Path, res: dict[str, dict[str, ModeResult]]) -> tuple[list[Path], str | None]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return [], "skipped because matplotlib is not installed (pip install 'songseek[plots]')"
    written: list[Path] = []
    for direction, modes in res.items():
        slug = _slug(direction)
        fig = Figure(figsize=(6.0, 4.0), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        drawn = 0
        for mode, r in modes.items():
            curve = _recall_curve(r)
            if curve is not None:
                ax.plot(curve[0], 100.0 * curve[1], marker="" if r.ranks is not None else "o", label=mode)
                drawn += 1
        if drawn:
            ax.set_xscale("log")
            ax.set_xlabel("K")
            ax.set_ylabel("recall@K (%)")
            ax.set_ylim(0, 100)
            ax.set_title(f"recall@K, {direction}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
            path = out_dir / f"recall_at_k_{slug}.png"
            _atomic(path, lambda p, fig=fig: fig.savefig(p, format="png"))
            written.append(path)
        with_ranks = {m: r.ranks for m, r in modes.items() if r.ranks is not None and r.ranks.size}
        if with_ranks:
            fig = Figure(figsize=(6.0, 4.0), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            top = max(int(v.max()) for v in with_ranks.values())
            bins = np.unique(np.round(np.logspace(0, math.log10(top + 1), 30)))
            if bins.size < 2:
                bins = np.array([1.0, 2.0])
            for mode, ranks in with_ranks.items():
                ax.hist(ranks, bins=bins.tolist(), histtype="step", linewidth=1.5, label=mode)
            ax.set_xscale("log")
            ax.set_xlabel("rank of the first relevant item")
            ax.set_ylabel("queries")
            ax.set_title(f"rank histogram, {direction}")
            ax.legend()
            path = out_dir / f"rank_hist_{slug}.png"
            _atomic(path, lambda p, fig=fig: fig.savefig(p, format="png"))
            written.append(path)
    return written, None


# ------------------------------------------------------------------------------------------------- writing
def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_text(path: Path, text: str) -> None:
    def w(p: Path) -> None:
        with p.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    _atomic(path, w)


def write_report(
    out_dir: str | Path,
    results: Results,
    settings: Mapping[str, Any],
    plots: bool = True,
) -> list[Path]:
    """Write report.json, report.md and (when ``plots`` and matplotlib is present) PNG plots
    ``recall_at_k_{direction}.png`` / ``rank_hist_{direction}.png`` into ``out_dir`` (created).
    Returns the written paths: report.json, report.md, then the plots."""
    out = Path(out_dir)
    res = normalize_results(results)
    settings_json = jsonable(dict(settings))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out}: cannot create the report folder ({exc})") from exc
    if plots:
        plot_paths, note = _plots(out, res)
    else:
        plot_paths, note = [], "not requested"
    doc: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "songseek_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings_json,
        "results": {d: {m: r.to_json() for m, r in modes.items()} for d, modes in res.items()},
        "plots": [p.name for p in plot_paths],
        "plots_note": note,
    }
    json_path, md_path = out / "report.json", out / "report.md"
    _write_text(json_path, json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    _write_text(md_path, _markdown(doc, res, [p.name for p in plot_paths], note))
    return [json_path, md_path, *plot_paths]


def read_report(path: str | Path) -> dict[str, Any]:
    """Load a report.json (or the folder holding it) written by :func:`write_report`."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{p}: cannot read the report ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        raise UsageError(f"{p}: not a songseek benchmark report")
    return doc


__all__: Sequence[str] = ("ModeResult", "normalize_results", "jsonable", "metric_unit", "format_metric", "write_report",
                          "read_report")
