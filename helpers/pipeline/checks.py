"""What a step needs before it runs: checks of a profile (a missing split, a device torch cannot see) and
components that may not be here (weights, a package, a dataset), registered by the steps' modules.

The runner calls :func:`preflight` and asks :func:`needs` before any kernel starts; the dry run lists them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Missing:
    """Something a step needs that is not here (weights not cached, a package, a dataset).

    ``fetch()``, when given, gets it now (a run calls it before any kernel starts; a dry run does not);
    ``download`` is its size in bytes where known.
    """

    what: str
    why: str
    fix: str
    fetch: Callable | None = None
    download: int | None = None

    def line(self) -> str:
        """``"<what>: <why>; <fix>"``: one line for the user."""
        return f"{self.what}: {self.why}; {self.fix}"


_CHECKS: list = []
_NEEDS: list = []


def register_check(check: Callable) -> None:
    """Add ``check(p)``, run by the runner before any kernel starts (raises on what cannot work)."""
    if check not in _CHECKS:
        _CHECKS.append(check)


def register_need(need: Callable, steps: tuple) -> None:
    """Add ``need(p) -> list of Missing``: what steps ``steps`` (notebook numbers) need that may not be here.

    The runner asks every need of the steps it will run before any kernel starts: it fetches what can be
    fetched and refuses, one line each with the fix, what cannot; the dry run lists them.
    """
    if (need, tuple(steps)) not in _NEEDS:
        _NEEDS.append((need, tuple(steps)))


def needs(p, numbers) -> list:
    """The :class:`Missing` components of the steps ``numbers`` for profile ``p``, each once."""
    out, seen = [], set()
    for need, steps in _NEEDS:
        if set(steps) & set(numbers) and need not in seen:
            seen.add(need)
            out.extend(need(p))
    return out


def preflight(p) -> None:
    """Run every registered check on profile ``p`` (a missing split, a model that cannot take the images)."""
    for check in _CHECKS:
        check(p)
