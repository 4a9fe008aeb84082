"""Shared by the real multi-process tests on CPU: a free TCP port for a gloo group's rendezvous, and their skip mark
where torch.distributed or its gloo backend is missing."""

from __future__ import annotations

import socket

import pytest
import torch.distributed as dist

needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free when asked (``init_method=f"tcp://127.0.0.1:{port}"``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
