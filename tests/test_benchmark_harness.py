"""benchmarks/harness.py --quick: one table with every row, positive finite numbers, the same
numbers in the JSON file. (A smoke run with small random models; no timing assertions.)"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def import_harness():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import harness
    finally:
        sys.path.remove(str(BENCHMARKS))
    return harness


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run the harness once in this process; return (stdout, returned results, JSON file contents)."""
    harness = import_harness()
    path = tmp_path_factory.mktemp("bench") / "results.json"
    capture = pytest.MonkeyPatch()
    out = io.StringIO()
    capture.setattr(sys, "stdout", out)
    try:
        results = harness.main(["--quick", "--device", "cpu", "--json", str(path)])
    finally:
        capture.undo()
    return out.getvalue(), results, json.loads(path.read_text())


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The printed Markdown table as {measurement: [reference, ours, speed-up, fraction]}."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| measurement | reference | ours | speed-up (ref / ours) |")
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert len(cells) == 5, line
        rows[cells[0]] = cells[1:]
    return rows


def cell_number(text: str) -> float:
    return float(text.rstrip("x%"))


def test_prints_one_table_with_a_machine_header(quick_run):
    stdout, _, _ = quick_run
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("machine: ")
    assert "cores" in lines[0] and "torch " in lines[0] and "threads" in lines[0]
    tables = [i for i, line in enumerate(lines) if line.startswith("| measurement |")]
    assert len(tables) == 1
    assert all(line.startswith("|") for line in lines[tables[0]:])


def test_table_has_every_row(quick_run):
    stdout, results, _ = quick_run
    keys = [row["key"] for row in results["rows"]]
    assert keys == [
        "matmul.fp32",
        "encoder.small_vit.s_per_image",
        "encoder.small_vit.gflops",
        "encoder.small_tiny_vit.s_per_image",
        "encoder.small_tiny_vit.gflops",
        "decoder.ms_per_prompt",
        "automatic.s_per_image",
        "tiled.mpixel_per_s",
        "tiled.peak_rss_mib",
        "tiled.reopen_s",
    ]
    printed = table_rows(stdout)
    assert list(printed) == [row["measurement"] for row in results["rows"]]


def test_speedups_are_positive_finite_and_match_the_times(quick_run):
    _, results, _ = quick_run
    compared = [row for row in results["rows"] if row["reference"] is not None]
    assert len(compared) == 6
    for row in compared:
        assert math.isfinite(row["speedup"]) and row["speedup"] > 0, row
        assert row["reference"] > 0 and row["ours"] > 0, row
        if row["unit"] in ("s", "ms"):
            assert row["speedup"] == pytest.approx(row["reference"] / row["ours"])
        else:
            assert row["speedup"] == pytest.approx(row["ours"] / row["reference"])
    gflops = {row["key"]: row for row in results["rows"]}
    for name in ("small_vit", "small_tiny_vit"):
        rate, time = gflops[f"encoder.{name}.gflops"], gflops[f"encoder.{name}.s_per_image"]
        assert rate["speedup"] == pytest.approx(time["speedup"])
        matmul = results["matmul_gflops"]["fp32"]
        assert rate["fraction_of_matmul"]["ours"] == pytest.approx(rate["ours"] / matmul)
        assert rate["fraction_of_matmul"]["reference"] == pytest.approx(rate["reference"] / matmul)


def test_tiled_rows_say_the_reference_has_no_tiling(quick_run):
    stdout, results, _ = quick_run
    printed = table_rows(stdout)
    tiled = [row for row in results["rows"] if row["key"].startswith("tiled.")]
    for row in tiled:
        assert row["reference"] is None and row["speedup"] is None
        assert printed[row["measurement"]][0] == "no tiling"
    peak = next(row for row in tiled if row["key"] == "tiled.peak_rss_mib")
    assert peak["ours"] >= peak["details"]["rss_before_mib"] > 0


def test_json_has_the_printed_numbers(quick_run):
    stdout, results, from_file = quick_run
    assert from_file == json.loads(json.dumps(results))
    assert from_file["machine"]["torch_threads"] >= 1 and from_file["machine"]["cpu"]
    assert from_file["options"]["quick"] is True
    printed = table_rows(stdout)
    for row in from_file["rows"]:
        reference, ours, speedup, fraction = printed[row["measurement"]]
        assert cell_number(ours) == pytest.approx(row["ours"], rel=6e-3, abs=5e-3)
        if row["reference"] is not None:
            assert cell_number(reference) == pytest.approx(row["reference"], rel=6e-3, abs=5e-3)
            assert cell_number(speedup) == pytest.approx(row["speedup"], rel=6e-3, abs=5e-3)
        if row["fraction_of_matmul"]:
            printed_fractions = [cell_number(part) / 100 for part in fraction.split(" / ")]
            stored = [row["fraction_of_matmul"][side] for side in ("reference", "ours")
                      if side in row["fraction_of_matmul"]]
            assert printed_fractions == pytest.approx(stored, abs=5.1e-3)


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        import_harness().parse_args(["--only", "encoder,everything"])
    assert "'encoder,everything'" in capsys.readouterr().err
