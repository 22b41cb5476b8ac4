"""Mask each element of an array with any rule, by splicing: the array's text (inside the COPY
field) is read element by element and only the elements are rewritten, so NULL elements,
dimensions and lower bounds ('[0:1]={a,b}') stay exactly as they were."""

from collections.abc import Iterator

from prodclone.errors import RulesError, UncoveredValue
from prodclone.masking.copytext import NULL, array_item, array_items, decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import Output


@register
class Elements(Transform):
    name = "elements"
    description = ("Mask every element of an array (of any type and dimensions) with `rule`; NULL elements, "
                   "dimensions and bounds stay. `rules check` holds the rule to the element type.")
    params = {
        "rule": {"$ref": "#/$defs/rule", "description": "The rule for each element, e.g. email."},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1,
                      "description": "What separates elements: ',' (default); ';' for box, whatever the type says "
                                     "(rules check compares it with the column's)."},
    }
    required = ("rule",)
    examples = ({"transform": "elements", "rule": "email"},
                {"transform": "elements", "rule": {"transform": "hash", "length": 24}, "unique": True},
                {"transform": "elements", "rule": "scrub"})
    categories = frozenset({"array"})
    may_equal_inputs = True  # an empty or all-NULL array comes out as it went in

    def setup(self) -> None:
        from prodclone.masking.rules import build_transform  # rules builds transforms; avoid a cycle

        rule = self.spec["rule"]
        spec = {"transform": rule} if isinstance(rule, str) else dict(rule)
        if self.unique:  # distinct arrays stay distinct if distinct elements do
            spec["unique"] = True
        self.element = build_transform(spec, self.ctx, where="element rule")
        if not self.element.masks or self.element.row_level:
            raise RulesError(f"element rule {self.element.name!r} cannot mask elements one by one: "
                             "use keep on the column itself, or a rule masking each value")
        if self.unique and not self.element.guarantees_unique:
            raise RulesError(f"unique: true needs an element rule that keeps elements distinct, which "
                             f"{self.element.name!r} cannot: use email, hash (length >= 20) or faker with unique: true")
        self.delimiter = self.spec.get("delimiter", ",")
        self.mask_nulls = spec.get("nulls") == "mask"
        self.unique_changes_output = self.element.unique_changes_output

    @property
    def guarantees_unique(self) -> bool:
        """Distinct arrays differ in shape or in an element; elements that stay distinct and never become
        NULL keep them distinct."""
        return self.element.guarantees_unique and self.element.null_output == "never"

    def output(self, lengths) -> Output:
        return Output()  # an array of the same shape; rules check holds each element to the element type

    @property
    def leak_checked(self) -> bool:
        return self.element.leak_checked

    def leak_values(self, field: bytes) -> Iterator[tuple[str, Transform, bytes]]:
        """Each element, as its rule sees it (and the parts of it that rule compares)."""
        for _start, _end, item in self._items(decode(field)):
            if item is not None:
                for where, rule, v in self.element.leak_values(encode(item)):
                    yield f"[*]{where and ' ' + where}", rule, v

    def __call__(self, value: bytes) -> bytes:
        text = decode(value)
        out, pos = [], 0
        for start, end, item in self._items(text):
            out += [text[pos:start], array_item(self._mask(item), self.delimiter)]
            pos = end
        out.append(text[pos:])
        return encode("".join(out))

    def _mask(self, item: str | None) -> str | None:
        """An element's masked text; None (NULL) stays NULL unless the element rule says nulls: mask."""
        if item is None and not self.mask_nulls:
            return None
        masked = self.element(encode(item or ""))
        return None if masked == NULL else decode(masked)

    def _items(self, text: str) -> list[tuple[int, int, str | None]]:
        try:
            return array_items(text, self.delimiter)
        except ValueError as exc:  # never the value: the rewriter names the column
            raise UncoveredValue(f"elements: cannot read the array ({exc}); is its delimiter "
                                 f"{self.delimiter!r}?") from None
