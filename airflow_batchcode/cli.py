"""The ``batchcode`` command.

Each subcommand is one ``_add_<name>(subparsers)`` function that registers its parser and sets
``handler`` (``args -> exit code``); :func:`main` only parses and dispatches.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from airflow_batchcode.exceptions import MissingExtraError
from airflow_batchcode.extras import require

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def _size(text: str) -> int:
    """``5368709120``, ``5GiB``, ``500MB`` or ``100k`` → bytes."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    number, unit = int(match.group(1)), (match.group(2) or "").upper()
    binary = "I" in unit
    base = _UNITS[unit[:1] if unit else ""]
    if binary:
        base = 1024 ** {"K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    return number * base


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the ``None`` ones (their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _client(text: str) -> tuple[str, str]:
    client, sep, secret = text.partition(":")
    if not sep or not client or not secret:
        raise argparse.ArgumentTypeError("expected ID:SECRET")
    return client, secret


# --- batchcode emulator ----------------------------------------------------------------------------


def _add_emulator(subparsers: Any, summary: str) -> None:
    from airflow_batchcode.emulator.config import EmulatorConfig
    from airflow_batchcode.emulator.server import EMULATED_SERVICES
    from airflow_batchcode.services.catalogue import DEFAULT_SERVICE, spec_for

    d = EmulatorConfig()
    specs = [spec_for(name) for name in EMULATED_SERVICES]
    p = subparsers.add_parser(
        "emulator",
        help=summary,
        description=f"Serve a faithful emulator of a batch coding service ({', '.join(spec.label for spec in specs)}).",
        formatter_class=_Help,
    )
    p.add_argument(
        "--service", choices=list(EMULATED_SERVICES), default=DEFAULT_SERVICE, help="which service to emulate"
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=0, help="TCP port (0 = any free port)")
    p.add_argument(
        "--client",
        action="append",
        type=_client,
        metavar="ID:SECRET",
        help="an OAuth2 client (repeatable; default demo-client:demo-secret)",
    )
    _settings(
        p.add_argument_group("auth and limits"),
        d,
        token_ttl="access token lifetime (s)",  # noqa: S106 (help text, not a token)
        token_limit="tokens per client per hour (0 = no limit)",  # noqa: S106
        rate_limit="API requests/s per client (0 = off)",
        daily_quota="API requests per client per day (0 = off)",
        quota_window="quota window (s; 86400 = UTC days)",
    )
    _settings(
        p.add_argument_group("operations and storage"),
        d,
        url_ttl="presigned URL lifetime (s)",
        awaiting_timeout="wait for input (s)",
        processing_delay="minimum in_progress (s)",
        processing_workers="coding threads",
        retention="output kept after completion (s)",
        max_upload_bytes="largest input file",
        data_dir="keep files here (default: a temporary dir, deleted on exit)",
        public_url="origin put into presigned URLs (default: as called)",
    )
    g = p.add_argument_group(f"API-key services ({', '.join(spec.name for spec in specs if not spec.uses_login)})")
    g.add_argument(
        "--api-key",
        action="append",
        type=_client,
        metavar="KEY:TENANT",
        help="an API key and its tenant (repeatable; default demo-key:demo-tenant and other-key:other-tenant)",
    )
    _settings(
        g,
        d,
        record_failure_rate="share of records the service fails on its own (partial failures)",
        s3_endpoint_url="S3-compatible endpoint for manifests and delivery (default: AWS)",
    )
    g = p.add_argument_group("fault injection")
    _settings(
        g,
        d,
        reorder_output_rate="share of ABS operations whose output lines come out of input order",
        seed="random seed of the fault injector",
        fault_5xx_rate="share of 500 answers",
        fault_429_rate="share of 429 bursts",
        fault_429_burst="429s in a row per burst",
        fault_retry_after="Retry-After of 429s (s)",
        fault_lost_response_rate="share of requests carried out whose response is cut off",
        fault_truncate_rate="share of downloads cut in half",
        fault_slow_rate="share of slow answers",
        fault_slow_seconds="delay of slow answers",
    )
    g.add_argument("--fault-only", default=None, metavar="REGEX", help='faults only where "METHOD /path" matches')
    p.set_defaults(handler=_run_emulator, parser=p)


_SETTING_TYPES: dict[str, Callable[[str], Any]] = {"max_upload_bytes": _size, "data_dir": Path}
"""Settings whose flag parses its value otherwise than by the type of the setting's default."""


def _settings(group: Any, defaults: Any, **helps: str) -> None:
    """One flag per :class:`EmulatorConfig` setting named: ``--the-name``, typed and defaulted as the setting."""
    for name, help_text in helps.items():
        default = getattr(defaults, name)
        kind = _SETTING_TYPES.get(name) or (str if default is None else type(default))
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=help_text)


def emulator_config(args: argparse.Namespace) -> Any:
    """The :class:`EmulatorConfig` an ``emulator`` command line describes."""
    from airflow_batchcode.emulator.config import EmulatorConfig

    values = {name: getattr(args, name) for name in EmulatorConfig.field_names() if hasattr(args, name)}
    values["clients"] = dict(args.client) if args.client else EmulatorConfig().clients
    if getattr(args, "api_key", None):
        values["api_keys"] = dict(args.api_key)
    return EmulatorConfig(**values)


def _run_emulator(args: argparse.Namespace) -> int:
    from airflow_batchcode.emulator.faults import settings_from
    from airflow_batchcode.emulator.server import serve

    config = emulator_config(args)
    try:
        settings_from(config).validated()
    except ValueError as exc:
        args.parser.error(str(exc))
    try:
        return serve(config, args.host, args.port, args.service)
    except OSError as exc:
        print(f"batchcode emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


# --- batchcode demo ------------------------------------------------------------------------------


def _add_demo(subparsers: Any, summary: str) -> None:
    from airflow_batchcode import demo

    p = subparsers.add_parser(
        "demo",
        help=summary,
        description=demo.__doc__,
        formatter_class=_Help,
    )
    demo.add_arguments(p)
    p.set_defaults(handler=demo.run)


# --- entry point ---------------------------------------------------------------------------------


def _add_with_extra(subparsers: Any, add: Callable[[Any, str], None], name: str, extra: str, summary: str) -> None:
    """``add(subparsers, summary)`` when ``extra`` is installed; else ``name`` only explains which extra to install.

    The stand-in accepts any arguments (``--help`` too: it has no option prefix) and exits with 2.
    """
    try:
        require(extra, f"batchcode {name}")
    except MissingExtraError as exc:
        message = str(exc)
        p = subparsers.add_parser(
            name, help=f"{summary} (needs the [{extra}] extra)", prefix_chars="\0", add_help=False
        )
        p.add_argument("ignored", nargs="*")

        def explain(_args: argparse.Namespace) -> int:
            print(f"batchcode {name}: {message}", file=sys.stderr)
            return 2

        p.set_defaults(handler=explain)
    else:
        add(subparsers, summary)


def build_parser() -> argparse.ArgumentParser:
    """The ``batchcode`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="batchcode", description="airflow-batchcode tools")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_with_extra(subparsers, _add_emulator, "emulator", "emulator", "run a local emulator of a batch coding service")
    _add_with_extra(subparsers, _add_demo, "demo", "demo", "run the nightly pipeline end to end on this machine")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batchcode``; return the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
