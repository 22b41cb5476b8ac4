"""Mask values inside json/jsonb by splicing: the document is scanned (iteratively, so
any depth PostgreSQL accepts), and only the masked values' text is replaced. Everything
else — number text, key order, duplicate keys, escapes, whitespace — stays byte for byte."""

import json
import re

from prodclone.errors import RulesError, UncoveredValue
from prodclone.masking.copytext import NULL, decode, encode
from prodclone.masking.transforms.base import Transform, register

ITEM = None  # a path step into any element of an array: the '[*]' of 'items[*].email'

_SCALAR = r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null"
_IS_SCALAR = re.compile(_SCALAR)
# One JSON token after optional JSON whitespace: a string, a scalar, or punctuation.
_TOKEN = re.compile(rf'[ \t\n\r]*(?:("[^"\\]*(?:\\.[^"\\]*)*")|({_SCALAR})|([{{}}\[\]:,]))', re.S)
_STRING, _PUNCT = 1, 3  # the token's group
_STARS = re.compile(r"(.*?)((?:\[\*\])*)", re.S)  # 'items[*]' -> 'items', '[*]'


def _parse(path: str) -> tuple:
    """'a.b[*].c' -> ('a', 'b', ITEM, 'c')"""
    out = []
    for part in path.split("."):
        if not part:
            raise RulesError(f"bad JSON path {path!r}")
        key, stars = _STARS.fullmatch(part).groups()
        out += ([key] if key else []) + [ITEM] * (len(stars) // 3)
    return tuple(out)


def _show(path: tuple) -> str:
    """A document path as rules write it, shortened if a deep document makes it long."""
    text = "".join("[*]" if p is ITEM else f".{p}" for p in path).lstrip(".") or "(the document itself)"
    return text if len(text) <= 200 else f"{text[:80]}...{text[-80:]} (depth {len(path)})"


def _leaf_text(masked: str, was_string: bool) -> str:
    """A masked value as JSON: a string where the original was one, else the value if it is a JSON scalar."""
    return masked if not was_string and _IS_SCALAR.fullmatch(masked) else json.dumps(masked, ensure_ascii=False)


@register
class JsonPaths(Transform):
    name = "json"
    description = "Mask values inside json/jsonb at the given paths ('a.b', 'items[*].email'), each with its own rule."
    params = {
        "paths": {
            "type": "object",
            "additionalProperties": {"$ref": "#/$defs/rule"},
            "description": "path -> rule for the values found there; other keys are kept",
        },
    }
    required = ("paths",)
    categories = frozenset({"json"})
    can_be_unique = False

    def setup(self) -> None:
        from prodclone.masking.rules import build_transform  # rules builds transforms; avoid a cycle

        self.rules: dict[tuple, Transform] = {}
        for path, rule in self.spec["paths"].items():
            spec = {"transform": rule} if isinstance(rule, str) else rule
            self.rules[_parse(path)] = build_transform(spec, self.ctx, where=f"json path {path!r}")
        self.prefixes = {p[:i] for p in self.rules for i in range(len(p))}

    def __call__(self, value: bytes) -> bytes:
        text = decode(value)
        edits = self._edits(text)
        if not edits:
            return value
        out, pos = [], 0
        for start, end, replacement in edits:
            out += [text[pos:start], replacement]
            pos = end
        out.append(text[pos:])
        return encode("".join(out))

    def _edits(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, replacement) of every masked value, in document order. A stack of
        (path, is_object, skipping) frames stands in for recursion, so depth costs no stack."""
        edits: list[tuple[int, int, str]] = []
        stack: list[tuple[tuple, bool, bool]] = []
        path: tuple = ()  # the path of the value expected next
        expect_key = False
        pos = 0
        while m := _TOKEN.match(text, pos):
            kind, tok, start, pos = m.lastindex, m[m.lastindex], m.start(m.lastindex), m.end()
            if expect_key and kind == _STRING:  # an object's key: the value after it sits at this path
                path, expect_key = (*stack[-1][0], json.loads(tok)), False
                continue
            if kind == _PUNCT and tok in ",:}]":
                if tok in "}]":
                    stack.pop()
                if not stack:
                    break
                expect_key = tok == "," and stack[-1][1]
                continue
            if stack and not stack[-1][1]:
                path = (*stack[-1][0], ITEM)
            skipping = bool(stack) and stack[-1][2]
            if kind == _PUNCT:  # { or [: a container at `path`
                stack.append((path, tok == "{", skipping or self._container(path)))
                expect_key = tok == "{"
                continue
            if not skipping:
                rule = self.rules.get(path)
                if rule is not None and rule.masks and tok != "null":
                    edits.append((start, pos, self._mask_leaf(rule, tok, kind == _STRING)))
            if not stack:
                break
        if stack or text[pos:].strip(" \t\n\r"):
            raise UncoveredValue(f"json: cannot read the document at offset {pos}")
        return edits

    def _container(self, path: tuple) -> bool:
        """True to skip an object or array at ``path`` (nothing inside it is masked)."""
        return path not in self.prefixes

    @staticmethod
    def _mask_leaf(rule: Transform, tok: str, was_string: bool) -> str:
        masked = rule(encode(json.loads(tok) if was_string else tok))
        return "null" if masked == NULL else _leaf_text(decode(masked), was_string)
