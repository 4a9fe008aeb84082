"""A momentum (EMA) copy of a method's encoder, for MoCo and other methods with a teacher (BYOL, DINO).

The copy follows the online modules by an exponential moving average (lightly's ``update_momentum``). Its momentum
is constant (``momentum_end=None``, as MoCo v2's m = 0.999), or rises from ``momentum`` to ``momentum_end`` on a
cosine schedule over the run (lightly's ``cosine_schedule``), as in BYOL (Grill et al. 2020) and DINO.
"""

from __future__ import annotations

import copy
from typing import Callable

from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from sslcluster.errors import SSLClusterError


class MomentumEncoder:
    """Mixin for an :class:`~sslcluster.ssl.methods.base.SSLMethod`: frozen EMA copies of named online modules.

    Call :meth:`init_momentum` in ``__init__`` after the online modules exist, :meth:`step_momentum` at the start of
    every training step; ``<name>_momentum`` is the copy of ``<name>``.
    """

    momentum: float
    momentum_end: float | None
    _momentum_pairs: list[tuple[str, str]]
    schedule_steps: Callable[[], int]  # SSLMethod's: the optimiser steps of the run

    def init_momentum(self, names: list[str], momentum: float, momentum_end: float | None,
                      fresh: dict[str, nn.Module] | None = None) -> None:
        """Make ``<name>_momentum`` (a frozen deep copy) for every module ``name``; check the schedule
        (``momentum_end=None``: constant momentum). ``fresh[name]``, where given, is a new module of the same
        architecture used as the copy (it is given the online module's weights) for modules that cannot be
        deep-copied (torch's ``weight_norm`` in DINO's head)."""
        if not 0.0 <= momentum <= (1.0 if momentum_end is None else momentum_end) <= 1.0:
            raise SSLClusterError(f"method.module.momentum={momentum}, momentum_end={momentum_end}: need "
                                  "0 <= momentum <= momentum_end <= 1")
        self.momentum = momentum
        self.momentum_end = momentum_end
        self._momentum_pairs = []
        for name in names:
            online: nn.Module = getattr(self, name)
            if fresh is not None and name in fresh:
                copy_ = fresh[name]
                copy_.load_state_dict(online.state_dict())
            else:
                copy_ = copy.deepcopy(online)
            deactivate_requires_grad(copy_)
            setattr(self, f"{name}_momentum", copy_)
            self._momentum_pairs.append((name, f"{name}_momentum"))

    def current_momentum(self) -> float:
        """EMA momentum at this step: ``momentum`` when ``momentum_end`` is None, else a cosine from ``momentum`` to
        ``momentum_end`` over the run."""
        if self.momentum_end is None:
            return self.momentum
        total = self.schedule_steps()
        step = int(getattr(self, "global_step", 0))
        return cosine_schedule(min(step, total), total, self.momentum, self.momentum_end)

    def step_momentum(self) -> float:
        """Move every copy towards its online module by this step's momentum; returns the momentum used."""
        m = self.current_momentum()
        for online, ema in self._momentum_pairs:
            update_momentum(getattr(self, online), getattr(self, ema), m)
        return m
