import json

from prodclone.errors import RulesError
from prodclone.masking.copytext import NULL, decode, encode
from prodclone.masking.transforms.base import Transform, register


def _parse(path: str) -> list[str]:
    """'a.b[*].c' -> ['a', 'b', '*', 'c']"""
    out = []
    for part in path.split("."):
        if not part:
            raise RulesError(f"bad JSON path {path!r}")
        while part.endswith("[*]"):
            part = part[:-3]
            out += [part, "*"] if part else ["*"]
            part = ""
        if part:
            out.append(part)
    return out


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

        self.rules = []
        for path, rule in self.spec["paths"].items():
            spec = {"transform": rule} if isinstance(rule, str) else rule
            self.rules.append((_parse(path), build_transform(spec, self.ctx, where=f"json path {path!r}")))
        # Fast path: a document that mentions none of the top-level keys needs no parsing.
        self.needles = [json.dumps(p[0]).encode() for p, _ in self.rules if p[0] != "*"]
        if len(self.needles) != len(self.rules):
            self.needles = []

    def __call__(self, value: bytes) -> bytes:
        if self.needles and not any(n in value for n in self.needles):
            return value
        try:
            doc = json.loads(decode(value))
        except ValueError:
            return value
        for path, fn in self.rules:
            doc = self._apply(doc, path, fn)
        return encode(json.dumps(doc, ensure_ascii=False, separators=(", ", ": ")))

    def _apply(self, node, path, fn):
        if not path:
            if node is None or isinstance(node, (dict, list)):
                return node
            raw = json.dumps(node) if not isinstance(node, str) else node
            masked = fn(encode(raw))
            if masked == NULL:
                return None
            out = decode(masked)
            return out if isinstance(node, str) else _number_or_text(out)
        head, rest = path[0], path[1:]
        if head == "*" and isinstance(node, list):
            return [self._apply(x, rest, fn) for x in node]
        if isinstance(node, dict) and head in node:
            node[head] = self._apply(node[head], rest, fn)
        return node


def _number_or_text(s: str):
    try:
        return json.loads(s)
    except ValueError:
        return s
