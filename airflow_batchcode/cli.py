"""The ``batchcode`` command.

Each subcommand is one ``_add_<name>(subparsers)`` function that registers its parser and sets
``handler`` (``args -> exit code``); :func:`main` only parses and dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from airflow_batchcode.exceptions import MissingExtraError
from airflow_batchcode.extras import require


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its ``ValueError`` becomes the flag's error message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


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
    from airflow_batchcode.emulator.flags import API_KEYS, GROUPS, flagged
    from airflow_batchcode.emulator.server import EMULATED_SERVICES
    from airflow_batchcode.services.catalogue import DEFAULT_SERVICE, spec_for

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
    groups = {title: p.add_argument_group(title) for title in GROUPS}
    groups[API_KEYS].title = f"{API_KEYS} ({', '.join(spec.name for spec in specs if not spec.uses_login)})"
    groups[API_KEYS].add_argument(
        "--api-key",
        action="append",
        type=_client,
        metavar="KEY:TENANT",
        help="an API key and its tenant (repeatable; default demo-key:demo-tenant and other-key:other-tenant)",
    )
    for item, flag in sorted(flagged(EmulatorConfig), key=lambda pair: GROUPS.index(pair[1].group)):
        default = item.default
        groups[flag.group].add_argument(
            f"--{item.name.replace('_', '-')}",
            type=_argument_type(flag.parse) if flag.parse else (str if default is None else type(default)),
            default=default,
            metavar=flag.metavar,
            help=flag.help,
        )
    p.set_defaults(handler=_run_emulator, parser=p)


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
