"""The ZeroGPU decorator, or a no-op where the `spaces` package is absent (off Spaces).

Import this module before torch: on ZeroGPU `spaces` must be imported first because it patches
torch's CUDA initialisation so that the model can be moved to "cuda" at import time.
"""
from __future__ import annotations

from typing import Callable, TypeVar

try:
    import spaces
except ImportError:  # not on a Space: the `spaces` package is installed only there
    spaces = None

F = TypeVar("F", bound=Callable)


def gpu_task(duration: int) -> Callable[[F], F]:
    """`@spaces.GPU(duration=...)` on a Space; returns the function unchanged elsewhere."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
