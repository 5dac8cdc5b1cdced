"""Command-line flags derived from a process's settings class.

Each field of a pydantic-settings class becomes a flag (``node_dead_after`` ->
``--node-dead-after``) whose environment twin is the settings' own env var, so
the CLI, the environment and ``--help`` cannot disagree. Validation stays in
the settings class; this module turns a failure into the one clear line the
contract promises: an operator reading a journal should see what to fix, not
where Python was.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Sequence
from typing import Any, Literal, NoReturn, TypeVar, get_args, get_origin

import pydantic

S = TypeVar("S", bound=pydantic.BaseModel)

EXIT_CONFIG = 2


class ConfigError(Exception):
    """A configuration problem, phrased for the operator in one line."""


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see --help)")


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(settings_cls: type[pydantic.BaseModel], field: str) -> str:
    return str(settings_cls.model_config.get("env_prefix", "")) + field.upper()


def _format_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def build_parser(
    settings_cls: type[pydantic.BaseModel], prog: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=prog,
        description=description,
        epilog=epilog,
        argument_default=argparse.SUPPRESS,  # absent flags must not hide the environment
    )
    for name, field in settings_cls.model_fields.items():
        if field.is_required():
            where = "required"
        else:
            where = f"default: {_format_default(field.get_default(call_default_factory=True))}"
        help_text = f"{field.description or ''} [{where}; env {env_name(settings_cls, name)}]".replace("%", "%%")
        if field.annotation is bool:
            parser.add_argument(flag_name(name), dest=name, action="store_true", help=help_text)
            continue
        # Values stay strings: pydantic converts and validates them with the
        # same rules (and messages) as the environment twins.
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum) and issubclass(annotation, str):
            choices = tuple(m.value for m in annotation)  # a StrEnum
        metavar = "{" + "|".join(choices) + "}" if choices else name.upper()
        parser.add_argument(flag_name(name), dest=name, metavar=metavar, help=help_text)
    return parser


def describe_validation_error(settings_cls: type[pydantic.BaseModel], exc: pydantic.ValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = error.get("loc") or ()
        name = str(loc[0]) if loc else ""
        if name in settings_cls.model_fields:
            if error.get("type") == "missing":
                message = "is required"
            elif isinstance(error.get("input"), str) and not str(error.get("type", "")).startswith("value_error"):
                message = f"{message} (got {error['input']!r})"
            problems.append(f"{flag_name(name)} (env {env_name(settings_cls, name)}) {message}")
        else:
            problems.append(message)
    return "invalid configuration: " + "; ".join(problems)


def load_settings(
    settings_cls: type[S], argv: Sequence[str] | None, prog: str, description: str, epilog: str | None = None
) -> S:
    """Flags over environment over defaults; ConfigError with one line when they do not add up."""
    values = vars(build_parser(settings_cls, prog, description, epilog).parse_args(argv))
    try:
        return settings_cls(**values)
    except pydantic.ValidationError as exc:
        raise ConfigError(describe_validation_error(settings_cls, exc)) from None


def fail(prog: str, message: str, status: int = EXIT_CONFIG) -> NoReturn:
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(status)


def parse_settings(
    settings_cls: type[S], argv: Sequence[str] | None, prog: str, description: str, epilog: str | None = None
) -> S:
    """``load_settings``, exiting 2 with the one line on a bad configuration."""
    try:
        return load_settings(settings_cls, argv, prog, description, epilog)
    except ConfigError as exc:
        fail(prog, str(exc))
