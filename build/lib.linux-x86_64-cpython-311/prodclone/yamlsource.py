"""YAML files people write by hand (the masking rules, the deployment config): parsed with every key's line
and column, refused when a mapping repeats a key, and checked against a JSON Schema with errors that say
``file:line:col: dotted.path: what is wrong``."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import jsonschema
import yaml

Explain = Callable[[jsonschema.ValidationError], "tuple[tuple, str] | None"]


def parse(text: str, source: str, error: type[Exception]) -> tuple[object, dict[tuple, tuple[int, int]]]:
    """The document and the (line, column) of each of its paths; ``error`` carries what is malformed."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(yaml_message(exc, source)) from None
    duplicate = duplicate_key(node)
    if duplicate:
        raise error(f"{source}:{duplicate}; keep one")
    return data, marks(node) if node is not None else {}


def marks(node, path=()) -> dict[tuple, tuple[int, int]]:
    """Map each YAML path to its (line, column), 1-based."""
    out = {path: (node.start_mark.line + 1, node.start_mark.column + 1)}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[(*path, k.value)] = (k.start_mark.line + 1, k.start_mark.column + 1)
            out.update({p: m for p, m in marks(v, (*path, k.value)).items() if p != (*path, k.value)})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(marks(v, (*path, i)))
    return out


def locate(where: dict[tuple, tuple[int, int]], path: tuple) -> tuple[int, int]:
    """The position of ``path``, else of its nearest ancestor in the file."""
    while path not in where and path:
        path = path[:-1]
    return where.get(path, (1, 1))


def duplicate_key(node) -> str | None:
    """The first key a YAML mapping repeats, with its position: YAML loaders keep the last one silently,
    so a second ``email: keep`` under ``email: email`` would turn masking off."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, _ in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                if k.value in seen:
                    return f"{k.start_mark.line + 1}:{k.start_mark.column + 1}: {k.value!r} appears twice in one mapping"
                seen.add(k.value)
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        return None
    return next(filter(None, map(duplicate_key, children)), None)


def best_error(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    # anyOf/if-then errors nest; the deepest one names the real problem.
    # Prefer the branch that matched the value's shape (an object rule's own
    # errors over "is not one of the shorthands").
    while err.context:
        err = max(err.context, key=lambda e: (e.validator not in ("enum", "type"), len(e.absolute_path),
                                              len(e.relative_schema_path)))
    return err


def unknown_key(err: jsonschema.ValidationError) -> tuple[tuple, str] | None:
    """A key the schema does not know, at its own line, with the nearest known one."""
    if err.validator == "enum" and "propertyNames" in err.relative_schema_path:  # a key outside a closed list
        known, extra = list(err.validator_value), err.instance
    elif err.validator == "additionalProperties" and err.validator_value is False:
        known = list(err.schema.get("properties", {}))
        extra = next(k for k in err.instance if k not in known)
    else:
        return None
    close = difflib.get_close_matches(str(extra), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known here: {', '.join(known)}" if known else ""
    return (*err.absolute_path, extra), f"unknown key {extra!r}{hint}"


def schema_errors(schema: dict, data, where: dict, source: str, explain: Explain = unknown_key,
                  limit: int = 10) -> list[str]:
    """``file:line:col: path: message`` for the first ``limit`` places ``data`` breaks ``schema``."""
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))[:limit]:
        best = best_error(err)
        at, message = explain(err) or (tuple(best.absolute_path), best.message)
        line, col = locate(where, at)
        out.append(f"{source}:{line}:{col}: {'.'.join(map(str, at)) or '(top level)'}: {message}")
    return out


def yaml_message(exc: yaml.YAMLError, source: str) -> str:
    """Where the YAML went wrong. An unclosed `{` or `[` is only noticed on a later line: name the bracket's
    own line, where the fix is."""
    mark, ctx = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None) or ""
    if ctx and mark and "flow" in context and ctx.line != mark.line:
        bracket = "{" if "mapping" in context else "["
        return (f"{source}:{ctx.line + 1}:{ctx.column + 1}: malformed YAML: this '{bracket}' is not closed "
                f"({problem} on line {mark.line + 1}); close it, or quote a value that starts with '{bracket}'")
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    return f"{where}: malformed YAML: {problem}"
