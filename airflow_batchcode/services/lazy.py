"""Lazy re-exports: a service package's public names, imported from its modules on first use.

Airflow reads the provider info (and so the service catalogue, whose specs live in the service
packages) in every process it starts. A package ``__init__`` that imported its clients would
bring the whole HTTP stack along; instead it lists its names for type checkers under
``TYPE_CHECKING`` and in ``__all__``, and sets ``__getattr__ = exported_from(...)``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def exported_from(
    package: str, names: Iterable[str], modules: Iterable[str], aliases: Mapping[str, str] | None = None
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each of ``names`` (or an ``aliases`` key, naming
    another of them) found in the first of ``modules`` that defines it, then kept on the package.

    :param modules: module names, searched in order: relative to ``package`` unless they contain a dot.
    """
    public, renamed = frozenset(names), dict(aliases or {})
    sources = tuple(module if "." in module else f"{package}.{module}" for module in modules)

    def __getattr__(name: str) -> Any:
        wanted = renamed.get(name, name)
        if wanted in public:
            for module in sources:
                namespace = vars(importlib.import_module(module))
                if wanted in namespace:
                    value = namespace[wanted]
                    setattr(sys.modules[package], name, value)
                    return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
