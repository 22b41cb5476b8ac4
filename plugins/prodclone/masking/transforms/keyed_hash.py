import hashlib
import uuid

from prodclone.errors import RulesError
from prodclone.masking.copytext import decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import TEXT, Output, integer_types


@register
class Hash(Transform):
    name = "hash"
    description = "Keyed hash (BLAKE2b) of the value: deterministic, irreversible without the key."
    params = {
        "length": {"type": "integer", "minimum": 8, "maximum": 64, "description": "Hex characters (default 24)."},
        "prefix": {"type": "string", "description": "Text put before the hash, e.g. 'cus_'."},
        "format": {"enum": ["hex", "uuid", "digits"], "description": "hex (default), uuid, or decimal digits."},
    }
    examples = ({"transform": "hash"}, {"transform": "hash", "length": 12, "prefix": "cus_"},
                {"transform": "hash", "format": "uuid", "unique": True}, {"transform": "hash", "format": "digits", "length": 9})

    def setup(self) -> None:
        self.length = self.spec.get("length", 24)
        self.prefix = encode(self.spec.get("prefix", ""))  # COPY text: a tab in it stays in its field
        self.format = self.spec.get("format", "hex")
        if self.unique and not self.guarantees_unique:
            raise RulesError("hash with unique: true needs length >= 20 (80 bits; format: digits, length >= 25) "
                             "or format: uuid to stay collision-free")

    @property
    def guarantees_unique(self) -> bool:
        """At least 80 bits: 20 hex characters, 25 decimal digits, or a UUID's 122."""
        return self.format == "uuid" or self.length >= (25 if self.format == "digits" else 20)

    def output(self, lengths) -> Output:
        if self.format == "uuid":
            return Output(frozenset({TEXT, "uuid"}), 36)
        size = len(decode(self.prefix)) + self.length
        if self.format == "digits" and not self.prefix:
            return Output(frozenset({TEXT}) | integer_types(10**self.length - 1), size)
        return Output(frozenset({TEXT}), size)

    def native(self) -> tuple:
        return ("hash", self.subkey, ("hex", "digits", "uuid").index(self.format), self.length, self.prefix)

    def __call__(self, value: bytes) -> bytes:
        d = hashlib.blake2b(value, key=self.subkey, digest_size=32).digest()
        if self.format == "uuid":
            return str(uuid.UUID(bytes=d[:16], version=4)).encode()
        if self.format == "digits":
            return self.prefix + str(int.from_bytes(d, "big")).encode()[: self.length]
        return self.prefix + d.hex().encode()[: self.length]
