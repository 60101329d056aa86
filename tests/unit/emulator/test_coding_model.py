"""Tests of the emulator's deterministic occupation coding model."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from importlib import resources

import pytest

from airflow_batchcode.emulator.coding_model import Code, CodeOutcome, CodingModel, ModelInfo, load_models

TOPICS = ("anzsco", "osca")


def _rows(topic: str) -> list[dict[str, str]]:
    text = resources.files("airflow_batchcode.emulator").joinpath("data", f"{topic}.csv").read_text("utf-8")
    assert text.splitlines()[0] == "code,label,keywords"
    return list(csv.DictReader(io.StringIO(text)))


def _latest(topic: str) -> CodingModel:
    return load_models()[topic][-1]


def _all_models() -> list[CodingModel]:
    return [model for topic in TOPICS for model in load_models()[topic]]


def _check_outcome(outcome: CodeOutcome, labels: dict[str, str]) -> None:
    if outcome.status == "successful":
        assert outcome.result is not None
        assert outcome.suggestions == ()
        codes = [outcome.result]
    else:
        assert outcome.status == "unsuccessful"
        assert outcome.result is None
        assert 1 <= len(outcome.suggestions) <= 3
        confidences = [s.confidence for s in outcome.suggestions]
        assert confidences == sorted(confidences, reverse=True)
        codes = list(outcome.suggestions)
    for code in codes:
        assert len(code.category) in (1, 2, 3, 4, 6)
        assert labels[code.category] == code.label
        assert 0.0 <= code.confidence <= 1.0
        assert round(code.confidence, 2) == code.confidence


# --- data ------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
def test_csv_codes_are_well_formed(topic: str) -> None:
    rows = _rows(topic)
    codes = [row["code"] for row in rows]
    assert len(codes) == len(set(codes)), "duplicate codes"
    for row in rows:
        assert row["code"].isdigit() and len(row["code"]) in (1, 2, 3, 4, 6), row
        assert row["label"].strip(), row
        assert row["label"] == row["label"].strip()
    unit_groups = {c for c in codes if len(c) == 4}
    majors = {c for c in codes if len(c) == 1}
    assert majors == set("12345678")
    occupations = [c for c in codes if len(c) == 6]
    for code in occupations:
        assert code[:4] in unit_groups, f"{code} has no unit group row"
    # Every group has at least one sampled occupation below it.
    for code in codes:
        if len(code) < 6:
            assert any(o.startswith(code) for o in occupations), code


def test_anzsco_sample_covers_all_major_groups() -> None:
    occupations = [row["code"] for row in _rows("anzsco") if len(row["code"]) == 6]
    assert len(occupations) >= 250
    for major in "12345678":
        assert sum(code.startswith(major) for code in occupations) >= 15
    labels = {row["code"]: row["label"] for row in _rows("anzsco")}
    assert labels["261313"] == "Software Engineer"
    assert labels["254412"] == "Registered Nurse (Aged Care)"
    assert labels["331111"] == "Bricklayer"
    assert labels["631111"] == "Checkout Operator"
    assert labels["2544"] == "Registered Nurses"
    assert labels["8"] == "Labourers"


def test_osca_sample_uses_osca_codes() -> None:
    labels = {row["code"]: row["label"] for row in _rows("osca")}
    assert len([c for c in labels if len(c) == 6]) >= 40
    assert labels["273333"] == "Software Engineer"
    assert labels["381231"] == "Electrician (General)"
    assert labels["713131"] == "Truck Driver (General)"
    assert "261313" not in labels  # an ANZSCO code


# --- models ------------------------------------------------------------------------------


def test_model_catalogue() -> None:
    models = load_models()
    assert set(models) == {"anzsco", "osca"}
    anzsco_old, anzsco_latest = models["anzsco"]
    assert (anzsco_old.info.model_version, anzsco_latest.info.model_version) == ("1.0.0", "1.1.0")
    assert anzsco_old.info.model_id != anzsco_latest.info.model_id
    assert anzsco_old.info.release_date < anzsco_latest.info.release_date
    assert len(models["osca"]) == 1
    ids = [m.info.model_id for m in _all_models()]
    assert len(set(ids)) == len(ids)
    for model in _all_models():
        assert str(uuid.UUID(model.info.model_id)) == model.info.model_id
    assert models["osca"][0].info.topic_standard == "OSCA"
    assert models["osca"][0].info.topic_version == "2024"
    assert load_models() is models  # loaded once per process


def test_model_info_json() -> None:
    info = _latest("anzsco").info
    assert isinstance(info, ModelInfo)
    assert info.to_json() == {
        "modelId": info.model_id,
        "modelVersion": "1.1.0",
        "modelReleaseDate": info.release_date,
        "modelType": "text-classifier",
        "inputFormat": ["occp_text", "tasks_text"],
        "topicStandard": "ANZSCO",
        "topicVersion": "2022",
    }


def test_code_json() -> None:
    code = Code("331111", "Bricklayer", 0.87)
    assert code.to_json() == {"codeCategory": "331111", "codeLabel": "Bricklayer", "codeConfidence": 0.87}


# --- coding ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", load_models()["anzsco"], ids=lambda m: m.info.model_version)
def test_realistic_answers_anzsco(model: CodingModel) -> None:
    software = model.code("software developer", "writing code and unit tests")
    assert software.status == "successful" and software.result is not None
    assert software.result.category.startswith("2613")

    paramedic = model.code("Paramedic", "responding to medical emergencies")
    assert paramedic.status == "successful" and paramedic.result is not None
    assert paramedic.result.category.startswith("4111") or paramedic.result.category == "411"

    brickie = model.code("Brickie", "")
    assert brickie.status == "successful" and brickie.result is not None
    assert brickie.result.category == "331111"
    assert brickie.result.label == "Bricklayer"
    assert brickie.result.confidence >= 0.6


@pytest.mark.parametrize(
    ("occp_text", "tasks_text", "expected"),
    [
        ("Checkout chick", "", "631111"),
        ("sparky", "wiring houses", "341111"),
        ("truck driver", "driving semi trailer interstate", "733111"),
        ("GP", "seeing patients", "253111"),
        ("high school teacher", "teaching maths", "241411"),
        ("police officer", "", "441312"),
        ("kitchen hand", "", "851311"),
        ("Barista", "making coffee", "431112"),
        ("SOLICITOR", "", "271311"),
        ("senior software engineer", "", "261313"),
    ],
)
def test_more_realistic_answers(occp_text: str, tasks_text: str, expected: str) -> None:
    outcome = _latest("anzsco").code(occp_text, tasks_text)
    assert outcome.result is not None, outcome
    assert outcome.result.category == expected


def test_realistic_answers_osca() -> None:
    model = _latest("osca")
    software = model.code("software developer", "writing code and unit tests")
    assert software.result is not None and software.result.category == "273333"
    paramedic = model.code("Paramedic", "responding to medical emergencies")
    assert paramedic.result is not None and paramedic.result.category.startswith("2694")
    sparky = model.code("sparky", "")
    assert sparky.result is not None and sparky.result.category == "381231"


@pytest.mark.parametrize(
    ("occp_text", "expected"),
    [("nurse", "2544"), ("teacher", "24"), ("labourer", "8"), ("cleaner", "811"), ("manager", "1")],
)
def test_vague_answers_code_to_groups(occp_text: str, expected: str) -> None:
    outcome = _latest("anzsco").code(occp_text, "")
    assert outcome.status == "successful" and outcome.result is not None
    assert outcome.result.category == expected
    assert len(outcome.result.category) < 6
    labels = {row["code"]: row["label"] for row in _rows("anzsco")}
    assert outcome.result.label == labels[expected]


@pytest.mark.parametrize(
    ("occp_text", "tasks_text"),
    [("consultant", ""), ("assistant", ""), ("volunteer", "helping out"), ("xyzzy plugh", ""), ("", ""), ("  ", "...")],
)
@pytest.mark.parametrize("topic", TOPICS)
def test_unsuccessful_answers_give_sorted_suggestions(topic: str, occp_text: str, tasks_text: str) -> None:
    outcome = load_models()[topic][0].code(occp_text, tasks_text)
    assert outcome.status == "unsuccessful"
    assert outcome.result is None
    assert 1 <= len(outcome.suggestions) <= 3
    confidences = [s.confidence for s in outcome.suggestions]
    assert confidences == sorted(confidences, reverse=True)
    assert all(len(s.category) == 6 and s.confidence < 0.6 for s in outcome.suggestions)


def test_nothing_matched_gives_generic_low_suggestions() -> None:
    outcome = _latest("anzsco").code("", "")
    assert outcome.status == "unsuccessful"
    assert [s.confidence for s in outcome.suggestions] == [0.03, 0.02, 0.01]
    assert outcome == _latest("anzsco").code("qwertyuiop", "")


def test_model_versions_differ() -> None:
    old, latest = load_models()["anzsco"]
    answers = ["nurse", "police officer", "aged care worker", "public servant", "Paramedic"]
    assert any(old.code(a, "") != latest.code(a, "") for a in answers)


def test_outcomes_are_well_formed() -> None:
    answers = [row["label"] for row in _rows("anzsco")] + ["", "it", "boss", "farm hand", "self employed"]
    for model in _all_models():
        labels = {row["code"]: row["label"] for row in _rows(model.info.topic)}
        for answer in answers:
            _check_outcome(model.code(answer, "general duties and customer service"), labels)
            _check_outcome(model.code("", answer), labels)


_DETERMINISM_INPUTS = [
    ("software developer", "writing code and unit tests"),
    ("nurse", ""),
    ("consultant", ""),
    ("Labourer", "general labouring on building sites"),
    ("", "cleaning offices at night"),
    ("aged care worker", "showering residents"),
]


def _snapshot() -> list[object]:
    return [
        [json.dumps(_as_json(model.code(o, t)), sort_keys=True) for o, t in _DETERMINISM_INPUTS]
        for model in _all_models()
    ]


def _as_json(outcome: CodeOutcome) -> dict[str, object]:
    return {
        "status": outcome.status,
        "result": outcome.result.to_json() if outcome.result else None,
        "suggestions": [s.to_json() for s in outcome.suggestions],
    }


def test_deterministic_across_calls_and_fresh_loads() -> None:
    first = _snapshot()
    assert _snapshot() == first
    load_models.cache_clear()
    try:
        assert _snapshot() == first
    finally:
        load_models.cache_clear()


def test_deterministic_across_processes() -> None:
    script = (
        "import json\n"
        "from airflow_batchcode.emulator.coding_model import load_models\n"
        f"inputs = {_DETERMINISM_INPUTS!r}\n"
        "out = []\n"
        "for topic in ('anzsco', 'osca'):\n"
        "    for model in load_models()[topic]:\n"
        "        row = []\n"
        "        for o, t in inputs:\n"
        "            r = model.code(o, t)\n"
        "            row.append(json.dumps({'status': r.status,\n"
        "                'result': r.result.to_json() if r.result else None,\n"
        "                'suggestions': [s.to_json() for s in r.suggestions]}, sort_keys=True))\n"
        "        out.append(row)\n"
        "print(json.dumps(out))\n"
    )
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True
        )
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1] == _snapshot()


def test_repeated_calls_are_memoised() -> None:
    model = _latest("anzsco")
    assert model.code("Brickie", "") is model.code("Brickie", "")
