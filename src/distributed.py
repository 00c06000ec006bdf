"""The one place that gathers Python objects from every process (Lightning's ``all_gather`` takes tensors only)."""

from typing import Any

import torch.distributed as dist


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order; ``[obj]`` in a single process. A collective: every rank calls it."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts
