"""Table rows rebuilt from a snapshot this code wrote, without validating them again.

A snapshot's rows are the JSON of models that were validated when they were
made (every operation is validated before it is proposed, and ``apply`` builds
rows only from validated values): validating each of them again on restore
cost about 6 s per 50,000 jobs, most of it in the spec's own checks (image
references, byte totals of the command and environment). A restarting master
or a follower installing a snapshot paid that before it could serve.

:func:`row_builder` makes, once per model class, a function that turns one
row's JSON form back into the model the row was dumped from: each field
converted from its JSON form by its declared type (datetimes parsed, enums
looked up, nested models rebuilt the same way), no validator run. A field of
a type this module does not know is validated by pydantic, so a new field can
never be restored wrong, only more slowly. A row that does not have the shape
its model dumps raises ``KeyError``, ``TypeError`` or ``ValueError``; the
caller turns that into one clear error. Only snapshots that say they are in
this code's format come here (the caller checks): anything older or foreign
is validated in full.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

__all__ = ["row_builder"]

M = TypeVar("M", bound=BaseModel)
Converter = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


#: A row's times repeat (created, updated and its first event's are one instant), and
#: the JSON parser hands back one string object for equal strings: the same instant is
#: parsed once and shared (a datetime is immutable). Bounded, so a table of distinct
#: times costs a lookup each and no memory past the bound.
_datetime: Converter = functools.lru_cache(maxsize=1024)(datetime.fromisoformat)


def _optional(inner: Converter) -> Converter:
    def convert(value: Any) -> Any:
        return None if value is None else inner(value)

    return convert


def _items(inner: Converter) -> Converter:
    def convert(value: list[Any]) -> list[Any]:
        return [inner(item) for item in value]

    return convert


def _validated(annotation: Any) -> Converter:
    """The slow, certain way: pydantic validates the value as the field would."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    return adapter.validate_python


def _converter(annotation: Any) -> Converter:
    """How a field of type ``annotation`` comes back from its JSON form."""
    origin = get_origin(annotation)
    if origin is Annotated:
        # The metadata (limits, validators) held when the row was built; the type is what matters now.
        return _converter(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        args = get_args(annotation)
        rest = [arg for arg in args if arg is not type(None)]
        if len(args) == 2 and len(rest) == 1:
            inner = _converter(rest[0])
            return _identity if inner is _identity else _optional(inner)
        return _validated(annotation)
    if annotation in (str, int, bool):
        return _identity
    if annotation is float:
        return float  # exact for the JSON of a float, which may have been written without a fraction
    if annotation is datetime:
        return _datetime
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return {member.value: member for member in annotation}.__getitem__
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return row_builder(annotation)
    if origin is list:
        (item,) = get_args(annotation)
        inner = _converter(item)
        return list if inner is _identity else _items(inner)
    if origin is dict:
        key, value = get_args(annotation)
        if _converter(key) is _identity and _converter(value) is _identity:
            return dict
    return _validated(annotation)


def _default_maker(info: FieldInfo) -> Callable[[], Any]:
    """A function that makes the field's default, found once per field: pydantic's own
    ``get_default`` looks at the factory's signature on every call (about 70 us for ``list``),
    which a restore paid per absent field per row, seconds per 100,000 rows."""
    factory = info.default_factory
    if factory is None:
        default = info.default
        if isinstance(default, int | float | str | bool | type(None) | Enum):
            return lambda: default  # immutable: one object serves every row
        return functools.partial(info.get_default, call_default_factory=True)
    if info.default_factory_takes_validated_data:  # pydantic's own reading, once per field here
        return functools.partial(info.get_default, call_default_factory=True)
    return factory  # type: ignore[return-value]


def _key(name: str, alias: str | None, by_alias: bool) -> str:
    """The key a field is dumped under."""
    return alias if by_alias and alias else name


@functools.cache
def row_builder(cls: type[M]) -> Callable[[dict[str, Any]], M]:
    """A function from one row's JSON form (a dict, as ``model_dump_json`` wrote it) to an instance of ``cls``.

    The instance is what validation would have made: the same field values in
    the declared order (the order decides the next dump's bytes), every field
    present counted as set, private attributes at their defaults.

    The function is generated (as :mod:`dataclasses` generates ``__init__``):
    one dict display of every field, each converted in place, is about twice as
    fast as a loop over the fields, and a restore runs it for every row and
    every nested model. A row that lacks a field (written before the field
    existed) takes the loop, which fills in the default."""
    if cls.model_config.get("extra") == "allow":
        return cls.model_validate  # extra fields live outside the declared ones: not worth a second path
    by_alias = bool(cls.model_config.get("serialize_by_alias"))
    plan = [
        (name, _key(name, info.serialization_alias or info.alias, by_alias), _converter(info.annotation), info)
        for name, info in cls.model_fields.items()
    ]
    names = frozenset(name for name, *_ in plan)
    private = {name: attr.get_default() for name, attr in (cls.__private_attributes__ or {}).items()}
    namespace: dict[str, Any] = {
        "cls": cls, "new": object.__new__, "assign": object.__setattr__, "names": names,
        # One set for every row of the class: the rows a restore makes are whole
        # (every field set), so the only change pydantic makes to it, adding the
        # name of a field assigned, changes nothing. 600,000 fewer sets (216 bytes
        # each) in a 100,000-job restore.
        "every_field": set(names),
        "private": private or None, "plan": plan, "copy": dict.copy,
    }
    fields = []
    for k, (name, key, convert, info) in enumerate(plan):
        if info.exclude_if is not None:
            # Left out of the JSON at its default (a field added later, so that older
            # rows and entries keep their bytes): absent is the default, on the fast path.
            namespace[f"convert_{k}"] = convert
            namespace[f"default_{k}"] = _default_maker(info)
            fields.append(f"{name!r}: convert_{k}(raw[{key!r}]) if {key!r} in raw else default_{k}()")
        elif convert is _identity:
            fields.append(f"{name!r}: raw[{key!r}]")
        else:
            namespace[f"convert_{k}"] = convert
            fields.append(f"{name!r}: convert_{k}(raw[{key!r}])")
    optional = [(key, name) for name, key, _convert, info in plan if info.exclude_if is not None]
    # A row without such a field counts it unset, as validation does. One set per pattern of
    # absent fields, shared like ``every_field``: a model that is assigned to once built must
    # copy it before the first assignment of an unset field (the table rows do, in
    # ``state._Row.__setattr__``); the others (the job spec) are only copied (a copy copies the set).
    partial_sets: dict[tuple[str, ...], set[str]] = {}

    def fields_set_of(raw: dict[str, Any]) -> set[str]:
        absent = tuple(name for key, name in optional if key not in raw)
        if not absent:
            return namespace["every_field"]  # type: ignore[no-any-return]
        kept = partial_sets.get(absent)
        if kept is None:
            kept = partial_sets[absent] = set(names) - set(absent)
        return kept

    namespace["fields_set_of"] = fields_set_of
    source = "\n".join([
        "def build(raw):",
        "    try:",
        f"        values = {{{', '.join(fields)}}}",
        "        fields_set = fields_set_of(raw)" if optional else "        fields_set = every_field",
        "    except KeyError:",
        "        values, fields_set = with_defaults(raw)",
        "    row = new(cls)",
        "    assign(row, '__dict__', values)",
        "    assign(row, '__pydantic_fields_set__', fields_set)",
        "    assign(row, '__pydantic_extra__', None)",
        "    assign(row, '__pydantic_private__', None if private is None else copy(private))",
        "    return row",
    ])

    defaults = {name: _default_maker(info) for name, _key_, _convert, info in plan}

    def with_defaults(raw: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        values: dict[str, Any] = {}
        fields_set = set(names)
        for name, key, convert, info in plan:
            if key in raw:
                values[name] = convert(raw[key])
            elif info.default_factory_takes_validated_data:  # a field added after the snapshot was written
                values[name] = info.get_default(call_default_factory=True, validated_data=values)
            else:
                values[name] = defaults[name]()
                fields_set.discard(name)
        return values, fields_set

    namespace["with_defaults"] = with_defaults
    exec(source, namespace)
    build: Callable[[dict[str, Any]], M] = namespace["build"]
    return build
