"""The Allure 3 report of a matrix bundle, opened in a real headless Chromium (Debian's package):
one environment per cell, a failing case with its attachment and the flaky mark, history across
two generations. Skips, with the reason, when Chromium or the pinned Allure is not installed."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from reports import allure_report, matrix
from tests.reports.test_matrix import cell_bundle

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _allure_or_skip() -> None:
    try:
        allure_report.allure_cli(install=False)
    except allure_report.AllureError as e:
        pytest.skip(f"{e}: python -m reports.allure_report install (npm, about 2 min)")


def chromium(url: str, *args: str, budget_ms: int = 4000) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    budget = f"--virtual-time-budget={budget_ms}"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", budget, *args, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def dom_when(url: str, ready: str, *args: str) -> str:
    """The page's DOM once it shows ``ready`` (a loaded machine may need a longer render budget);
    ``args`` (e.g. ``--screenshot=...``) apply to the same load."""
    dom = ""
    for budget in (4000, 12000, 30000):
        dom = chromium(url, "--dump-dom", *args, budget_ms=budget).stdout
        if ready in dom:
            return dom
    return dom


def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(width, height, RGB pixels) of a non-interlaced 8-bit RGB/RGBA PNG, as Chromium writes them."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(line)
        prev = line
    pixels = [(r[x], r[x + 1], r[x + 2]) for r in rows for x in range(0, stride, bpp)]
    return width, height, pixels


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _allure_or_skip()
    from reports import attest

    root = tmp_path_factory.mktemp("allure")
    key = attest.keygen(root / "k.pem")[0]
    cells = [
        cell_bundle(root / "cells", "1.33", key),
        cell_bundle(root / "cells", "1.34", key, fail={"ENF-MEM-1": f"3001 MiB allowed {matrix.FLAKY_NOTE}"}),
        cell_bundle(root / "cells", "1.35", key, fail={"SCHED-FIT-1": "no node fits"}),
    ]
    m = matrix.merge(cells, root / "matrix", signing_key=key)
    history = root / "history" / "history.jsonl"
    first = allure_report.report_from_bundle(m, root / "r1", history=history, keep_results=root / "results")
    second = allure_report.report_from_bundle(m, root / "r2", history=history)
    return {"root": root, "first": first, "second": second, "history": history, "results": root / "results"}


def test_results_carry_the_cell_and_the_attachment(report: dict[str, Path]) -> None:
    docs = [json.loads(p.read_text()) for p in report["results"].glob("*-result.json")]
    assert len(docs) == 9
    cells = {next(lb["value"] for lb in d["labels"] if lb["name"] == "cell") for d in docs}
    assert cells == {"nvidia-1.33", "nvidia-1.34", "nvidia-1.35"}
    flaky = [d for d in docs if d["statusDetails"]["flaky"]]
    assert len(flaky) == 1 and flaky[0]["status"] == "failed" and flaky[0]["attachments"]
    attached = report["results"] / flaky[0]["attachments"][0]["source"]
    assert attached.read_text().startswith('{"allocated_mib"')


def test_history_across_two_generations(report: dict[str, Path]) -> None:
    assert len(report["history"].read_text().splitlines()) == 2
    first = json.loads((report["first"].parent / "summary.json").read_text())
    second = json.loads((report["second"].parent / "summary.json").read_text())
    assert len(first["newTests"]) == 9 and second["newTests"] == []  # the second knows the first
    assert second["stats"] == {"total": 9, "passed": 7, "failed": 2, "flaky": 1}


def test_the_report_opens_in_chromium_with_one_environment_per_cell(report: dict[str, Path]) -> None:
    dom = dom_when(report["second"].as_uri(), "nvidia 1.35")
    for cell in ("nvidia 1.33", "nvidia 1.34", "nvidia 1.35"):
        assert f"Environment: \u201c{cell}\u201d" in dom or f'Environment: "{cell}"' in dom, cell


def test_a_failing_case_shows_its_attachment_in_a_screenshot(report: dict[str, Path]) -> None:
    tests = json.loads((report["second"].parent / "test-results.json").read_text())["byId"]
    case = next(k for k, v in tests.items() if v["status"] == "failed" and "1.34" in v["name"])
    url = f"{report['second'].as_uri()}#{case}"
    shot = report["root"] / "case.png"
    dom = dom_when(url, "probe.json", "--window-size=800,600", f"--screenshot={shot}")
    assert "ENF-MEM-1: test_enf-mem-1[nvidia-1.34]" in dom
    assert "probe.json" in dom and "flaky: failed, then passed when re-run once" in dom
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (800, 600)
    # the page is drawn (not blank) and the red "Failed" badge and error box are on it
    assert len(set(pixels[::7])) > 50
    red = sum(1 for r, g, b in pixels if r > 200 and g < 90 and b < 90)
    assert red > 100, red
