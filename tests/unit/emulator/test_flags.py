"""Every emulator setting has its ``batchcode emulator`` flag, declared beside its default."""

from __future__ import annotations

from dataclasses import fields

import pytest

from airflow_batchcode.cli import build_parser, emulator_config
from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.flags import GROUPS, Flag, flagged, parse_size

REPEATABLE = {"clients", "api_keys"}
"""Settings set by a repeatable flag of their own (``--client``, ``--api-key``) rather than ``--the-name``."""


def test_every_setting_has_a_flag() -> None:
    flagged_names = {item.name for item, _ in flagged(EmulatorConfig)}
    assert flagged_names | set(REPEATABLE) == {item.name for item in fields(EmulatorConfig)}
    assert flagged_names <= set(vars(build_parser().parse_args(["emulator"])))


def test_no_flags_give_the_defaults() -> None:
    assert emulator_config(build_parser().parse_args(["emulator"])) == EmulatorConfig()


def test_a_flag_parses_to_the_settings_type() -> None:
    args = ["emulator", "--processing-workers", "3", "--retention", "7", "--data-dir", "/tmp/e", "--seed", "9"]
    config = emulator_config(build_parser().parse_args(args))
    assert (config.processing_workers, config.retention, str(config.data_dir), config.seed) == (3, 7.0, "/tmp/e", 9)
    assert isinstance(config.retention, float)


@pytest.mark.parametrize(
    ("text", "size"),
    [("5368709120", 5 * 1024**3), ("5GiB", 5 * 1024**3), ("500MB", 500 * 1000**2), ("100k", 100_000), ("7 B", 7)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_size_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["emulator", "--max-upload-bytes", "lots"])
    assert "--max-upload-bytes: not a size: 'lots'" in capsys.readouterr().err


def test_a_flag_names_a_known_group() -> None:
    with pytest.raises(ValueError, match="unknown flag group"):
        Flag("nowhere", "help")
    assert len(set(GROUPS)) == len(GROUPS)
