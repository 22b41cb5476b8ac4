"""What every transform is: a name, declared parameters (JSON Schema), the
column categories it accepts, and a function from a COPY field to a COPY field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from prodclone.masking import keys

REGISTRY: dict[str, type[Transform]] = {}

# Options every rule may carry, handled by the engine, not by transforms.
COMMON_PARAMS = {
    "transform": {"type": "string"},
    "unique": {"type": "boolean", "description": "Output must stay unique (required on UNIQUE/PK columns)."},
    "nulls": {"enum": ["keep", "mask"], "description": "keep (default): NULL stays NULL."},
}


def register(cls: type[Transform]) -> type[Transform]:
    REGISTRY[cls.name] = cls
    return cls


@dataclass
class Context:
    key: bytes
    locale: str = "en_US"
    pool_size: int = 1024


class Transform:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    params: ClassVar[dict] = {}  # JSON Schema properties of the transform's own parameters
    required: ClassVar[tuple[str, ...]] = ()
    categories: ClassVar[frozenset[str] | None] = None  # accepted column categories; None = any
    masks: ClassVar[bool] = True  # False only for keep
    can_be_unique: ClassVar[bool] = True
    row_level: ClassVar[bool] = False  # needs the other masked fields of the row (template)

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

    def pick(self, pool: list[bytes], value: bytes) -> bytes:
        return pool[keys.h64(self.subkey, value) % len(pool)]

    def tag(self, value: bytes) -> str:
        return keys.tag(self.subkey, value)

    def could_emit(self, value: bytes) -> bool:
        """True if ``value`` can be an output without coming from the input,
        e.g. it is in a Faker pool. The leak check ignores such coincidences."""
        return False

    @classmethod
    def schema(cls) -> dict:
        return {
            "type": "object",
            "description": cls.description,
            "properties": {**COMMON_PARAMS, "transform": {"const": cls.name}, **cls.params},
            "required": ["transform", *cls.required],
            "additionalProperties": False,
        }
