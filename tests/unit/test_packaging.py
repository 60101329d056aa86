"""Packaging: the extras hold the optional parts, a missing extra is named, and the warning policy holds."""

from __future__ import annotations

import re
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from airflow_batchcode import extras
from airflow_batchcode.cli import main
from airflow_batchcode.exceptions import ConfigurationError, MissingExtraError

ROOT = Path(__file__).parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings, without extras or versions (self-references dropped)."""
    found = {re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower() for requirement in requirements}
    return found - {"airflow-batchcode"}


def extra_names(extra: str) -> set[str]:
    """The distributions ``extra`` installs, following ``airflow-batchcode[other]`` references."""
    requirements = PYPROJECT["project"]["optional-dependencies"][extra]
    found = names(requirements)
    for requirement in requirements:
        if match := re.match(r"airflow-batchcode\[(\w+)\]", requirement):
            found |= extra_names(match.group(1))
    return found


def test_emulator_and_demo_dependencies_are_extras_not_requirements() -> None:
    required = names(PYPROJECT["project"]["dependencies"])
    optional = {"fastapi", "uvicorn", "python-multipart", "apache-airflow-providers-sqlite", "moto"}
    assert not required & optional, "the provider itself must not need the emulator's or the demo's dependencies"
    assert "jsonlines" not in required, "unused: JSONL goes through msgspec (see the README)"
    assert extra_names("emulator") == {"fastapi", "uvicorn", "python-multipart"}
    assert extra_names("demo") >= extra_names("emulator") | {"apache-airflow-providers-sqlite"}
    assert extra_names("dev") >= extra_names("demo"), "make test installs [dev] and runs the emulators and the demo"


def test_extras_module_checks_what_pyproject_declares() -> None:
    for extra, distributions in extras.EXTRAS.items():
        assert {name.lower() for name in distributions} == extra_names(extra) - {"airflow-batchcode"}


def test_setuptools_is_new_enough_for_the_spdx_license_field() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.search(r">=\s*(\d+)", setuptools).group(1)) >= 77  # type: ignore[union-attr]


def absent(*missing: str):  # type: ignore[no-untyped-def]
    """A stand-in for ``importlib.metadata.distribution`` that does not find ``missing``."""
    real = extras.distribution

    def lookup(name: str):  # type: ignore[no-untyped-def]
        if name in missing:
            raise extras.PackageNotFoundError(name)
        return real(name)

    return lookup


def test_a_missing_extra_is_named_with_its_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "distribution", absent("python-multipart"))
    assert extras.missing("emulator") == ["python-multipart"]
    with pytest.raises(MissingExtraError) as raised:
        extras.require("emulator", "The emulator")
    assert raised.value.extra == "emulator"
    assert "[emulator] extra" in str(raised.value) and "pip install 'airflow-batchcode[emulator]'" in str(raised.value)
    assert isinstance(raised.value, ConfigurationError) and isinstance(raised.value, ImportError)


def test_importing_the_emulator_without_its_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "distribution", absent("uvicorn"))
    for module in [name for name in sys.modules if name.startswith("airflow_batchcode.emulator")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(MissingExtraError, match=r"needs the \[emulator\] extra, .*missing: uvicorn"):
        import airflow_batchcode.emulator.server  # noqa: F401


@pytest.mark.parametrize(
    ("argv", "extra", "missing"),
    [
        (["emulator", "--port", "8080", "--help"], "emulator", "fastapi"),
        (["demo", "--records", "10"], "demo", "apache-airflow-providers-sqlite"),
    ],
)
def test_the_cli_names_the_missing_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], extra: str, missing: str
) -> None:
    monkeypatch.setattr(extras, "distribution", absent(missing))
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"batchcode {argv[0]}:" in error and f"pip install 'airflow-batchcode[{extra}]'" in error
    assert missing in error


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning, FutureWarning])
def test_deprecations_reported_against_our_code_fail_the_test(category: type[Warning]) -> None:
    for module in ("airflow_batchcode.dags", "tests.unit.test_packaging"):
        with pytest.raises(category):
            warnings.warn_explicit("deprecated", category, "x.py", 1, module=module)


def test_deprecations_inside_other_libraries_are_shown_not_raised() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit("deprecated", DeprecationWarning, "x.py", 1, module="somelibrary.module")
    assert [str(w.message) for w in caught] == ["deprecated"]
