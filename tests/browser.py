"""A real headless Chromium driven over the DevTools protocol (aiohttp's WebSocket client), for the report tests:
open a local file, collect console messages, errors, dialogs and the state of every image, take a screenshot.

``find_chromium()`` says why it cannot run (no browser, no aiohttp) so tests skip with that reason; ``.ci/run``
installs Debian's ``chromium`` package when it is missing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> tuple[str | None, str]:
    """(executable, "") or (None, why not)."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return None, "aiohttp (the DevTools WebSocket client) is not installed"
    exe = os.environ.get("SSLCLUSTER_CHROMIUM") or next((shutil.which(c) for c in CANDIDATES if shutil.which(c)),
                                                         None)
    if exe is None:
        return None, "no Chromium on PATH (Debian: apt-get install chromium; or set SSLCLUSTER_CHROMIUM)"
    return exe, ""


@dataclass
class PageVisit:
    """What the browser saw of a page."""

    console: list[dict[str, Any]] = field(default_factory=list)   # Runtime.consoleAPICalled / Log.entryAdded
    exceptions: list[str] = field(default_factory=list)            # Runtime.exceptionThrown
    dialogs: list[str] = field(default_factory=list)               # alert()/confirm() opened
    failed_requests: list[str] = field(default_factory=list)       # Network.loadingFailed
    images: list[dict[str, Any]] = field(default_factory=list)     # src, complete, naturalWidth
    evaluations: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        out = [f"console {c.get('level')}: {c.get('text')}" for c in self.console
               if c.get("level") in ("error", "warning")]
        return out + [f"exception: {e}" for e in self.exceptions] + [f"failed: {r}" for r in self.failed_requests]


class _Cdp:
    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id, self.events, self.pending = ws, 0, [], {}

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        await self.ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive(timeout=60)).data)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    async def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await self.ws.receive(timeout=left)
            except asyncio.TimeoutError:
                return
            self.events.append(json.loads(msg.data))


async def _visit(port: int, url: str, screenshot: Path | None, evaluate: dict[str, str], width: int,
                 max_height: int) -> PageVisit:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Cdp(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.call(f"{domain}.enable")
            await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                           mobile=False)
            await cdp.call("Page.navigate", url=url)
            for _ in range(600):  # until the load event (60 s at most)
                if any(e.get("method") == "Page.loadEventFired" for e in cdp.events):
                    break
                await cdp.drain(0.1)
            # lazy images load as they scroll into view: a reader scrolls, the test makes them all load now
            await cdp.call("Runtime.evaluate", expression="document.querySelectorAll('img').forEach("
                           "i => { i.loading = 'eager'; })")
            await cdp.call("Runtime.evaluate", awaitPromise=True, expression=(
                "Promise.all(Array.from(document.images).map(i => i.complete ? 1 : new Promise(r => {"
                " i.onload = r; i.onerror = r; })))"))
            await cdp.drain(0.5)
            visit = PageVisit()
            res = await cdp.call("Runtime.evaluate", returnByValue=True, expression=(
                "Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,"
                " naturalWidth: i.naturalWidth}))"))
            visit.images = res["result"]["value"]
            for name, expr in evaluate.items():
                visit.evaluations[name] = (await cdp.call("Runtime.evaluate", expression=expr,
                                                          returnByValue=True))["result"].get("value")
            if screenshot is not None:
                h = (await cdp.call("Runtime.evaluate", expression="document.documentElement.scrollHeight",
                                    returnByValue=True))["result"]["value"]
                shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                      clip={"x": 0, "y": 0, "width": width, "height": min(int(h), max_height),
                                            "scale": 1})
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            for e in cdp.events:
                m, p = e.get("method"), e.get("params", {})
                if m == "Runtime.consoleAPICalled":
                    visit.console.append({"level": p.get("type"),
                                          "text": " ".join(str(a.get("value")) for a in p.get("args", []))})
                elif m == "Log.entryAdded":
                    visit.console.append({"level": p["entry"].get("level"), "text": p["entry"].get("text")})
                elif m == "Runtime.exceptionThrown":
                    visit.exceptions.append(json.dumps(p.get("exceptionDetails", {}))[:500])
                elif m == "Page.javascriptDialogOpening":
                    visit.dialogs.append(p.get("message", ""))
                elif m == "Network.loadingFailed":
                    visit.failed_requests.append(f"{p.get('errorText')} ({p.get('requestId')})")
            return visit


def visit(page: Path, screenshot: Path | None = None, evaluate: dict[str, str] | None = None,
          width: int = 1280, max_height: int = 6000) -> PageVisit:
    """Open ``page`` (a local file) in headless Chromium and report what happened."""
    exe, why = find_chromium()
    if exe is None:
        raise RuntimeError(why)
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.is_file() and port_file.read_text().strip():
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{exe} exited with {proc.returncode} before DevTools was ready")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(_visit(port, page.resolve().as_uri(), screenshot, evaluate or {}, width, max_height))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
