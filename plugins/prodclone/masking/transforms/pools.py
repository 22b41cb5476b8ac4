"""Pools of Faker values, built once per (provider, arguments, locale, size,
key) and picked from by a keyed hash of the original value. Calling Faker per
row is ~70x slower and not deterministic; pools are both fast and stable.
Faker only promises the same seeded output within one version: it is pinned."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re

from faker import Faker
from faker.config import AVAILABLE_LOCALES

from prodclone.errors import RulesError
from prodclone.masking.copytext import decode, encode
from prodclone.masking.transforms.outputs import FLOATING, INTEGER_RANGES, TEXT, of_values


@functools.lru_cache(maxsize=8)
def _faker(locale: str) -> Faker:
    try:
        return Faker(locale)
    except AttributeError:
        raise RulesError(f"unknown Faker locale {locale!r}") from None


def check_provider(provider: str, locale: str) -> None:
    fake = _faker(locale)
    if provider.startswith("_") or not callable(getattr(fake, provider, None)):
        raise RulesError(f"unknown Faker provider {provider!r} (see https://faker.readthedocs.io/en/stable/providers.html)")


def _text(v) -> str:
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat(sep=" ") if isinstance(v, dt.datetime) else v.isoformat()
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


# What this process has built, by the arguments that built it. An export's coordinator builds every pool
# (the coverage check) and hands them to its workers (built() / install()), so no worker builds them again.
_POOLS: dict[tuple, tuple[bytes, ...]] = {}
_VARIANTS: dict[tuple, Variants] = {}
_MAX_BUILT = 256


def _memo(store: dict):
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args):
            if args not in store:
                if len(store) >= _MAX_BUILT:
                    store.clear()
                store[args] = fn(*args)
            return store[args]
        return run
    return wrap


def built() -> tuple[dict, dict]:
    """Every pool and variants object built here: for install() in another process."""
    return dict(_POOLS), dict(_VARIANTS)


def install(pools_and_variants: tuple[dict, dict]) -> None:
    _POOLS.update(pools_and_variants[0])
    _VARIANTS.update(pools_and_variants[1])


@_memo(_POOLS)
def pool(provider: str, args_json: str, locale: str, size: int, seed: int) -> tuple[bytes, ...]:
    check_provider(provider, locale)
    fake = Faker(locale)
    fake.seed_instance(seed)
    fn = getattr(fake, provider)
    args = json.loads(args_json)
    try:
        values = [_text(fn(**args)) for _ in range(size)]
    except TypeError as exc:
        raise RulesError(f"Faker provider {provider!r} rejected its args {args}: {exc}") from None
    return tuple(encode(v) for v in values)


def text_pool(provider: str, args: dict, locale: str, size: int, subkey: bytes) -> tuple[bytes, ...]:
    return pool(provider, json.dumps(args, sort_keys=True), locale, size, int.from_bytes(subkey[:8], "big"))


# Variants: a pool value as a template whose parts are re-drawn by the keyed hash, so a column keeps as
# many distinct values as it had (a pool alone caps it at pool_size: 300,000 phones became 1,024).
# A function of the value, so every frequency (most common values, null fraction) carries over too.
MIN_DIGITS = 4  # fewer re-keyed digits leave too small a space (10^3 x pool); splice a word instead
MIN_WORD = 4
VOCABULARY_DRAWS = 1024  # unweighted values per locale whose words feed the splices (once per rule)
_PART = re.compile(r"[0-9]+|[^\W\d_]+")
_VOWELS = frozenset("aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿ")
_IPV4 = re.compile(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}")
_FREE = frozenset({TEXT}) | FLOATING | frozenset(INTEGER_RANGES)  # types a value keeps when its digits change


_WORD = re.compile(r"[^\W\d_]{%d,}" % MIN_WORD)  # noqa: UP031 (a regex's braces)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _splits(word: str) -> list[tuple[bool, str, str]]:
    """(head ends in a vowel?, head, tail) at each vowel/consonant boundary that leaves both at least two
    letters: "Anderson" -> "And"|"erson", "Ande"|"rson", "Anders"|"on". A head joined to a tail from the
    same kind of boundary ("Ande" + "lla") reads like a word of the same language, never "Andsrker"."""
    w = word.lower()
    return [(w[i - 1] in _VOWELS, w[:i], w[i:]) for i in range(2, len(w) - 1)
            if (w[i - 1] in _VOWELS) != (w[i] in _VOWELS)]


class _Splices:
    """Every head joined to every tail of its kind, by the length of the word they replace, give or take one
    letter (so a column keeps its average width): ``pick(length, n)`` is the n-th word of that length's space."""

    def __init__(self, words):
        cut = {s for w in set(words) for s in _splits(w)}  # (a set: the draws repeat words)
        self.parts = [(_by_length(h for v, h, _ in cut if v == kind), _by_length(t for v, _, t in cut if v == kind))
                      for kind in (False, True)]
        self._spaces: dict[int, list[tuple[list[str], list[str]]]] = {}

    def space(self, length: int) -> list[tuple[list[str], list[str]]]:
        """(heads, tails) blocks whose joins have ``length`` letters, give or take one (or the nearest length
        that has any)."""
        if length not in self._spaces:  # one letter either way triples the space and keeps the average
            blocks = []
            for near in sorted(range(4, 4 * length), key=lambda n: abs(n - length)):
                blocks += [(heads[a], tails[n - a]) for n in (near - 1, near, near + 1)
                           for heads, tails in self.parts for a in heads if n - a in tails]
                if blocks:
                    break
            self._spaces[length] = blocks
        return self._spaces[length]

    def size(self, length: int) -> int:
        return sum(len(h) * len(t) for h, t in self.space(length))

    def longest(self, length: int) -> int:
        return max((len(h[0]) + len(t[0]) for h, t in self.space(length)), default=0)

    def pick(self, length: int, n: int) -> str:
        for heads, tails in self.space(length):
            if n < len(heads) * len(tails):
                return heads[n % len(heads)] + tails[n // len(heads)]
            n -= len(heads) * len(tails)
        raise IndexError(n)


def _cased(like: str, text: str) -> str:
    return text.upper() if like.isupper() and len(like) > 1 else text.capitalize() if like[:1].isupper() else text


def _case(like: str) -> str:
    return "upper" if like.isupper() and len(like) > 1 else "title" if like[:1].isupper() else "lower"


def _by_length(parts) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for p in sorted(set(parts)):
        out.setdefault(len(p), []).append(p)
    return out


class Variants:
    """Values shaped like a pool's: pick a template, then re-draw its digits (phone numbers, house
    numbers, postcodes) or, when it has fewer than MIN_DIGITS, splice its longest word from the head of
    one vocabulary word and the tail of another (names, cities, text). IPv4 templates keep their first
    octet and get three keyed ones. Typed values (dates, uuids) stay pool values. The output space is
    millions of values or more, so distinct inputs collide about as rarely as real ones do."""

    def __init__(self, pool: tuple[bytes, ...], vocabulary):
        texts = [decode(v) for v in pool]
        self.ipv4 = all(_IPV4.fullmatch(t) for t in texts)
        typed = any(of_values([t]).types - _FREE for t in texts)
        self.frames = [self._frame(t, typed) for t in texts]
        spliced = [f for f in self.frames if any(kind == "w" for kind, _ in f[1::2])]
        # Templates of one word (first or last names) draw their words from every locale of the language too.
        self.words = _Splices(vocabulary(sum(len(f) == 3 for f in spliced) > len(spliced) / 2) if spliced else ())

    def _frame(self, text: str, typed: bool) -> list:
        """[constant, (slot kind, what), constant, ...]: the slots a hash fills."""
        if self.ipv4:
            return [text.split(".", 1)[0] + ".", ("ip", 3), ""]
        if typed:
            return [text]
        parts = list(_PART.finditer(text))
        digits = [m for m in parts if m.group().isdigit()]
        if sum(len(m.group()) for m in digits) >= MIN_DIGITS:
            slots = [(m, ("d", m.group())) for m in digits]
        else:
            words = [m for m in parts if not m.group().isdigit() and len(m.group()) >= MIN_WORD]
            slots = [(max(words, key=lambda m: len(m.group())), ("w", None))] if words else []
            slots += [(m, ("d", m.group())) for m in digits]
            slots.sort(key=lambda s: s[0].start())
        frame, pos = [], 0
        for m, (kind, what) in slots:
            frame += [text[pos:m.start()], (kind, what if kind == "d" else m.group())]
            pos = m.end()
        return frame + [text[pos:]]

    def __call__(self, subkey: bytes, value: bytes) -> bytes:
        h = int.from_bytes(hashlib.blake2b(value, key=subkey, digest_size=64).digest(), "big")  # 512 bits to draw from
        frame = self.frames[h % len(self.frames)]
        h //= len(self.frames)
        out = [frame[0]]
        for (kind, what), text in zip(frame[1::2], frame[2::2], strict=True):
            if kind == "d":  # same length; a leading digit that was not 0 stays not 0
                n, low = len(what), 10 ** (len(what) - 1) if what[0] != "0" and len(what) > 1 else 0
                out.append(str(low + h % (10 ** n - low)).zfill(n))
                h //= 10 ** n
            elif kind == "ip":
                out.append(f"{h >> 16 & 255}.{h >> 8 & 255}.{h & 255}")
                h >>= 24
            else:
                size = self.words.size(len(what))
                out.append(_cased(what, self.words.pick(len(what), h % size)))
                h //= size
            out.append(text)
        return encode("".join(out))

    def native(self) -> tuple | None:
        """The frames as the kernel draws them (see _kernel.c, do_variants): (head, slots), each slot
        ("d", digits, low, span, 10**digits, after) | ("ip", after) | ("w", size, blocks, after), the text
        COPY-encoded and the words already cased. None if a slot needs more than 64-bit arithmetic."""
        if not hasattr(self, "_native"):
            self._native = self._compile()
        return self._native

    def _compile(self) -> tuple | None:
        frames = []
        for frame in self.frames:
            slots = []
            for (kind, what), text in zip(frame[1::2], frame[2::2], strict=True):
                after = encode(text)
                if kind == "d":
                    n, low = len(what), 10 ** (len(what) - 1) if what[0] != "0" and len(what) > 1 else 0
                    if 10 ** n >= 1 << 64:
                        return None
                    slots.append(("d", n, low, 10 ** n - low, 10 ** n, after))
                elif kind == "ip":
                    slots.append(("ip", after))
                else:
                    size = self.words.size(len(what))
                    if not size or size >= 1 << 64:
                        return None
                    slots.append(("w", size, self._cased_space(len(what), _case(what)), after))
            frames.append((encode(frame[0]), tuple(slots)))
        return tuple(frames)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cased"}  # keyed by id(): this process's only

    def _cased_space(self, length: int, case: str) -> tuple:
        """``words.space(length)`` cased as _cased would case a join: the head's first letter decides, so heads
        take the case and tails follow (lower, or upper). Each list of heads or tails is converted once."""
        if not hasattr(self, "_cased"):
            self._cased: dict[tuple, tuple[bytes, ...]] = {}
        head = {"upper": str.upper, "title": str.capitalize, "lower": str}[case]
        tail = str.upper if case == "upper" else str

        def cased(words: list[str], fn, role: str) -> tuple[bytes, ...]:
            ident = (id(words), role, case)
            if ident not in self._cased:  # words are letters only (_PART): nothing in them for COPY to escape
                self._cased[ident] = tuple(fn(w).encode() for w in words)
            return self._cased[ident]
        return tuple((cased(heads, head, "h"), cased(tails, tail, "t")) for heads, tails in self.words.space(length))

    def longest(self) -> list[str]:
        """Each template at its longest and with its digits at their largest: what output() declares."""
        return ["".join(p if isinstance(p, str) else "255.255.255" if p[0] == "ip" else "9" * len(p[1])
                        if p[0] == "d" else "x" * self.words.longest(len(p[1])) for p in f) for f in self.frames]


@_memo(_VARIANTS)
def variants(provider: str, args_json: str, locale: str, size: int, seed: int) -> Variants:
    def vocabulary(whole_language: bool) -> list[str]:
        words = [w for v in pooled for w in _words(decode(v))]
        for name in _language(locale) if whole_language else [locale]:
            fake = _unweighted(name)
            fake.seed_instance(seed + 1)  # a new random state: as a fresh instance would draw
            fn = getattr(fake, provider, None)
            if fn is not None:
                words += (w for _ in range(VOCABULARY_DRAWS) for w in _words(_text(fn(**args))))
        return words

    args = json.loads(args_json)
    pooled = pool(provider, args_json, locale, size, seed)
    return Variants(pooled, vocabulary)


@functools.lru_cache(maxsize=64)
def _unweighted(locale: str) -> Faker:
    """Unweighted: ~70x faster, and every word counts alike. Kept: building a Faker costs more than its draws."""
    return Faker(locale, use_weighting=False)


def _language(locale: str) -> list[str]:
    """Faker's locales of ``locale``'s language (en_US: en_GB, en_IN, en_NG, ...): ~5,000 English last names
    where en_US alone has ~1,000."""
    return sorted(name for name in AVAILABLE_LOCALES if name.split("_")[0] == locale.split("_")[0])


def text_variants(provider: str, args: dict, locale: str, size: int, subkey: bytes) -> Variants:
    return variants(provider, json.dumps(args, sort_keys=True), locale, size, int.from_bytes(subkey[:8], "big"))
