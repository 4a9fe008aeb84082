"""A screenshot of the FiftyOne App serving a run's dataset, taken with headless Chromium (the DevTools helper of
the tests, ``tests/browser.py``): the sample grid beside the embeddings panel coloured by the run's clustering.

Start the App first (``sslcluster fiftyone run.key=KEY --launch``), then:
``python benchmarks/fiftyone_app.py --url http://localhost:5151/datasets/KEY --out /tmp/app.png [--wait 40]
[--click TEXT ...]`` (``--click`` presses the element showing TEXT, in turn: e.g. a brain key in the panel)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import _Cdp, find_chromium  # noqa: E402


#: the centre of the last (innermost) visible element whose own text is exactly the text asked for
FIND = """(text => { const hits = Array.from(document.querySelectorAll('body *')).filter(e =>
  e.textContent.trim() === text && e.getBoundingClientRect().width > 0);
  if (!hits.length) return null; const hit = hits[hits.length - 1]; hit.scrollIntoView({block: 'center'});
  const r = hit.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2]; })"""


async def click(cdp: _Cdp, text: str, pause: float) -> None:
    """Click (a real mouse press and release) the element showing ``text``, then wait ``pause`` seconds."""
    res = await cdp.call("Runtime.evaluate", expression=f"{FIND}({json.dumps(text)})", returnByValue=True)
    where = res["result"].get("value")
    if not where:
        raise SystemExit(f"nothing on the page shows {text!r}")
    for kind in ("mousePressed", "mouseReleased"):
        await cdp.call("Input.dispatchMouseEvent", type=kind, x=where[0], y=where[1], button="left", clickCount=1)
    await cdp.drain(pause)


async def screenshot(port: int, url: str, out: Path, wait: float, width: int, height: int,
                     clicks: list[str]) -> str:
    """Navigate to ``url``, give the page ``wait`` seconds, click the elements showing ``clicks`` in turn, save a
    PNG of the viewport; returns the page title."""
    import base64

    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Cdp(ws)
            await cdp.call("Page.enable")
            await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                           mobile=False)
            await cdp.call("Page.navigate", url=url)
            await cdp.drain(wait)
            for text in clicks:
                await click(cdp, text, pause=max(3.0, wait / 4))
            shot = await cdp.call("Page.captureScreenshot", format="png")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(base64.b64decode(shot["data"]))
            title = await cdp.call("Runtime.evaluate", expression="document.title", returnByValue=True)
            return str(title["result"].get("value"))


def main() -> None:
    """Open ``--url`` in headless Chromium, wait for the App to draw, and save a PNG of the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:5151/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wait", type=float, default=40.0, help="seconds the App gets to draw the plot")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--click", action="append", default=[], help="text of an element to click (repeatable)")
    args = parser.parse_args()
    exe, why = find_chromium()
    if exe is None:
        raise SystemExit(why)
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--enable-unsafe-swiftshader", "--remote-debugging-port=0",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        while not (port_file.is_file() and port_file.read_text().strip()):
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        title = asyncio.run(screenshot(port, args.url, args.out, args.wait, args.width, args.height,
                                       args.click))
        print(f"screenshot: {args.out} (page title {title!r})")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
