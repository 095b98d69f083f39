"""The audit report: numbers that match a hand-made dataset, a page with no network
resources, and (in headless Chromium, driven over the DevTools protocol) a page that loads
without console errors and shows the funnel chart and the gallery, for synthetic shards and
for shards curated from ../shared/data/real."""
from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.audit.report import write_report
from tests.conftest import ROOT
from tests.helpers.synthetic_shards import synthetic_output

ARTIFACTS = ROOT / "test-artifacts"
MOCHA = Path(sys.executable).with_name("mocha")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-pipe", "--window-size=1280,2000"]


# ------------------------------------------------------------------ synthetic numbers

N, REJECT_EVERY, T2V_EVERY = 40, 4, 5


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    out = synthetic_output(tmp_path_factory.mktemp("syn") / "out", N, reject_every=REJECT_EVERY,
                           t2v_every=T2V_EVERY, sources=4)
    return write_report(out, fail_on=["duplicate_clip_ids"])


def test_summary_counts_match_the_dataset(synthetic_report):
    s = synthetic_report.summary
    rejected = [i for i in range(N) if i % REJECT_EVERY == REJECT_EVERY - 1]
    kept = [i for i in range(N) if i not in rejected]
    t2v = [i for i in kept if i % T2V_EVERY == 0]
    assert s["totals"]["clips"] == len(kept)
    assert s["totals"]["by_track"]["t2v"]["clips"] == len(t2v)
    assert s["totals"]["by_track"]["st2v"]["clips"] == len(kept) - len(t2v)
    assert s["totals"]["hours"] == pytest.approx(len(kept) * 2.0 / 3600, abs=1e-4)  # 2 s clips
    assert sum(v["clips"] for v in s["totals"]["by_shot_size"].values()) == len(kept)
    assert s["totals"]["inputs"] == 4 + 1  # four sources and the broken one
    f = s["funnel"]
    assert f["clip_rows"] == N
    assert f["inputs_dropped"] == {"probe": {"error: cannot open media": 1}}
    removed = {st["stage"]: st["removed"] for st in f["steps"] if st["removed"]}
    assert sum(removed.values()) == len(rejected)
    assert [st["stage"] for st in f["steps"]][:1] == ["clips cut"]
    assert f["steps"][-2]["remaining"] + f["steps"][-1]["remaining"] == len(kept)
    assert list(removed) == ["motion", "speech", "faces"]  # pipeline order (motion at the cut), not count order
    assert f["t2v_route_reasons"] == {"no_speech": len(t2v)}
    assert s["scores"]["sync_conf"]["count"] + s["scores"]["sync_conf"]["not_computed"] == N
    # "snr-vad-gated" with a reason, and the weight-free sync inside the "visual" group
    assert s["backends"]["fallback_stages"] == ["music", "visual.sync"]
    assert [e["backend"] for e in s["backends"]["stages"]["visual.motion"]] == ["opencv-dis"]
    assert s["ok"] and s["failed"] == []
    on_disk = json.loads(synthetic_report.json_path.read_text())
    assert on_disk["totals"] == s["totals"]


def test_gallery_draws_a_speaking_timeline_per_character(tmp_path):
    from pipeline.audit import plots
    from tests.helpers.synthetic_shards import clip_row, ledger_row, tiny_video, write_output

    video = tiny_video()
    clips = [clip_row(i, video=video, shot_size="close_up") for i in range(2)]
    clips[0]["speaking_turns"] = [{"person": "Person1", "track": 0, "start_s": 0.0, "end_s": 0.8, "score": 2.1, "x": 0.3},
                                  {"person": "Person2", "track": 1, "start_s": 0.9, "end_s": 2.0, "score": 1.4,
                                   "x": 0.7}]
    out = write_output(tmp_path / "out", clips, [ledger_row(c) for c in clips])
    html = write_report(out, samples_per_shot=2).html_path.read_text()
    assert html.count('class="speaking-timeline"') == 1 and "speaking timeline: not measured" in html
    assert 'data-person="Person1" data-start="0.00" data-end="0.80"' in html
    assert 'data-person="Person2" data-start="0.90" data-end="2.00"' in html
    assert "Person1 &rarr; Person2" in html
    # a character of the caption who never speaks still gets its (empty) strip
    svg = plots.speaking_timeline(clips[0]["speaking_turns"][:1], 2.0, ["Person1", "Person2"])
    assert svg.count("<text") == 4 and svg.count('class="turn"') == 1 and ">Person2<" in svg
    x = [float(v) for v in re.findall(r'class="turn"[^>]* x="([0-9.]+)"[^>]* width="([0-9.]+)"', svg)[0]]
    assert x[1] == pytest.approx((280 - 58) * 0.8 / 2.0, abs=0.1)  # 0.8 s of a 2 s clip


def test_page_is_self_contained(synthetic_report):
    page = synthetic_report.html_path.read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith("data:image/") for r in refs), [r[:40] for r in refs]
    assert "<script" not in page and "url(" not in page
    assert 'id="funnel-chart"' in page and "gallery-item" in page


# ------------------------------------------------------------------ headless Chromium over CDP


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3/4): no network
    port, no websocket library."""

    def __init__(self, exe: str, profile: Path):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        for fd in (to_chrome_r, from_chrome_w):
            os.set_inheritable(fd, True)
        self.log_path = profile.parent / "chromium.log"
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2),
                   (os.POSIX_SPAWN_DUP2, to_chrome_r, 3), (os.POSIX_SPAWN_DUP2, from_chrome_w, 4)]
        argv = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.pid = os.posix_spawn(exe, argv, dict(os.environ), file_actions=actions)
        for fd in (to_chrome_r, from_chrome_w, log, devnull):
            os.close(fd)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session = None

    def send(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        want = self._id
        deadline = time.monotonic() + timeout
        while True:
            for m in self._read(deadline):
                if m.get("id") == want:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)

    def wait_event(self, name: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == name:
                    return self.events.pop(i)
            self.events.extend(self._read(deadline))

    def _read(self, deadline: float) -> list[dict]:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self._r], [], [], left)[0]:
            raise TimeoutError(f"no answer from Chromium; its log: {self.log_path.read_text()[-2000:]}")
        chunk = os.read(self._r, 1 << 20)
        if not chunk:
            raise RuntimeError(f"Chromium exited; its log: {self.log_path.read_text()[-2000:]}")
        self._buf += chunk
        *msgs, self._buf = self._buf.split(b"\0")
        return [json.loads(m) for m in msgs if m]

    def evaluate(self, expr: str):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except Exception:
            os.kill(self.pid, 9)
        finally:
            os.waitpid(self.pid, 0)
            os.close(self._w)
            os.close(self._r)


@pytest.fixture(scope="module")
def chromium_exe() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("Debian's chromium is not installed (`make chromium` as root installs it)")
    return exe


# DOM facts the test asserts on, gathered in the page.
_DOM_PROBE = """JSON.stringify({
  funnel: (() => { const i = document.querySelector('#funnel img#funnel-chart');
                   return i ? {w: i.naturalWidth, h: i.naturalHeight, complete: i.complete} : null; })(),
  hist: (() => { const i = document.querySelector('img#score-histograms'); return i ? i.naturalWidth : 0; })(),
  shots: [...document.querySelectorAll('#gallery [data-shot-size]')].map(d => d.dataset.shotSize),
  items: [...document.querySelectorAll('#gallery figure.gallery-item')].map(f => ({
      id: f.dataset.clipId, thumb: (f.querySelector('img.thumb') || {naturalWidth: 0}).naturalWidth,
      prompt: (f.querySelector('pre.prompt') || {}).textContent || ''})),
  checks: [...document.querySelectorAll('#checks-table tr[data-check]')].map(r => r.dataset.check),
  backends: (document.querySelector('#fallback-banner') || {}).textContent || '',
})"""


def open_report(exe: str, html: Path, tmp: Path, shot_name: str) -> tuple[dict, list[dict], list[str]]:
    """Load ``html`` in headless Chromium; return DOM facts, console errors and the URLs the
    page requested. Saves a full-page screenshot under test-artifacts/."""
    profile = tmp / "profile"
    profile.mkdir()
    b = Chromium(exe, profile)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        b.session = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.send(f"{domain}.enable")
        b.send("Page.navigate", {"url": html.resolve().as_uri()})
        b.wait_event("Page.loadEventFired")
        dom = json.loads(b.evaluate(_DOM_PROBE))
        shot = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / shot_name).write_bytes(base64.b64decode(shot["data"]))
        b.evaluate("1")  # flush: events emitted before this answer are now in b.events
        errors = [e for e in b.events
                  if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        urls = [e["params"]["request"]["url"] for e in b.events if e.get("method") == "Network.requestWillBeSent"]
    finally:
        b.close()
    return dom, errors, urls


def assert_page(dom: dict, errors: list, urls: list, html: Path, summary: dict) -> None:
    assert errors == [], errors
    # Only the page itself: every image is an inline data URI, nothing goes to the network.
    assert [u for u in urls if not u.startswith("data:")] == [html.resolve().as_uri()]
    assert dom["funnel"] and dom["funnel"]["complete"] and dom["funnel"]["w"] > 100
    assert dom["hist"] > 100
    assert dom["shots"] == list(summary["gallery"])
    assert len(dom["items"]) == sum(len(v) for v in summary["gallery"].values()) > 0
    assert all(it["thumb"] > 0 for it in dom["items"]), dom["items"]
    assert all(it["prompt"].strip() for it in dom["items"])
    assert dom["checks"] == list(summary["checks"])
    assert dom["backends"].strip()


def test_synthetic_report_in_chromium(chromium_exe, synthetic_report, tmp_path):
    dom, errors, urls = open_report(chromium_exe, synthetic_report.html_path, tmp_path, "audit_synthetic.png")
    assert_page(dom, errors, urls, synthetic_report.html_path, synthetic_report.summary)
    assert "Built with fallback backends" in dom["backends"]


# ------------------------------------------------------------------ real shards


@pytest.mark.realdata
@pytest.mark.slow
def test_real_report_in_chromium(chromium_exe, curated_real, tmp_path):
    # curated_real (conftest): one curate run over every real clip plus broken inputs, shared
    # with the curation tests.
    rep = tmp_path / "audit"
    r = subprocess.run([str(MOCHA), "audit", str(curated_real), "--out", str(rep), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["totals"]["clips"] > 0
    assert summary["funnel"]["clip_rows"] >= summary["totals"]["clips"]
    assert summary["funnel"]["inputs_dropped"], "the broken inputs must show as dropped inputs"
    assert summary["checks"]["foreign_schema"]["ok"], summary["checks"]["foreign_schema"]
    dom, errors, urls = open_report(chromium_exe, rep / "report.html", tmp_path, "audit_real.png")
    assert_page(dom, errors, urls, rep / "report.html", summary)
