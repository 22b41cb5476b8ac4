import unicodedata

from prodclone.masking import keys
from prodclone.masking.copytext import decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import TEXT, Output
from prodclone.masking.transforms.pools import text_pool

# RFC 2606 reserved domains: a masked address can never reach a real inbox.
SAFE_DOMAINS = ["example.com", "example.net", "example.org"]


def _ascii_slug(b: bytes) -> str:
    s = unicodedata.normalize("NFKD", decode(b)).encode("ascii", "ignore").decode().lower()
    return "".join(ch for ch in s if ch.isalnum()) or "user"


@register
class Email(Transform):
    name = "email"
    description = (
        "A realistic first.last.<tag>@domain address on reserved example domains. Always unique: "
        "the keyed tag keeps distinct inputs distinct, so the same rule fits UNIQUE and non-unique columns and joins hold."
    )
    guarantees_unique = True
    params = {
        "domains": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "locale": {"type": "string"},
    }
    examples = ({"transform": "email"}, {"transform": "email", "domains": ["example.test"]})
    categories = frozenset({"text", "other"})

    def setup(self) -> None:
        locale = self.spec.get("locale", self.ctx.locale)
        firsts = text_pool("first_name", {}, locale, 1024, self.subkey)
        lasts = text_pool("last_name", {}, locale, 1024, self.subkey[::-1])
        self.firsts = [_ascii_slug(v) for v in firsts]
        self.lasts = [_ascii_slug(v) for v in lasts]
        self.domains = self.spec.get("domains", SAFE_DOMAINS)

    def output(self, lengths) -> Output:
        longest = max(map(len, self.firsts)) + max(map(len, self.lasts)) + max(map(len, self.domains))
        return Output(frozenset({TEXT}), longest + 23)  # two dots, the 20-character tag and "@"

    def native(self) -> tuple | None:
        if len(self.firsts) != 1024 or len(self.lasts) != 1024:  # __call__ indexes modulo 1024
            return None
        return ("email", self.subkey, (tuple(f.encode() for f in self.firsts), tuple(w.encode() for w in self.lasts),
                                       tuple(encode(d) for d in self.domains)))

    def __call__(self, value: bytes) -> bytes:
        h = keys.h64(self.subkey, value)
        local = f"{self.firsts[h % 1024]}.{self.lasts[(h >> 10) % 1024]}.{self.tag(value)}"
        return encode(f"{local}@{self.domains[(h >> 30) % len(self.domains)]}")  # COPY text, whatever the domains hold
