"""One adapter per benchmarked system, all with the `System` interface of `_base`.

Adapters are imported lazily by name (`load_system`), so a worker only imports the library of
the system it drives: the peer's worker runs in another venv that has no kernelbox.
"""

from __future__ import annotations

import importlib

from benchmarks._systems._base import System

# system name -> (module, class name, keyword arguments)
_REGISTRY: dict[str, tuple[str, str, dict[str, object]]] = {
    "zmq": ("benchmarks._systems.floor", "ZmqFloor", {}),
    "ipybox": ("benchmarks._systems.peer", "Ipybox", {}),
    "kernelbox": ("benchmarks._systems.kernelbox_system", "Kernelbox", {"sandbox": False}),
    "kernelbox-sandbox": ("benchmarks._systems.kernelbox_system", "Kernelbox", {"sandbox": True}),
}

SYSTEM_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def load_system(name: str) -> System:
    """Import and build the adapter for system `name`.

    Raises:
        KeyError: If `name` is not a known system.
        ImportError: If the system's library is not importable in this interpreter.
    """
    module_name, class_name, kwargs = _REGISTRY[name]
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(**kwargs)
