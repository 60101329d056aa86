"""Per-service input rules: ABS's printable ASCII and 300 characters for ABS only; UTF-8 within limits elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.manifests import ChunkOptions, write_chunks
from airflow_batchcode.services.rules import MB, input_rules, utf8_rules

ROWS = [
    ("1", "caf\u00e9 manager", "running the caf\u00e9"),
    ("2", "barista \u2615", "making coffee"),
    ("3", "waiter", 'serving tables\nand "more"'),
    ("4", "", "  "),
    ("5", "truck driver", "driving " * 50),
]


def _write(
    tmp_path: Path, service: str, *, sanitize: bool = False
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    summary = write_chunks(
        ROWS,
        ["id", "occp", "tasks"],
        {"record_id": "id", "occp_text": "occp", "tasks_text": "tasks"},
        str(tmp_path),
        options=ChunkOptions(sanitize_records=sanitize),
        rules=input_rules(service),
    )
    sent = [json.loads(line) for c in summary.chunks for line in Path(c.manifest).read_text().splitlines()]
    rejected = [json.loads(line) for line in Path(summary.rejects).read_text().splitlines()]
    return sent, rejected


def test_abs_keeps_its_ascii_and_length_rules(tmp_path: Path) -> None:
    sent, rejected = _write(tmp_path, "abs")
    assert sent == []
    assert {r["recordId"]: r["error"] for r in rejected}["1"].startswith("occp_text has a character outside")
    assert "at most 300" in {r["recordId"]: r["error"] for r in rejected}["5"]


@pytest.mark.parametrize("service", ["superai", "refinery", "gravity"])
def test_utf8_services_get_non_ascii_and_control_characters_as_they_are(tmp_path: Path, service: str) -> None:
    sent, rejected = _write(tmp_path, service)
    assert [r["recordId"] for r in sent] == ["1", "2", "3", "5"]
    assert sent[0]["occp_text"] == "caf\u00e9 manager" and sent[2]["tasks_text"] == 'serving tables\nand "more"'
    errors = {r["recordId"]: r["error"] for r in rejected}
    assert set(errors) == {"4"} and "empty" in errors["4"]
    assert "lone surrogate" in str(input_rules(service).check("bad \ud800 text", "x").error)


def test_utf8_limits_count_bytes_and_sanitise_by_truncating(tmp_path: Path) -> None:
    rules = utf8_rules(10)
    assert rules.check("caf\u00e9", "abcde").error is None, "10 bytes"
    assert "11 bytes" in str(rules.check("caf\u00e9\u00e9", "abcd").error)
    fixed = rules.sanitize("\u00e9" * 8, "tail")
    assert fixed.error is None and fixed.occp_text == "\u00e9" * 5 and fixed.tasks_text == ""
    assert fixed.note and "truncated from 20 to 10 bytes" in fixed.note
    assert set(rules.suspects(["\u00e9" * 8, "ok", ""], ["tail", "fine", " "], None)) >= {0, 2}
    assert input_rules("superai").check("x" * (4 * MB - 1), "y").error is None


def test_unknown_service_has_no_rules() -> None:
    with pytest.raises(ConfigurationError, match="Unknown batch coding service .nobody."):
        input_rules("nobody")
