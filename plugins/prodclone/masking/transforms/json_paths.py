"""Mask values inside json/jsonb by splicing: the document is scanned (iteratively, so
any depth PostgreSQL accepts), and only the masked values' text is replaced. Everything
else — number text, key order, duplicate keys, escapes, whitespace — stays byte for byte."""

import json
import re
from bisect import bisect
from collections.abc import Iterator

from prodclone.errors import RulesError, UncoveredValue
from prodclone.masking import kernel
from prodclone.masking.copytext import NULL, decode, encode
from prodclone.masking.transforms.base import HANDS_BACK, Transform, register
from prodclone.masking.transforms.outputs import Output
from prodclone.masking.transforms.scrub import identifiers

ITEM = None  # a path step into any element of an array: the '[*]' of 'items[*].email'

_SCALAR = r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null"
_IS_SCALAR = re.compile(_SCALAR)
# One JSON token after optional JSON whitespace: a string, a scalar, or punctuation.
_TOKEN = re.compile(rf'[ \t\n\r]*(?:("[^"\\]*(?:\\.[^"\\]*)*")|({_SCALAR})|([{{}}\[\]:,]))', re.S)
_STRING, _PUNCT = 1, 3  # the token's group
UNLISTED = ("fail", "keep", "null", "drop")
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
    text = "".join("[*]" if p is ITEM else f".{_key(p)}" for p in path).lstrip(".") or "(the document itself)"
    return text if len(text) <= 200 else f"{text[:80]}...{text[-80:]} (depth {len(path)})"


def _key(key: str) -> str:
    """A key as reports show it. A key can be row data (a map from email addresses to roles): one holding an
    identifier scrub finds is shown by its kinds only, so errors and alerts never carry it."""
    kinds = sorted({kind for kind, _, _ in identifiers(key)})
    return f"<a key holding {', '.join(kinds)}>" if kinds else key


def _leaf_text(masked: str, was_string: bool) -> str:
    """A masked value as JSON: a string where the original was one, else the value if it is a JSON scalar."""
    return masked if not was_string and _IS_SCALAR.fullmatch(masked) else json.dumps(masked, ensure_ascii=False)


class _Frame:
    """An open object or array: where it is, what happens when it closes, and (objects) the
    commas and dropped members needed to remove members and keep the text valid JSON."""

    __slots__ = ("path", "is_object", "skipping", "start", "member_start", "on_close", "commas", "drops")

    def __init__(self, path: tuple, is_object: bool, skipping: bool, start: int, member_start: int, on_close):
        self.path, self.is_object, self.skipping, self.start = path, is_object, skipping, start
        self.member_start, self.on_close = member_start, on_close
        self.commas: list[int] = []
        self.drops: list[tuple[int, int]] = []


def _drop_edits(frame: _Frame) -> list[tuple[int, int, str]]:
    """Remove an object's dropped members and the commas that would be left dangling:
    comma i stays only between a kept member i and a later kept one."""
    dropped = {bisect(frame.commas, start) for start, _ in frame.drops}
    kept = [i for i in range(len(frame.commas) + 1) if i not in dropped]
    last_kept = kept[-1] if kept else -1
    return [(s, e, "") for s, e in frame.drops] + [
        (c, c + 1, "") for i, c in enumerate(frame.commas) if i in dropped or i >= last_kept]


@register
class JsonPaths(Transform):
    name = "json"
    description = ("Mask values inside json/jsonb at the given paths ('a.b', 'items[*].email'), each with its own rule; "
                   "`unlisted` says what happens to every other key and value.")
    params = {
        "paths": {
            "type": "object",
            "additionalProperties": {"$ref": "#/$defs/rule"},
            "description": "path -> rule for the values found there; `keep` or `null` on an object or array covers all of it",
        },
        "unlisted": {
            "enum": [*UNLISTED, None],
            "description": "A key or value at a path not listed: fail (default) stops the export naming the path; "
                           "keep passes it; null replaces its value with null; drop removes the key.",
        },
    }
    required = ("paths",)
    examples = ({"transform": "json", "paths": {"email": "email", "contacts[*].phone": {"transform": "faker", "provider": "phone_number"},
                                                "theme": "keep"}},
                {"transform": "json", "paths": {"name": "null"}, "unlisted": "drop"})
    categories = frozenset({"json"})
    can_be_unique = False
    may_equal_inputs = True  # a document with nothing to mask comes out as it went in

    def setup(self) -> None:
        from prodclone.masking.rules import build_transform  # rules builds transforms; avoid a cycle

        self.rules: dict[tuple, Transform] = {}
        for path, rule in self.spec["paths"].items():
            spec = {"transform": rule} if isinstance(rule, str) else rule
            self.rules[_parse(path)] = build_transform(spec, self.ctx, where=f"json path {path!r}")
        self.prefixes = {p[:i] for p in self.rules for i in range(len(p))}
        # Each path's rule as a function of one value: the kernel's where it can run it (kernel.py).
        self.leaf_fns = {rule: kernel.value_function(rule) for rule in self.rules.values()}
        self.unlisted = self.spec.get("unlisted", "fail") or "null"  # YAML's bare null is None

    def output(self, lengths) -> Output:
        return Output()  # the document, edited in place: still json

    def native(self) -> tuple:
        """The paths as a trie for the kernel's scanner (_kernel.c, do_json): node 0 is the document; each node
        (rule, [*] child, keys, their children, a listed path goes through it). The kernel hands every document
        it does not read plainly (escapes, errors, drops, rules it cannot run) back to this transform."""
        nodes: list[list] = [[None, -1, [], [], False]]
        index = {(): 0}

        def node(path: tuple) -> int:
            if path not in index:
                parent = node(path[:-1])
                index[path] = len(nodes)
                nodes.append([None, -1, [], [], False])
                if path[-1] is ITEM:
                    nodes[parent][1] = index[path]
                else:
                    nodes[parent][2].append(path[-1].encode())
                    nodes[parent][3].append(index[path])
            return index[path]

        for path, rule in self.rules.items():
            native = rule.native() if rule.masks else None
            nodes[node(path)][0] = (("keep",) if not rule.masks else ("python",) if native is None or native[0] in HANDS_BACK
                                    else ("mask", (native[0], False, *native[1:]), rule.null_output == "always"))
        for prefix in self.prefixes:
            nodes[node(prefix)][4] = True
        return ("json", UNLISTED.index(self.unlisted), tuple((r, item, tuple(keys), tuple(kids), prefix)
                                                             for r, item, keys, kids, prefix in nodes))

    @property
    def leak_checked(self) -> bool:
        return any(rule.leak_checked for rule in self.rules.values())

    def leak_values(self, field: bytes) -> Iterator[tuple[str, Transform, bytes]]:
        """The values at listed paths whose rules the leak check covers, each as its rule sees it."""
        found = []

        def collect(path: tuple, rule: Transform, tok: str, was_string: bool) -> str:
            if rule.leak_checked:
                found.append((f"json path {_show(path)}", rule, encode(json.loads(tok) if was_string else tok)))
            return tok

        self._edits(decode(field), collect)
        return iter(found)

    def __call__(self, value: bytes) -> bytes:
        text = decode(value)
        edits = self._edits(text)
        if not edits:
            return value
        out, pos = [], 0
        for start, end, replacement in sorted(edits):
            out += [text[pos:start], replacement]
            pos = end
        out.append(text[pos:])
        return encode("".join(out))

    def _edits(self, text: str, on_leaf=None) -> list[tuple[int, int, str]]:
        """(start, end, replacement) of every change. Frames on a stack stand in for
        recursion, so depth costs no Python stack. ``on_leaf(path, rule, token, was_string)``
        gives a listed value's replacement text; by default, its rule masks it."""
        on_leaf = on_leaf or (lambda _path, rule, tok, was_string: self._mask_leaf(self.leaf_fns[rule], tok, was_string))
        edits: list[tuple[int, int, str]] = []
        stack: list[_Frame] = []
        path: tuple = ()  # the path of the value expected next
        member_start = 0  # where the member holding that value starts (its key, in an object)
        expect_key = False
        pos = 0
        while m := _TOKEN.match(text, pos):
            kind, tok, start, pos = m.lastindex, m[m.lastindex], m.start(m.lastindex), m.end()
            if expect_key and kind == _STRING:  # an object's key: the value after it sits at this path
                path, member_start, expect_key = (*stack[-1].path, json.loads(tok)), start, False
                continue
            if kind == _PUNCT and tok in ",:}]":
                if tok in "}]":
                    self._close(stack.pop(), stack, pos, edits)
                elif tok == "," and stack[-1].is_object:
                    stack[-1].commas.append(start)
                if not stack:
                    break
                expect_key = tok == "," and stack[-1].is_object
                continue
            if not stack or not stack[-1].is_object:
                path, member_start = (*stack[-1].path, ITEM) if stack else (), start
            action = None if stack and stack[-1].skipping else self._action(path, kind == _PUNCT)
            if kind == _PUNCT:  # { or [: a container at `path`
                skipping = action != "descend"
                stack.append(_Frame(path, tok == "{", skipping, start, member_start, action if skipping else None))
                expect_key = tok == "{"
                continue
            if isinstance(action, Transform):
                if action.masks and tok != "null":
                    edits.append((start, pos, on_leaf(path, action, tok, kind == _STRING)))
            elif action is not None:
                self._apply(action, stack, start, member_start, pos, edits)
            if not stack:
                break
        if stack or text[pos:].strip(" \t\n\r"):
            raise UncoveredValue(f"json: cannot read the document at offset {pos}")
        return edits

    def _action(self, path: tuple, container: bool):
        """What to do with the value at ``path``: its rule (a Transform), "descend" into a container
        on the way to listed paths, or the ``unlisted`` policy ("keep", "null", "drop")."""
        if container and path in self.prefixes:
            return "descend"
        rule = self.rules.get(path)
        if rule is None:
            if self.unlisted == "fail":
                raise UncoveredValue(f"json path {_show(path)!r} is not listed (unlisted: fail): add it to paths "
                                     "with a rule, or keep if it holds no personal data")
            return self.unlisted
        if container and rule.masks and rule.null_output != "always":
            raise UncoveredValue(f"json path {_show(path)!r} holds an object or array, which {rule.name} cannot mask: "
                                 "list the paths inside it, or use keep or null")
        return rule if not container else ("null" if rule.masks else "keep")

    @staticmethod
    def _apply(action: str, stack: list[_Frame], start: int, member_start: int, end: int, edits: list) -> None:
        """null or drop the value spanning start..end (keep needs nothing). Only an object's key
        can be dropped; an array element or the whole document becomes null instead."""
        if action == "drop" and stack and stack[-1].is_object:
            stack[-1].drops.append((member_start, end))
        elif action in ("null", "drop"):
            edits.append((start, end, "null"))

    def _close(self, frame: _Frame, stack: list[_Frame], end: int, edits: list) -> None:
        if frame.drops:
            edits += _drop_edits(frame)
        if frame.on_close is not None:
            self._apply(frame.on_close, stack, frame.start, frame.member_start, end, edits)

    @staticmethod
    def _mask_leaf(rule, tok: str, was_string: bool) -> str:
        masked = rule(encode(json.loads(tok) if was_string else tok))
        return "null" if masked == NULL else _leaf_text(decode(masked), was_string)
