"""Generic checks of typed config values: does a value fit its annotation, and does a number lie in its range.

``TrainConfig.__post_init__`` runs them on every field; the rules themselves (which knob, which range) live beside
the knobs in ``training/config.py``. Torch-free, so ``python -m training --help`` and config loading stay light.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Literal, Union, get_args, get_origin

Rule = tuple[Callable[[float], bool], str]
"""A range check and the sentence that states it (``must be at least 1``)."""


class ConfigError(ValueError):
    """A config value of the wrong type or outside its range; the message names the knob, the value and the rule."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{name}={value!r}: {rule}")


def at_least(low: float) -> Rule:
    return (lambda v: v >= low), f"must be at least {low}"


def above(low: float) -> Rule:
    return (lambda v: v > low), f"must be greater than {low}"


def fraction(closed_low: bool = False, closed_high: bool = False) -> Rule:
    """A share between 0 and 1; which ends are allowed differs (a hold-out may be 0, a quantile may not)."""

    def check(v: float) -> bool:
        return (0 <= v if closed_low else 0 < v) and (v <= 1 if closed_high else v < 1)

    return check, f"must lie in {'[' if closed_low else '('}0, 1{']' if closed_high else ')'}"


def conforms(value: object, hint: object) -> bool:
    """Whether ``value`` is of the annotated type; an int passes for a float (JSON writes 2.0 as 2), a bool never
    passes for a number."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    if origin is tuple:
        return isinstance(value, tuple) and len(value) == len(args) and all(map(conforms, value, args))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def describe(hint: object) -> str:
    """How an error message states the expected type: a Literal's values, else the annotation."""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(get_args(hint))
    return getattr(hint, "__name__", str(hint))
