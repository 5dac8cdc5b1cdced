"""Command-line flags derived from a process's settings class.

Each field of a pydantic-settings class becomes a flag (``node_dead_after`` ->
``--node-dead-after``) whose environment twin is the settings' own env var, so
the two can never drift apart. Validation stays in the settings class; this
module only turns a failure into the one clear line the contract promises.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

S = TypeVar("S")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(settings_cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    prefix = settings_cls.model_config.get("env_prefix", "")
    for name, field in settings_cls.model_fields.items():
        env = f"{prefix}{name}".upper()
        default = field.default if field.default is not PydanticUndefined else None
        if field.default_factory is not None:
            default = field.default_factory()
        if field.annotation is bool:
            help_text = f"{field.description or ''} [env {env}]"
            parser.add_argument(_flag(name), dest=name, action="store_true", default=None, help=help_text)
            continue
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        required = field.is_required()
        suffix = "required" if required else f"default: {shown if shown not in (None, '') else 'none'}"
        parser.add_argument(
            _flag(name), dest=name, default=None, metavar=name.split("_")[-1].upper(),
            help=f"{field.description or ''} ({suffix}) [env {env}]",
        )
    return parser


def parse_settings(settings_cls: type[S], argv: Sequence[str] | None, prog: str, description: str) -> S:
    """Flags over environment over defaults; exit 2 with one line on bad configuration."""
    args = build_parser(settings_cls, prog, description).parse_args(argv)
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_flag(loc)}: {message}" if loc else message)
        print(f"{prog}: invalid configuration: " + "; ".join(problems), file=sys.stderr)
        raise SystemExit(2) from None
