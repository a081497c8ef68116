"""`Internal`: one entry in a wall's list of the upstream internals kernelbox relies on (pure).

kernelbox names private parts of other packages in two modules only, one per process: the
gateway process's `kernelbox._child.gateway._upstream` and the client's
`kernelbox._upstream_client`. Each lists what it uses as ``INTERNALS``, a tuple of `Internal`;
``tests/test_upstream_internals.py`` is generated from both lists.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Internal"]


@dataclass(frozen=True)
class Internal:
    """Private upstream names kernelbox relies on for one behaviour.

    Attributes:
        key: the behaviour, as the guard test names its check.
        owner: the upstream module and class (or module alone) that has the names.
        names: the private names (and undocumented attributes) used.
        mirrors: the upstream file and the versions read.
        why: what kernelbox does with them.
    """

    key: str
    owner: str
    names: tuple[str, ...]
    mirrors: str
    why: str
