"""What every transform is: a name, declared parameters (JSON Schema), its traits
(what it accepts, what it emits, how it behaves), and a function from a COPY field
to a COPY field. Everything that treats transforms differently reads their traits,
never their names, so a new transform is one module; tests/unit/test_traits.py
holds every registered transform to what it declares."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from prodclone.masking import keys
from prodclone.masking.transforms.outputs import ANY_TEXT, Output

REGISTRY: dict[str, type[Transform]] = {}

HANDS_BACK = ("json", "card", "fit")  # native kinds the kernel builds with the transform, for the values it leaves

# Options every rule may carry, handled by the engine, not by transforms.
COMMON_PARAMS = {
    "transform": {"type": "string"},
    "unique": {"type": "boolean", "description": "Output must stay unique (required on UNIQUE/PK columns)."},
    "nulls": {"enum": ["keep", "mask"], "description": "keep (default): NULL stays NULL."},
}


def register(cls: type[Transform]) -> type[Transform]:
    """Add ``cls`` under its name; a second transform of the same name is an error, not a silent replacement."""
    if cls.name in REGISTRY:
        raise TypeError(f"transform {cls.name!r} is registered twice ({REGISTRY[cls.name].__module__} and "
                        f"{cls.__module__}); give one of them another name")
    REGISTRY[cls.name] = cls
    return cls


def trait(spec, name: str):
    """A trait of a rule's transform (``spec``: a dict with ``transform``), without building it;
    None if there is no rule or its transform is unknown."""
    cls = REGISTRY.get(spec.get("transform")) if isinstance(spec, dict) else None
    return getattr(cls, name) if cls is not None else None


@dataclass
class Context:
    """What a transform is built with; the engine makes it from a bound Masking (rules.Masking.context)."""

    key: bytes = field(repr=False)
    locale: str = "en_US"
    pool_size: int = 1024


class Transform:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    params: ClassVar[dict] = {}  # JSON Schema properties of the transform's own parameters
    required: ClassVar[tuple[str, ...]] = ()
    examples: ClassVar[tuple[dict, ...]] = ()  # rules using it (in the JSON Schema; every one is tested)

    # Traits. Read by coverage, the leak check, export, subset and scaffold; never test a transform's name.
    categories: ClassVar[frozenset[str] | None] = None  # accepted column categories; None = any
    masks: ClassVar[bool] = True  # False only for keep: the output is the input
    can_be_unique: ClassVar[bool] = True  # `unique: true` (or its parameters) can make distinct inputs give distinct outputs
    unique_changes_output: ClassVar[bool] = False  # `unique: true` changes what it emits (appends a tag)
    null_output: ClassVar[str] = "never"  # never | always: whether it emits NULL for a value
    # Its outputs are ordinary values of the input's kind and may equal an original (its own, or another row's,
    # like a noised number or a shifted date): the leak check cannot tell that from a leak. If False, an output
    # never equals its own input unless ``could_emit`` says any input could give it.
    may_equal_inputs: ClassVar[bool] = False
    row_level: ClassVar[bool] = False  # needs the other masked fields of the row (template)
    embeds: ClassVar[bool] = False  # masks identifiers inside free text: the leak check searches for them inside outputs

    def __init__(self, spec: dict, ctx: Context):
        self.spec = spec
        self.ctx = ctx
        self.unique = bool(spec.get("unique"))
        own = {k: v for k, v in spec.items() if k not in ("nulls", "unique")}
        # Equal specs give equal sub-keys: that is what keeps joins on masked columns.
        self.subkey = keys.derive(ctx.key, json.dumps(own, sort_keys=True, default=str))
        self.setup()

    @property
    def guarantees_unique(self) -> bool:
        """Distinct inputs always give distinct outputs."""
        return self.unique and self.can_be_unique

    def setup(self) -> None:
        """Validate parameters that JSON Schema cannot, build pools."""

    def __call__(self, value: bytes) -> bytes:
        raise NotImplementedError

    def native(self) -> tuple | None:
        """How the compiled kernel computes this transform: (kind, sub-key or value, ...) as kernel.py and
        _kernel.c agree; None (the default) if it cannot, and then the kernel calls back into Python. A kind in
        HANDS_BACK computes only some values and hands the others back to the transform itself."""
        return None

    def pick(self, pool: list[bytes], value: bytes) -> bytes:
        return pool[keys.h64(self.subkey, value) % len(pool)]

    def tag(self, value: bytes) -> str:
        return keys.tag(self.subkey, value)

    def could_emit(self, value: bytes) -> bool:
        """True if ``value`` can be an output without coming from the input,
        e.g. it is in a Faker pool. The leak check ignores such coincidences."""
        return False

    def output(self, lengths: Mapping[str, float]) -> Output:
        """What it emits, for `rules check` to hold against the column's type and length. Unless a
        transform declares better: any text, of any length. ``lengths``: the longest masked value of
        each column of the row, for row-level transforms (templates)."""
        return ANY_TEXT

    @property
    def leak_checked(self) -> bool:
        """Does the leak check compare this column's output with sampled originals?"""
        return self.masks and not self.may_equal_inputs and self.null_output != "always"

    def leak_values(self, field: bytes) -> Iterator[tuple[str, Transform, bytes]]:
        """What the leak check compares in a COPY field (an original, or the masked output):
        (where in the field, the rule masking it, the value). Here the whole field; a transform
        masking parts of a value (json paths) yields each part it masks."""
        yield "", self, field

    def embedded(self, value: bytes) -> list[bytes]:
        """What the leak check looks for in outputs, of an original ``value`` it compares: the value itself;
        for a transform that ``embeds``, the identifiers it finds inside it."""
        return [value]

    @classmethod
    def schema(cls) -> dict:
        return {
            "type": "object",
            "description": cls.description,
            "properties": {**COMMON_PARAMS, "transform": {"const": cls.name}, **cls.params},
            "required": ["transform", *cls.required],
            **({"examples": list(cls.examples)} if cls.examples else {}),
            "additionalProperties": False,
        }
