"""`songseek bench serve` plumbing on a tiny library: every request is answered and counted, the soak run stops
after its requests and reports the server's RSS, the overloaded server sheds with 503. Figures are printed
by the benchmark, never asserted as speeds here."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from songseek.cli.main import app as cli_app


def test_bench_serve_counts_every_request_and_reports_rss(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["bench", "serve", "--frames", "1500", "--requests", "20", "-c", "1",
                                          "-c", "4", "--kind", "vector", "--soak", "60", "--soak-clients", "4",
                                          "--work", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    runs = {(r["where"], r["clients"]): r for r in report["runs"]}
    for key, n in ((("server", 1), 20), (("server", 4), 20), (("soak", 4), 60)):
        assert runs[key]["ok"] + runs[key]["busy_503"] + runs[key]["errors"] == n
        assert runs[key]["errors"] == 0 and runs[key]["ok"] == n  # 2 workers + a queue of 64 never shed 4 clients
    soak = runs[("soak", 4)]
    assert 0 < soak["rss_start_mb"] <= soak["rss_peak_mb"] and soak["rss_end_mb"] <= soak["rss_peak_mb"]
    over = runs[("overloaded (1 worker, queue 1)", 32)]
    assert over["ok"] + over["busy_503"] + over["errors"] == 20 and over["errors"] == 0
