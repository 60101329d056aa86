"""The demo's survey answers: drawn from the packaged vocabulary, the same for the same seed."""

from __future__ import annotations

from airflow_batchcode.sample_data import _vocabulary, survey_responses


def test_answers_are_the_same_for_a_seed_and_differ_for_another() -> None:
    assert list(survey_responses(500, seed=7)) == list(survey_responses(500, seed=7))
    assert list(survey_responses(500, seed=7)) != list(survey_responses(500, seed=8))


def test_clean_answers_come_from_the_packaged_vocabulary() -> None:
    vocabulary = _vocabulary()
    assert len(vocabulary.jobs) == 50 and vocabulary.vague and vocabulary.non_ascii
    titles = {title for variants, _ in vocabulary.jobs for title in variants}
    duties = {duty for _, variants in vocabulary.jobs for duty in variants}
    answers = list(survey_responses(2000, messy=False))
    assert [a.respondent_id for a in answers[:2]] == ["R0000001", "R0000002"]
    assert all(a.occp_text in titles and a.tasks_text in duties for a in answers)


def test_messy_answers_hold_a_few_per_cent_of_trouble() -> None:
    vocabulary = _vocabulary()
    odd = set(vocabulary.vague) | set(vocabulary.non_ascii)
    answers = list(survey_responses(10_000))
    troubled = [a for a in answers if (a.occp_text, a.tasks_text) in odd or not a.occp_text or not a.tasks_text]
    assert 0.03 < len(troubled) / len(answers) < 0.12
    assert any(a.occp_text and a.occp_text.isupper() for a in answers), "shouting capitals"
    assert any(a.tasks_text and "\n" in a.tasks_text for a in answers), "embedded newlines"
