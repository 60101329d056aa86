"""What a person sees in the stack's Airflow UI, in headless Chromium (Debian's ``chromium``).

The ``batchcode`` connection form shows the provider's relabelled and custom fields with the
secret masked (stored encrypted, and kept when the connection is edited without retyping it), and the nightly DAG's trigger form shows its Params.
Screenshots go to ``artifacts/stack/``. Without chromium the test skips, except on CI (fails).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from stack.browser import Browser, BrowserError, find_chromium
from stack.host import wait_for
from stack.topology import ADMIN_USER, DAG_ID, Stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(420)]

CONN_ID = "batchcode_ui_check"
SECRET = "ui-secret-7f3a9c"
CUSTOM_FIELDS = ("Service", "Default topic", "Token URL", "Requests per second", "Read timeout (s)", "Allow plain http")
RELABELLED = ("API origin", "Client ID", "Client secret / API key")
PARAMS = ("Topic", "Model id", "From date", "To date")


def button(label: str, within: str = "document") -> str:
    """JavaScript finding the button whose text (or aria-label) is ``label``."""
    return (
        f"Array.from({within}.querySelectorAll('button')).find(b => b.innerText.trim() === {label!r} "
        f"|| b.getAttribute('aria-label') === {label!r})"
    )


def field(name: str) -> str:
    """JavaScript finding the input named ``name``."""
    return f"document.querySelector('[role=dialog] [name={name}]')"


DIALOG = "document.querySelector('[role=dialog] input[name=connection_id]').closest('[role=dialog]')"
TRIGGER_DIALOG = "document.querySelector('input[name=element_model]').closest('[role=dialog]')"


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    """Chromium, logged in to the stack's UI through its login form; the test connection removed afterwards."""
    executable = find_chromium()
    if executable is None:
        message = "chromium is not installed (apt-get install chromium; `make stack` does it)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is a failure, not a skip)")
        pytest.skip(message + "; set CI=1 to make this a failure")
    with Browser(executable, height=1300) as chromium:
        chromium.goto(f"{stack.api_url}/")
        chromium.type_into("document.querySelector('input[name=username]')", ADMIN_USER)
        chromium.type_into("document.querySelector('input[name=password]')", stack.resources.admin_password)
        chromium.click(button("Sign in"))
        chromium.wait_for("!location.pathname.startsWith('/auth')", timeout=30)
        try:
            yield chromium
        finally:
            stack.api("DELETE", f"connections/{CONN_ID}", check=False)


def test_connection_form_shows_custom_fields_and_masks_the_secret(
    stack: Stack, browser: Browser, artifacts: Path
) -> None:
    browser.goto(f"{stack.api_url}/connections")
    browser.click(button("Add Connection"))
    browser.type_into(field("connection_id"), CONN_ID)
    browser.click("document.querySelector('[role=dialog] [role=combobox]')")
    browser.send("Input.insertText", {"text": "Batch"})
    browser.click(
        "Array.from(document.querySelectorAll('[role=option]')).find(o => o.innerText.includes('Batch Coding'))"
    )
    browser.type_into(field("host"), "https://partner-coder.api.abs.gov.au")
    browser.type_into(field("login"), "ui-client")
    browser.type_into(field("password"), SECRET)

    standard = browser.evaluate(f"{DIALOG}.innerText")
    for label in RELABELLED:
        assert label in standard, f"relabelled field {label!r} missing:\n{standard}"
    assert "Schema" not in standard and "Port" not in standard, "schema and port are hidden for batchcode"
    assert browser.evaluate(f"{field('password')}.type") == "password", "the secret is typed into a masked input"
    browser.screenshot(artifacts / "connection-form-standard.png")

    browser.click(button("Extra Fields", DIALOG))
    browser.wait_for(f"!!{field('element_topic')}")
    browser.type_into(field("element_topic"), "osca")
    extra = browser.evaluate(f"{DIALOG}.innerText")
    for label in CUSTOM_FIELDS:
        assert label in extra, f"custom field {label!r} missing:\n{extra}"
    assert SECRET not in browser.text()
    browser.screenshot(artifacts / "connection-form-extra.png")

    browser.click(button("Save", DIALOG))
    browser.wait_for(f"document.body.innerText.includes({CONN_ID!r}) && !document.querySelector('[role=dialog]')")
    saved = stack.api("GET", f"connections/{CONN_ID}").json()
    assert saved["conn_type"] == "batchcode"
    assert saved["password"] != SECRET, "the REST API never returns the secret"
    assert json.loads(saved["extra"])["topic"] == "osca", "the custom field lands in extra"
    stored = stack.metadata_query("SELECT password FROM connection WHERE conn_id = %s", CONN_ID)[0][0]
    assert SECRET not in stored, "stored Fernet-encrypted"

    open_edit_dialog(browser, artifacts)
    assert browser.evaluate(f"{field('password')}.type") == "password"
    browser.wait_for(f"{field('login')}.value === 'ui-client'", timeout=30)  # the dialog has the saved connection
    assert browser.evaluate(f"{field('password')}.value") != SECRET, "the edit form never shows the secret"
    assert SECRET not in browser.evaluate("document.documentElement.outerHTML")
    browser.screenshot(artifacts / "connection-form-edit.png")
    # Saved again with the secret left as shown (a mask, or empty): the stored secret must stay what was typed.
    browser.type_into(field("login"), "ui-client-2")
    browser.click(button("Save", "document.querySelector('[role=dialog]')"))
    browser.wait_for("!document.querySelector('[role=dialog]')", timeout=30)
    edited = stack.metadata_query("SELECT login, password FROM connection WHERE conn_id = %s", CONN_ID)[0]
    assert edited[0] == "ui-client-2", "the edit was saved"
    kept = Fernet(stack.resources.fernet_key.encode()).decrypt(edited[1].encode()).decode()
    assert kept == SECRET, "editing a connection without retyping its secret keeps the secret"


def open_edit_dialog(browser: Browser, artifacts: Path) -> None:
    """Open the saved connection's edit dialog with its password field showing.

    Right after a save the list re-renders, so a click can land on a button that is about to be
    replaced; click again until a dialog opens. The dialog may open with "Standard Fields" folded
    (the add form ended on "Extra Fields"): unfold it. On failure, a screenshot says what was shown.
    """
    any_dialog = "document.querySelector('[role=dialog]')"
    row = f"(Array.from(document.querySelectorAll('tr')).find(r => r.innerText.includes({CONN_ID!r})) || document)"
    try:
        for _ in range(3):
            if not browser.evaluate(f"!!{any_dialog}"):
                browser.click(button("Edit Connection", row))
            try:
                browser.wait_for(f"!!{any_dialog}", timeout=10)
                break
            except BrowserError:
                continue
        browser.wait_for(f"!!{field('password')} || !!{button('Standard Fields', any_dialog)}", timeout=30)
        if not browser.evaluate(f"!!{field('password')}"):
            browser.click(button("Standard Fields", any_dialog))
            browser.wait_for(f"!!{field('password')}")
    except BrowserError:
        browser.screenshot(artifacts / "connection-form-edit-failed.png")
        raise


def test_trigger_form_shows_the_nightly_params(stack: Stack, browser: Browser, artifacts: Path) -> None:
    browser.goto(f"{stack.api_url}/dags/{DAG_ID}")
    browser.click(button("Trigger"))
    browser.wait_for(f"!!document.querySelector('input[name=element_model]') && {TRIGGER_DIALOG}")
    form = browser.evaluate(f"{TRIGGER_DIALOG}.innerText")
    assert f"Trigger Dag - {DAG_ID}" in form
    assert "Run Parameters" in form
    for label in PARAMS:
        assert label in form, f"Param {label!r} missing:\n{form}"
    assert "Classification to code into." in form, "Param descriptions are shown"
    assert browser.evaluate("document.querySelector('input[name=element_topic]').value") == "anzsco"
    assert browser.evaluate("document.querySelector('input[name=element_from_date]').type") == "date"
    browser.screenshot(artifacts / "trigger-form.png")

    submit = f"{button('Trigger', TRIGGER_DIALOG)}"
    blocked = bool(browser.evaluate(f"{submit}.disabled"))
    (artifacts / "trigger-form.json").write_text(json.dumps({"form": form, "trigger_disabled_with_defaults": blocked}))
    assert not blocked, (
        "the nightly trigger form cannot be submitted with its defaults (see artifacts/stack/trigger-form.png): "
        "every Param must be valid as shown, e.g. the optional 'model' left empty"
    )


# --- the provider's UI plugin (issue 17) --------------------------------------------------------------------------

REPORT_CHARTS = ("Status mix", "Confidence histogram", "Code length mix", "Top 20 codes", "Rejection reasons")


def visible(selector: str) -> str:
    """JavaScript finding the first element matching ``selector`` that is displayed."""
    return f"Array.from(document.querySelectorAll({selector!r})).find(e => e.offsetParent)"


@pytest.fixture(scope="module")
def finished_run(stack: Stack) -> str:
    """A run of the nightly DAG over the first day, finished (success)."""
    day = stack.options.first_day
    run_id = f"stack_ui_{day}"
    stack.trigger({"from_date": day, "to_date": day}, run_id=run_id)
    state = wait_for(
        f"run {run_id}",
        lambda: stack.run_state(run_id) if stack.run_state(run_id) in ("success", "failed") else None,
        300,
        2,
    )
    assert state == "success"
    return run_id


def test_coding_report_of_a_finished_run(stack: Stack, browser: Browser, artifacts: Path, finished_run: str) -> None:
    # inside Airflow: the run page's "Coding report" tab shows the plugin page in an iframe
    browser.goto(f"{stack.api_url}/dags/{DAG_ID}/runs/{finished_run}/plugin/coding-report")
    browser.wait_for("Array.from(document.querySelectorAll('iframe')).some(f => f.src.includes('/batchcode/dags/'))")
    browser.wait_for(
        "(() => { const f = document.querySelector('iframe'); const d = f && f.contentDocument; "
        "return d && d.querySelectorAll('svg').length >= 6; })()"
    )
    browser.screenshot(artifacts / "coding-report-tab.png", full_page=False)

    # the page itself, whole
    browser.goto(f"{stack.api_url}/batchcode/dags/{DAG_ID}/runs/{finished_run}")
    text = browser.text()
    rows = stack.warehouse_query("SELECT COUNT(*) FROM coded_occupations WHERE dag_run_id = %s", finished_run)[0][0]
    assert "Records in" in text and "Rows out" in text and f"{rows}" in text
    for chart in REPORT_CHARTS:
        selector = json.dumps(f'svg[aria-label="{chart}"]')
        assert browser.evaluate(f"!!document.querySelector({selector})"), chart
    # nothing cut off: every chart fits in its card and the page has no horizontal scroll
    assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert browser.evaluate(
        "Array.from(document.querySelectorAll('.card svg')).every(s => s.getBoundingClientRect().right <= "
        "s.closest('.card').getBoundingClientRect().right + 1)"
    )
    assert browser.evaluate("performance.getEntriesByType('resource').every(r => r.name.startsWith(location.origin))")
    browser.screenshot(artifacts / "coding-report.png")


def test_review_decision_is_saved_and_shown(stack: Stack, browser: Browser, artifacts: Path, finished_run: str) -> None:
    browser.goto(f"{stack.api_url}/batchcode/review?dag_id={DAG_ID}&run_id={finished_run}")
    browser.wait_for("!!document.querySelector('#queue .pick')")
    row = "document.querySelector('#queue .pick').closest('tr')"
    key = json.loads(browser.evaluate(f"{row}.dataset.key"))
    code = browser.evaluate("document.querySelector('#queue .pick').dataset.code")
    browser.click("document.querySelector('#queue .pick')")
    browser.wait_for(f"!!{row} && {row}.querySelector('.out').innerText.startsWith('Saved')", timeout=20)
    browser.screenshot(artifacts / "review-saved.png", full_page=False)
    # the page reloads itself after a decision: the table may be missing for a moment
    decisions_text = "(document.querySelector('#decisions') || {innerText: ''}).innerText"
    browser.wait_for(f"{decisions_text}.includes({key['record_id']!r})", timeout=20)
    decisions = browser.evaluate("document.querySelector('#decisions').innerText")
    assert code in decisions and "admin" in decisions
    stored = stack.warehouse_query(
        "SELECT reviewer, new_code FROM coded_occupations_reviews WHERE dag_run_id = %s AND position = %s",
        finished_run,
        key["position"],
    )
    assert stored == [("admin", code)]
    outcome = stack.warehouse_query(
        "SELECT code_status, code_category FROM coded_occupations_latest WHERE dag_run_id = %s AND position = %s",
        finished_run,
        key["position"],
    )
    assert outcome == [("reviewed", code)]
    browser.evaluate("document.querySelector('#decisions').scrollIntoView()")
    browser.screenshot(artifacts / "review-decisions.png", full_page=False)


@pytest.mark.timeout(900)
def test_backfill_from_the_trigger_dialog_codes_three_slices(stack: Stack, browser: Browser, artifacts: Path) -> None:
    assert stack.api("GET", f"dags/{DAG_ID}").json()["is_backfillable"] is True
    days = ["2026-01-15", "2026-01-16", "2026-01-17"]
    browser.goto(f"{stack.api_url}/dags/{DAG_ID}")
    browser.click(button("Trigger"))
    browser.wait_for("!!document.querySelector('input[value=backfill]')")
    assert browser.evaluate("document.querySelector('input[value=backfill]').disabled") is False
    browser.click("document.querySelector('input[value=backfill]').closest('label')")
    dialog = "document.querySelector('input[value=backfill]').closest('[role=dialog]')"
    for index, day in enumerate((days[0], days[-1])):
        browser.click(f"document.querySelectorAll('[data-testid=datetime-input]')[{index}]")
        browser.type_into(visible('input[placeholder="YYYY/MM/DD"]'), day.replace("-", "/"))
        browser.type_into(visible('input[placeholder="HH:mm"]'), "00:00")
        for kind in ("keyDown", "keyUp"):
            browser.send(
                "Input.dispatchKeyEvent", {"type": kind, "key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27}
            )
    # the three days at once, as an engineer backfilling history would (the dialog's default is one at a time)
    max_runs = f"{dialog}.querySelector('input[type=number]')"
    browser.type_into(max_runs, "3")
    browser.evaluate(f"{max_runs}.blur()")
    browser.wait_for(f"{dialog}.innerText.includes('3 runs will be triggered')")
    browser.wait_for(f"!{button('Run Backfill', dialog)}.disabled")
    browser.screenshot(artifacts / "backfill-dialog.png", full_page=False)
    browser.click(button("Run Backfill", dialog))
    browser.wait_for("!document.querySelector('input[value=backfill]')", timeout=30)

    def backfill_runs() -> list[dict[str, Any]] | None:
        runs = stack.api("GET", f"dags/{DAG_ID}/dagRuns", params={"run_type": "backfill", "limit": 50}).json()[
            "dag_runs"
        ]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if len(runs) == 3 and len(done) == 3 else None

    runs = wait_for("three backfill runs", backfill_runs, 600, 3)
    browser.goto(f"{stack.api_url}/dags/{DAG_ID}/runs")
    browser.wait_for("document.body.innerText.includes('backfill') || document.body.innerText.includes('Backfill')")
    browser.screenshot(artifacts / "backfill-runs.png", full_page=False)
    assert sorted(r["data_interval_start"][:10] for r in runs) == days
    backfill = stack.api("GET", "backfills", params={"dag_id": DAG_ID}).json()["backfills"][-1]
    assert backfill["max_active_runs"] == 3, backfill
    assert max(r["start_date"] for r in runs) < min(r["end_date"] for r in runs), "the three days ran at once"
    for run in runs:
        assert run["state"] == "success", run
        day = run["data_interval_start"][:10]
        coded = stack.warehouse_query("SELECT COUNT(*) FROM coded_occupations WHERE dag_run_id = %s", run["dag_run_id"])
        source = stack.warehouse_query("SELECT COUNT(*) FROM survey_responses WHERE answered_on = %s", day)
        assert coded == source and source[0][0] > 0, (day, coded, source)
