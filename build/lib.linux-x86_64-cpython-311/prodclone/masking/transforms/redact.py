from prodclone.masking.copytext import decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import TEXT, Output


@register
class Redact(Transform):
    name = "redact"
    description = "Partial redaction: keep the first/last N characters, replace the rest (e.g. card numbers)."
    params = {
        "keep_start": {"type": "integer", "minimum": 0},
        "keep_end": {"type": "integer", "minimum": 0},
        "char": {"type": "string", "minLength": 1, "maxLength": 1},
    }
    examples = ({"transform": "redact", "keep_end": 4}, {"transform": "redact", "keep_start": 1, "char": "#"})
    can_be_unique = False

    def setup(self) -> None:
        self.start = self.spec.get("keep_start", 0)
        self.end = self.spec.get("keep_end", 0)
        self.char = self.spec.get("char", "*")

    def __call__(self, value: bytes) -> bytes:
        s = decode(value)
        n = len(s)
        if n <= self.start + self.end:  # too short to keep anything safely
            return encode(self.char * n)
        tail = s[n - self.end :] if self.end else ""
        return encode(s[: self.start] + self.char * (n - self.start - self.end) + tail)

    def output(self, lengths) -> Output:
        return Output(frozenset({TEXT}))  # as many characters as its input, as text

    def could_emit(self, value: bytes) -> bool:
        """Only the redaction character (or nothing): what any short enough input becomes."""
        return not decode(value).strip(self.char)
