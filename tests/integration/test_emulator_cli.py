"""``batchcode emulator`` as a real subprocess: prints its URL, serves, exits cleanly on SIGTERM."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from airflow_batchcode.cli import build_parser, emulator_config, main


@contextmanager
def running_emulator(*flags: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``batchcode emulator FLAGS`` as a subprocess; yields it, its URL and its first line."""
    command = [sys.executable, "-m", "airflow_batchcode.cli", "emulator", "--host", "127.0.0.1", "--port", "0", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=60)
    except queue.Empty:
        process.kill()
        pytest.fail("the emulator printed nothing within 60 s")
    try:
        yield process, line.rsplit(" ", 1)[1].strip(), line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def emulator_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    with running_emulator("--service", "abs", "--client", "cli-client:cli-secret", "--rate-limit", "0") as (
        process,
        url,
        line,
    ):
        assert line.startswith("ABS emulator listening on http://127.0.0.1:"), line
        yield process, url


@pytest.mark.parametrize(
    ("service", "title", "probe", "headers", "error_key"),
    [
        ("refinery", "ASG Refinery", "/v1/jobs/job_x", {"Authorization": "Bearer cli-key"}, "error"),
        ("superai", "super.ai", "/v1/jobs/1", {"API-KEY": "cli-key"}, "message"),
        ("gravity", "Gravity-AI", "/api/v1/jobs/latest", {"X-Api-Key": "cli-key"}, "isError"),
    ],
)
def test_cli_serves_each_service(service: str, title: str, probe: str, headers: dict[str, str], error_key: str) -> None:
    with running_emulator("--service", service, "--api-key", "cli-key:cli-tenant") as (process, url, line):
        assert line.startswith(f"{title} emulator listening on http://127.0.0.1:"), line
        anonymous = requests.get(f"{url}{probe}", timeout=5)
        assert anonymous.status_code in (401, 403) and error_key in anonymous.json(), anonymous.text
        known = requests.get(f"{url}{probe}", headers=headers, timeout=5)
        assert known.status_code in (200, 404), known.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert process.stderr is not None and "Traceback" not in process.stderr.read()


def test_cli_serves_until_sigterm(emulator_process: tuple[subprocess.Popen[str], str]) -> None:
    process, url = emulator_process
    issued = requests.post(
        f"{url}/oauth2/token", auth=("cli-client", "cli-secret"), data={"grant_type": "client_credentials"}, timeout=5
    )
    assert issued.status_code == 200
    topics = requests.get(f"{url}/v1/topics", headers={"Authorization": issued.json()["access_token"]}, timeout=5)
    assert [t["uriName"] for t in topics.json()] == ["anzsco", "osca"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert process.stderr is not None and "Traceback" not in process.stderr.read()


def test_flags_map_onto_the_config() -> None:
    args = build_parser().parse_args(
        [
            "emulator",
            "--client",
            "a:b",
            "--client",
            "c:d",
            "--token-ttl",
            "60",
            "--token-limit",
            "5",
            "--rate-limit",
            "2.5",
            "--daily-quota",
            "0",
            "--url-ttl",
            "30",
            "--awaiting-timeout",
            "10",
            "--processing-delay",
            "0.5",
            "--retention",
            "100",
            "--max-upload-bytes",
            "2GiB",
            "--data-dir",
            "/tmp/x",
            "--public-url",
            "https://example.test",
            "--seed",
            "4",
            "--fault-5xx-rate",
            "0.1",
            "--fault-429-rate",
            "0.2",
            "--fault-429-burst",
            "5",
            "--fault-retry-after",
            "2",
            "--fault-lost-response-rate",
            "0.3",
            "--fault-truncate-rate",
            "0.4",
            "--fault-slow-rate",
            "0.05",
            "--fault-slow-seconds",
            "9",
            "--fault-only",
            "^GET ",
        ]
    )
    config = emulator_config(args)
    assert config.clients == {"a": "b", "c": "d"}
    assert (config.token_ttl, config.token_limit, config.rate_limit, config.daily_quota) == (60, 5, 2.5, 0)
    assert (config.url_ttl, config.awaiting_timeout, config.processing_delay, config.retention) == (30, 10, 0.5, 100)
    assert config.max_upload_bytes == 2 * 1024**3 and str(config.data_dir) == "/tmp/x"
    assert config.public_url == "https://example.test" and config.seed == 4
    assert config.fault_settings() == {
        "fault_5xx_rate": 0.1,
        "fault_429_rate": 0.2,
        "fault_429_burst": 5,
        "fault_retry_after": 2,
        "fault_lost_response_rate": 0.3,
        "fault_truncate_rate": 0.4,
        "fault_slow_rate": 0.05,
        "fault_slow_seconds": 9.0,
        "fault_only": "^GET ",
    }


def test_defaults_match_the_service() -> None:
    config = emulator_config(build_parser().parse_args(["emulator"]))
    assert config.clients == {"demo-client": "demo-secret"}
    assert (config.rate_limit, config.daily_quota, config.url_ttl, config.retention) == (1.0, 10000, 3600, 86400)
    assert config.max_upload_bytes == 5 * 1024**3


@pytest.mark.parametrize(
    "argv",
    [
        ["emulator", "--client", "no-secret"],
        ["emulator", "--fault-5xx-rate", "2"],
        ["emulator", "--max-upload-bytes", "lots"],
        ["emulator", "--service", "nope"],
        ["emulator", "--api-key", "no-tenant"],
        [],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
