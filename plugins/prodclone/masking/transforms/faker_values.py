import hashlib
import re

from prodclone.errors import RulesError
from prodclone.masking.copytext import decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import TEXT, Output, of_values
from prodclone.masking.transforms.pools import text_pool, text_variants

_WORD = re.compile(r"[^\W\d_]+")


@register
class FakerTransform(Transform):
    name = "faker"
    description = (
        "A realistic value from any Faker provider (first_name, phone_number, address, company, paragraph, ...). "
        "A pool of Faker values gives the templates; their digits or longest word are re-drawn by the keyed hash, "
        "so the column keeps its number of distinct values. pool_only: emit the pool's values verbatim (at most "
        "pool_size distinct), for small lookup-like columns. fit_length: free text as long as the original, from the "
        "provider's words."
    )
    params = {
        "provider": {"type": "string", "description": "A Faker provider method, e.g. first_name."},
        "args": {"type": "object", "description": "Keyword arguments for the provider."},
        "locale": {"type": "string"},
        "pool_size": {"type": "integer", "minimum": 16, "maximum": 1000000},
        "pool_only": {"type": "boolean", "description": "Only the pool's Faker values, verbatim (at most pool_size "
                      "distinct): for lookup-like columns such as job titles."},
        "fit_length": {"type": "boolean", "description": "Free text as long as the original, in characters: "
                       "sentences of the provider's words drawn by the keyed hash, cut at the original's length "
                       "(so the column keeps its width; none of the original's words stay)."},
    }
    required = ("provider",)
    examples = ({"transform": "faker", "provider": "first_name"},
                {"transform": "faker", "provider": "user_name", "unique": True},
                {"transform": "faker", "provider": "phone_number", "locale": "fr_FR", "pool_size": 64},
                {"transform": "faker", "provider": "job", "pool_only": True},
                {"transform": "faker", "provider": "paragraph", "fit_length": True})
    unique_changes_output = True

    def setup(self) -> None:
        where = (self.spec["provider"], self.spec.get("args", {}), self.spec.get("locale", self.ctx.locale),
                 self.spec.get("pool_size", self.ctx.pool_size), self.subkey)
        self.pool = text_pool(*where)
        # fit_length draws from the pool's words alone: no variants to build (the vocabulary's Faker draws are slow)
        self.variants = None if self.spec.get("pool_only") or self.spec.get("fit_length") else text_variants(*where)
        self._members = None
        self.words = None
        if self.spec.get("fit_length"):
            if self.unique:
                raise RulesError("faker with fit_length keeps the original's length, which a uniqueness tag cannot: "
                                 "drop one of them")
            self.words = sorted({w.lower() for v in self.pool for w in _WORD.findall(decode(v))})
            if not self.words:
                raise RulesError(f"fit_length needs a provider that writes words; {self.spec['provider']!r} does not")

    def output(self, lengths) -> Output:
        if self.words:
            return Output(frozenset({TEXT}))  # as many characters as its input, as text
        values = self.variants.longest() if self.variants else map(decode, self.pool)
        return of_values(values, extra_length=21 if self.unique else 0)  # "-" and the tag

    def __call__(self, value: bytes) -> bytes:
        if self.words:
            return self._fitted(value)
        out = self.variants(self.subkey, value) if self.variants else self.pick(self.pool, value)
        if self.unique:  # the pool repeats; a keyed tag makes each distinct input distinct
            return out + b"-" + self.tag(value).encode()
        return out

    def _fitted(self, value: bytes) -> bytes:
        """Sentences of 4 to 12 words, each word drawn by the keyed hash (3 bytes a word, a byte a sentence
        length), as many characters as ``value`` has: the last word may be cut."""
        n = len(decode(value))
        draws = hashlib.shake_256(self.subkey + b"fit\0" + value).digest(2 * n + 40)
        out, i, length = [], 0, -1
        while length < n:
            if i + 37 > len(draws):  # a long text: more draws, chained from the last ones
                draws += hashlib.shake_256(self.subkey + b"fit\0" + draws[-32:]).digest(2 * n + 40)
            words = [self.words[int.from_bytes(draws[j:j + 3], "big") % len(self.words)]
                     for j in range(i + 1, i + 1 + 3 * (4 + draws[i] % 9), 3)]
            i += 1 + 3 * len(words)
            sentence = " ".join(words).capitalize() + "."
            out.append(sentence)
            length += len(sentence) + 1
        text = " ".join(out)[:n]
        return encode(text[:-1] + "." if text.endswith(" ") else text)

    def native(self) -> tuple | None:
        if self.words:  # the kernel capitalizes ASCII only; its input must be UTF-8 (else Python says why)
            plain = all(w.isascii() and w.isalpha() and w.islower() for w in self.words)
            return ("fit", self.subkey, tuple(w.encode() for w in self.words)) if plain else None
        if self.variants is None:
            return ("pick", self.subkey, self.unique, self.pool)
        frames = self.variants.native()
        return None if frames is None else ("variants", self.subkey, self.unique, frames)

    def could_emit(self, value: bytes) -> bool:
        if self.words:  # empty, or words of the provider's (the last maybe cut): what fitting could write
            tokens = [t.strip(".").lower() for t in decode(value).split(" ")]
            return all(t in self.words for t in tokens[:-1]) and any(w.startswith(tokens[-1]) for w in self.words)
        if self._members is None:
            self._members = frozenset(self.pool)
        return value in self._members
