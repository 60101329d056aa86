"""What a person sees in the stack's Airflow UI, in headless Chromium (Debian's ``chromium``).

The ``batchcode`` connection form shows the provider's relabelled and custom fields with the
secret masked (and stores it encrypted), and the nightly DAG's trigger form shows its Params.
Screenshots go to ``artifacts/stack/``. Without chromium the test skips, except on CI (fails).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.browser import Browser, find_chromium
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

    browser.click(button("Edit Connection"))
    browser.wait_for(f"!!{field('password')} && {field('password')}.value !== ''")
    assert browser.evaluate(f"{field('password')}.type") == "password"
    assert browser.evaluate(f"{field('password')}.value") != SECRET, "the edit form shows a mask, not the secret"
    assert SECRET not in browser.evaluate("document.documentElement.outerHTML")
    browser.screenshot(artifacts / "connection-form-edit.png")


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
    if blocked:
        warnings.warn(
            "the nightly trigger form cannot be submitted with its defaults: Param 'model' is a required string "
            "with default '' (see artifacts/stack/trigger-form.png)",
            stacklevel=1,
        )
