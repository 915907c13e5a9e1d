"""ungerlib: the runnable companion to the UNGER paper (see README.md).

``ungerlib.recommend(cfg, item_ids, k=10)`` turns one user's items into recommendations
(:mod:`ungerlib.api`). Importing the package applies the CPU thread policy of
:mod:`ungerlib.infra.runtime` as environment defaults, then imports torch and has it flush subnormal floats
to zero (:func:`ungerlib.infra.runtime.flush_denormals`: with weight decay they made training 4x slower).
"""
from __future__ import annotations

from typing import Any

from ungerlib.infra import runtime as _runtime

_runtime.apply_thread_env()
_runtime.flush_denormals()


def __getattr__(name: str) -> Any:  # lazy: the public API imports torch
    if name == "recommend":
        from ungerlib.api import recommend

        return recommend
    raise AttributeError(f"module 'ungerlib' has no attribute {name!r}")
