"""The optional parts of the package and the ``pip install`` extra each one needs.

The provider (hooks, operators, sensor, trigger, pipeline) needs none of them. The emulators
need ``airflow-batchcode[emulator]``; ``batchcode demo`` needs ``airflow-batchcode[demo]`` (the
emulator, Airflow's SQLite provider for its warehouse and moto's S3 server for the Refinery demo).
:func:`require` is called where such
a part starts, so a missing dependency is reported by the extra that brings it rather than by a
bare ``ModuleNotFoundError`` from deep inside.

Distributions are looked up in the installed metadata, without importing them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

from airflow_batchcode.exceptions import MissingExtraError

_EMULATOR = ("fastapi", "uvicorn", "python-multipart")
EXTRAS: dict[str, tuple[str, ...]] = {
    "emulator": _EMULATOR,
    "demo": (*_EMULATOR, "apache-airflow-providers-sqlite", "moto"),
}
"""Extra name → the distributions it installs (as ``pyproject.toml`` declares them)."""


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` that are not installed (empty when it is complete)."""
    absent = []
    for name in EXTRAS[extra]:
        try:
            distribution(name)
        except PackageNotFoundError:
            absent.append(name)
    return absent


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` when any of its distributions is missing.

    :param extra: a key of :data:`EXTRAS`.
    :param what: the part that needs it, for the message (``"the emulator"``).
    """
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{what} needs the [{extra}] extra, which is not installed (missing: {', '.join(absent)}); "
            f"install it with: pip install 'airflow-batchcode[{extra}]'",
            extra=extra,
        )
