"""A momentum (EMA) copy of a method's encoder, for MoCo and other methods with a teacher (BYOL, DINO).

The copy follows the online modules by an exponential moving average (lightly's ``update_momentum``). Its momentum
is constant (``momentum_end=None``, as MoCo v2's m = 0.999), or rises from ``momentum`` to ``momentum_end`` on a
cosine schedule over the run (lightly's ``cosine_schedule``), as in BYOL (Grill et al. 2020) and DINO. The copies
move once per optimiser step (the schedule counts optimiser steps): under gradient accumulation, at the first
micro-batch of each accumulation window only, as MoCo, BYOL and DINO move theirs once per update of the online
network.
"""

from __future__ import annotations

import copy

from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from sslcluster.errors import SSLClusterError
from sslcluster.ssl.methods.base import SSLMethod


class MomentumEncoder(SSLMethod):
    """A method with frozen EMA copies of named online modules (BYOL, DINO, MoCo).

    Call :meth:`init_momentum` in ``__init__`` after the online modules exist, :meth:`step_momentum` at the start of
    every training step; ``<name>_momentum`` is the copy of ``<name>``. The copies of compiled online modules are
    compiled too (:meth:`compile_targets`), and the momentum is logged as ``train/momentum``.
    """

    momentum: float
    momentum_end: float | None
    _momentum_pairs: list[tuple[str, str]]
    #: the optimiser step (``global_step``) the copies last moved at; -1: not yet in this process
    _momentum_step: int = -1

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

    def step_momentum(self) -> float | None:
        """Move every copy towards its online module by this step's momentum, once per optimiser step: the first
        call at each ``global_step`` (which counts optimiser steps, so under ``accumulate_grad_batches=A`` only the
        first of the A micro-batches moves them; outside a fit, every call). Returns the momentum used, or None
        where the copies already moved at this step."""
        if getattr(self, "_trainer", None) is not None:  # LightningModule's own attribute: None outside a fit
            step = int(self.global_step)
            if step == self._momentum_step:
                return None
            self._momentum_step = step
        m = self.current_momentum()
        for online, ema in self._momentum_pairs:
            update_momentum(getattr(self, online), getattr(self, ema), m)
        return m

    def compile_targets(self) -> list[nn.Module]:
        """The base class's targets and their momentum copies (each runs a forward pass every step)."""
        targets = super().compile_targets()
        copies = [getattr(self, ema) for online, ema in self._momentum_pairs
                  if any(getattr(self, online) is t for t in targets)]
        return targets + copies

    def host_scalars(self) -> dict[str, float]:
        """The base class's scalars plus the current momentum."""
        return {**super().host_scalars(), "train/momentum": self.current_momentum()}
