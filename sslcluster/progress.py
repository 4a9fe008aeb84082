"""Progress of long steps (training, scanning, export, probes, UMAP): on an interactive terminal a tqdm bar with
rate and time left; in a log (stderr not a terminal: a batch job, a pipe) one log line at most every
``SSLCLUSTER_PROGRESS_EVERY`` (default 5) percent, with the rate and the time left, so a 20-minute step is never
silent and a log is never flooded. ``SSLCLUSTER_PROGRESS=tty|log|off`` overrides the detection.

Written by hand: tqdm draws the terminal bar; its non-terminal output is carriage-return redraws, which is what a
log must not get, hence :class:`LogProgress`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

from sslcluster.threads import torch_threads_kept

log = logging.getLogger("sslcluster.progress")


def mode() -> str:
    """``tty``, ``log`` or ``off``: how progress is shown in this process."""
    forced = os.environ.get("SSLCLUSTER_PROGRESS", "").strip().lower()
    if forced in ("tty", "log", "off"):
        return forced
    try:
        return "tty" if sys.stderr.isatty() else "log"
    except (AttributeError, ValueError):
        return "log"


def _every() -> float:
    try:
        return min(1.0, max(0.001, float(os.environ.get("SSLCLUSTER_PROGRESS_EVERY", "5")) / 100.0))
    except ValueError:
        return 0.05


def fmt_seconds(s: float) -> str:
    """Seconds as ``m:ss``, or ``h:mm:ss`` from an hour on; ``?`` when not finite."""
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class LogProgress:
    """Counts ``update(n)`` calls towards ``total`` and logs ``desc: 35% (3500/10000 img), 812 img/s, 0:08 left``
    each time another ``every`` fraction is done (and at the end)."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, every: float | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.n = self.start_n = int(initial)
        self.every = every if every is not None else _every()
        self.log = logger or log
        self.t0 = time.monotonic()
        self.next_mark = self._mark_after(self.n)
        self.lines = 0

    def _mark_after(self, n: int) -> float:
        if self.total <= 0:
            return math.inf
        return (math.floor(n / self.total / self.every + 1e-9) + 1) * self.every

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps; log a line when the next progress mark is reached."""
        self.n += int(n)
        if self.total > 0 and (self.n / self.total >= self.next_mark - 1e-9 or self.n >= self.total):
            self._emit()
            self.next_mark = self._mark_after(self.n)

    def _emit(self) -> None:
        elapsed = time.monotonic() - self.t0
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else math.inf
        left = (self.total - self.n) / rate if rate > 0 else math.inf
        self.lines += 1
        self.log.info("%s: %d%% (%d/%d %s), %.3g %s/s, %s elapsed, %s left", self.desc,
                      int(100 * self.n / self.total), self.n, self.total, self.unit, rate, self.unit,
                      fmt_seconds(elapsed), fmt_seconds(left))

    def set_postfix_str(self, text: str) -> None:  # tqdm's interface; a log line carries no postfix
        """Accept tqdm's call and ignore it."""
        pass

    def close(self) -> None:
        """Nothing to release; kept for tqdm's interface."""
        pass

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Off(LogProgress):
    def update(self, n: int = 1) -> None:
        self.n += int(n)


def progress(total: int, desc: str, unit: str = "it", initial: int = 0) -> Any:
    """A progress counter with ``update(n)``, ``close()`` and ``with`` support: tqdm on a terminal, else
    :class:`LogProgress`."""
    m = mode()
    if m == "tty":
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                    mininterval=0.5, smoothing=0.1)
    if m == "off":
        return _Off(total, desc, unit, initial)
    return LogProgress(total, desc, unit, initial)


def umap_fit_transform(x: Any, desc: str, **umap_kwargs: Any) -> Any:
    """``umap.UMAP(**umap_kwargs).fit_transform(x)`` with progress (:func:`umap_fitted`). ``x``: (N, D) ->
    (N, n_components)."""
    return umap_fitted(x, desc, **umap_kwargs)[1]


def umap_fitted(x: Any, desc: str, **umap_kwargs: Any) -> tuple[Any, Any]:
    """The fitted ``umap.UMAP(**umap_kwargs)`` and its embedding of ``x`` (N, D) -> (N, n_components), with
    progress: umap-learn's own (its verbose mode, stages and a tqdm bar over the layout epochs) on a terminal; in a
    log (umap-learn's bar is carriage-return redraws) one line before and one after, with the time."""
    import umap

    tty = mode() == "tty"
    if mode() != "off":
        log.info("%s: UMAP of %d x %d features to %d-D", desc, x.shape[0], x.shape[1],
                 umap_kwargs.get("n_components", 2))
    start = time.monotonic()
    model = umap.UMAP(verbose=tty, tqdm_kwds={"disable": not tty}, **umap_kwargs)
    with torch_threads_kept():  # numba's first parallel call would reset torch's thread count
        out = model.fit_transform(x)
    if mode() != "off":
        log.info("%s: UMAP done in %s", desc, fmt_seconds(time.monotonic() - start))
    return model, out
