/* The masking kernel: COPY text in, masked COPY text out, with no Python call per row.
 *
 * A Masker holds a table's compiled rules (see kernel.py): per column, keep, a native transform
 * (keyed hash, pool pick, variants, email, constant), or a Python callable for the transforms
 * the kernel does not handle. It frames rows and fields itself, passes untouched fields through,
 * and releases the GIL except while it calls back into Python. The Python rewriter
 * (rewriter.TableMasker.mask_line) is the reference: the output is byte-identical to it.
 *
 * BLAKE2b is written from RFC 7693 (key, digest size, personalisation); tests compare it with
 * hashlib. The state after the key block is computed once per column, so a value costs one
 * compression when it fits one block.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;

/* ---------------- BLAKE2b (RFC 7693) ---------------- */

static const uint64_t B2_IV[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL, 0xA54FF53A5F1D36F1ULL,
    0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL, 0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL};

static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

#define B2_G(a, b, c, d, x, y)         \
    do {                               \
        v[a] = v[a] + v[b] + (x);      \
        v[d] = rotr64(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];            \
        v[b] = rotr64(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + (y);      \
        v[d] = rotr64(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];            \
        v[b] = rotr64(v[b] ^ v[c], 63); \
    } while (0)

static void b2_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = B2_IV[i];
    }
    v[12] ^= t; /* messages here are far below 2^64 bytes: the high counter word stays 0 */
    if (last) v[14] = ~v[14];
    for (int i = 0; i < 16; i++) m[i] = load64(block + 8 * i);
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = B2_SIGMA[r];
        B2_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* A keyed BLAKE2b with its parameters fixed: h0 (parameter block folded in), the padded key
 * block, and h1, the state after compressing the key block as a non-final block. */
typedef struct {
    uint64_t h0[8], h1[8];
    uint8_t keyblock[128];
    int outlen, keyed;
} B2Key;

static void b2_setup(B2Key *k, int outlen, const uint8_t *key, size_t keylen, const uint8_t *person, size_t plen) {
    uint8_t param[64];
    memset(param, 0, sizeof param);
    param[0] = (uint8_t)outlen;
    param[1] = (uint8_t)keylen;
    param[2] = 1; /* fanout */
    param[3] = 1; /* depth */
    if (plen) memcpy(param + 48, person, plen);
    for (int i = 0; i < 8; i++) k->h0[i] = B2_IV[i] ^ load64(param + 8 * i);
    k->outlen = outlen;
    k->keyed = keylen > 0;
    memset(k->keyblock, 0, 128);
    if (keylen) memcpy(k->keyblock, key, keylen);
    memcpy(k->h1, k->h0, sizeof k->h1);
    if (keylen) b2_compress(k->h1, k->keyblock, 128, 0);
}

static void b2_hash(const B2Key *k, const uint8_t *msg, size_t len, uint8_t *out) {
    uint64_t h[8];
    uint8_t block[128];
    uint64_t t = 0;
    if (k->keyed && len == 0) { /* the key block is the only, and so the last, block */
        memcpy(h, k->h0, sizeof h);
        b2_compress(h, k->keyblock, 128, 1);
    } else {
        if (k->keyed) {
            memcpy(h, k->h1, sizeof h);
            t = 128;
        } else {
            memcpy(h, k->h0, sizeof h);
        }
        while (len > 128) {
            t += 128;
            b2_compress(h, msg, t, 0);
            msg += 128;
            len -= 128;
        }
        memset(block, 0, 128);
        memcpy(block, msg, len);
        t += len;
        b2_compress(h, block, t, 1);
    }
    for (int i = 0; i < k->outlen; i++) out[i] = (uint8_t)(h[i >> 3] >> (8 * (i & 7)));
}

/* ---------------- SHAKE256 (FIPS 202), for card_number's digit stream ---------------- */

static const uint64_t KECCAK_RC[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL};
static const int KECCAK_ROT[25] = {0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14};

static inline uint64_t rotl64(uint64_t x, int n) { return n ? (x << n) | (x >> (64 - n)) : x; }

static void keccak_f(uint64_t a[25]) { /* lanes a[x + 5y] */
    for (int r = 0; r < 24; r++) {
        uint64_t c[5], d, b[25];
        for (int x = 0; x < 5; x++) c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
        for (int x = 0; x < 5; x++) {
            d = c[(x + 4) % 5] ^ rotl64(c[(x + 1) % 5], 1);
            for (int y = 0; y < 25; y += 5) a[x + y] ^= d;
        }
        for (int x = 0; x < 5; x++) /* rho and pi: B[y, 2x + 3y] = rot(A[x, y]) */
            for (int y = 0; y < 5; y++) b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl64(a[x + 5 * y], KECCAK_ROT[x + 5 * y]);
        for (int y = 0; y < 25; y += 5)
            for (int x = 0; x < 5; x++) a[x + y] = b[x + y] ^ (~b[(x + 1) % 5 + y] & b[(x + 2) % 5 + y]);
        a[0] ^= KECCAK_RC[r];
    }
}

#define SHAKE256_RATE 136

/* The first outlen bytes of SHAKE256(a || b || c). */
static void shake256(const uint8_t *parts[3], const size_t lens[3], uint8_t *out, size_t outlen) {
    uint64_t st[25] = {0};
    uint8_t block[SHAKE256_RATE];
    size_t fill = 0;
    for (int p = 0; p < 3; p++) {
        const uint8_t *m = parts[p];
        size_t n = lens[p];
        while (n) {
            size_t take = SHAKE256_RATE - fill < n ? SHAKE256_RATE - fill : n;
            memcpy(block + fill, m, take);
            fill += take;
            m += take;
            n -= take;
            if (fill == SHAKE256_RATE) {
                for (int i = 0; i < SHAKE256_RATE / 8; i++) st[i] ^= load64(block + 8 * i);
                keccak_f(st);
                fill = 0;
            }
        }
    }
    memset(block + fill, 0, SHAKE256_RATE - fill);
    block[fill] ^= 0x1f;
    block[SHAKE256_RATE - 1] ^= 0x80;
    for (int i = 0; i < SHAKE256_RATE / 8; i++) st[i] ^= load64(block + 8 * i);
    for (;;) {
        keccak_f(st);
        size_t n = outlen < SHAKE256_RATE ? outlen : SHAKE256_RATE;
        for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(st[i >> 3] >> (8 * (i & 7)));
        out += n;
        outlen -= n;
        if (!outlen) return;
    }
}

/* ---------------- output buffer ---------------- */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->n + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *s, size_t len) {
    if (buf_reserve(b, len)) return -1;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    return 0;
}

static const char HEX[] = "0123456789abcdef";

/* ---------------- 512-bit numbers (Python's int.from_bytes(digest, "big")) ---------------- */

typedef struct {
    uint64_t w[8]; /* w[0] least significant */
    int n;         /* limbs in use */
} Big;

static void big_from(Big *b, const uint8_t *d, int len) {
    memset(b, 0, sizeof *b);
    for (int i = 0; i < len; i++) {
        int pos = len - 1 - i; /* byte i of a big-endian number has weight 256^pos */
        b->w[pos >> 3] |= (uint64_t)d[i] << (8 * (pos & 7));
    }
    b->n = (len + 7) / 8;
    while (b->n && !b->w[b->n - 1]) b->n--;
}

/* (hi:lo) / d with hi < d: one hardware 128-by-64 division where there is one. */
static inline uint64_t div128(uint64_t hi, uint64_t lo, uint64_t d, uint64_t *rem) {
#if defined(__x86_64__) && defined(__GNUC__)
    uint64_t q, r;
    __asm__("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(d));
    *rem = r;
    return q;
#else
    u128 cur = ((u128)hi << 64) | lo;
    *rem = (uint64_t)(cur % d);
    return (uint64_t)(cur / d);
#endif
}

static uint64_t big_divmod(Big *b, uint64_t d) { /* b //= d; returns b % d */
    uint64_t rem = 0;
    for (int i = b->n - 1; i >= 0; i--) b->w[i] = div128(rem, b->w[i], d, &rem);
    while (b->n && !b->w[b->n - 1]) b->n--;
    return rem;
}

static uint64_t big_mod(const Big *b, uint64_t d) { /* b % d, b unchanged */
    uint64_t rem = 0;
    for (int i = b->n - 1; i >= 0; i--) div128(rem, b->w[i], d, &rem);
    return rem;
}

static void big_shr(Big *b, int bits) { /* bits < 64 */
    for (int i = 0; i < b->n; i++) b->w[i] = (b->w[i] >> bits) | (i + 1 < b->n ? b->w[i + 1] << (64 - bits) : 0);
    while (b->n && !b->w[b->n - 1]) b->n--;
}

static int put_decimal(Buf *b, uint64_t v, int width) { /* str(v).zfill(width) */
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width) tmp[n++] = '0';
    if (buf_reserve(b, n)) return -1;
    while (n) b->p[b->n++] = tmp[--n];
    return 0;
}

/* ---------------- columns ---------------- */

enum { K_KEEP, K_CALL, K_CONST, K_HASH, K_PICK, K_VARIANTS, K_EMAIL, K_JSON, K_CARD, K_FIT };
enum { F_HEX, F_DIGITS, F_UUID };
enum { S_DIGITS, S_IP, S_WORD };

typedef struct {
    int kind;            /* S_* */
    int width;           /* S_DIGITS: how many */
    uint64_t low, span, pow; /* S_DIGITS: low + h % span, then h //= pow (10**width) */
    uint64_t size;       /* S_WORD: the space's size */
    PyObject *blocks;    /* S_WORD: tuple of (heads, tails), tuples of bytes already cased and encoded */
    PyObject *after;     /* bytes after the slot */
} Slot;

typedef struct {
    PyObject *head; /* bytes before the first slot */
    int nslots;
    Slot *slots;
} Frame;

typedef struct Col {
    int kind;
    int mask_nulls, unique;
    PyObject *fn;    /* K_CALL */
    PyObject *data;  /* K_CONST: bytes; K_HASH: prefix; K_PICK: pool tuple; K_EMAIL: (firsts, lasts, domains);
                        K_FIT: the words */
    PyObject *key;   /* K_CARD, K_FIT: the sub-key */
    int fmt, length; /* K_HASH */
    B2Key h64, tag, wide; /* wide: 32 bytes (hash) or 64 (variants) */
    int nframes;
    Frame *frames;
    struct JTree *tree; /* K_JSON; fn is then the Python transform, for documents the kernel leaves to it
                           (K_CARD, K_FIT: for the values they leave) */
} Col;

/* json paths: the rules' paths as a trie. A node is a path; its rule, and its children by key and [*]. */
enum { R_NONE, R_KEEP, R_MASK, R_PYTHON };
enum { U_FAIL, U_KEEP, U_NULL, U_DROP };

typedef struct {
    int rule;        /* R_* */
    int null_always; /* R_MASK: the rule always emits NULL (so it may null a whole object or array) */
    int prefix;      /* some listed path goes through here */
    int item;        /* child for [*], -1 if none */
    int nkids;
    PyObject *keys;  /* tuple of bytes, UTF-8 */
    int *kids;
    struct Col *leaf; /* R_MASK */
} JNode;

typedef struct JTree {
    int nnodes, unlisted;
    JNode *nodes;
} JTree;

typedef struct {
    PyObject_HEAD
    int ncols;
    Col *cols;
    int last_masked; /* highest column index with a transform, -1 if none */
    int has_call;
    PyObject *row_hook;
    PyObject *spec_ref; /* the compiled rules, kept alive: columns point into them */
} Masker;

typedef struct { /* where the current row's fields are: per call, so threads may share a Masker */
    Py_ssize_t *starts, *lens;
    Py_ssize_t cap;
} Fields;

static uint64_t h64_of(const B2Key *k, const char *v, size_t len) {
    uint8_t d[8];
    b2_hash(k, (const uint8_t *)v, len, d);
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = (x << 8) | d[i];
    return x;
}

static int put_tag(Buf *out, const B2Key *k, const char *v, size_t len) {
    uint8_t d[10];
    b2_hash(k, (const uint8_t *)v, len, d);
    if (buf_reserve(out, 20)) return -1;
    for (int i = 0; i < 10; i++) {
        out->p[out->n++] = HEX[d[i] >> 4];
        out->p[out->n++] = HEX[d[i] & 15];
    }
    return 0;
}

static inline int put_bytes(Buf *out, PyObject *b) { return buf_put(out, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)); }

static int do_hash(Col *c, const char *v, size_t len, Buf *out) {
    uint8_t d[32];
    b2_hash(&c->wide, (const uint8_t *)v, len, d);
    if (put_bytes(out, c->data)) return -1;
    if (c->fmt == F_UUID) {
        char s[36];
        int j = 0;
        d[6] = (d[6] & 0x0f) | 0x40;
        d[8] = (d[8] & 0x3f) | 0x80;
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10) s[j++] = '-';
            s[j++] = HEX[d[i] >> 4];
            s[j++] = HEX[d[i] & 15];
        }
        return buf_put(out, s, 36);
    }
    if (c->fmt == F_DIGITS) {
        char s[100], rev[100]; /* 2**256 has 78 digits; they come 19 at a time, so up to 95 */
        int n = 0;
        Big b;
        big_from(&b, d, 32);
        do { /* 19 decimal digits at a time */
            uint64_t r = big_divmod(&b, 10000000000000000000ULL);
            for (int i = 0; i < 19; i++) {
                rev[n++] = (char)('0' + r % 10);
                r /= 10;
            }
        } while (b.n);
        while (n > 1 && rev[n - 1] == '0') n--;
        for (int i = 0; i < n; i++) s[i] = rev[n - 1 - i];
        return buf_put(out, s, n < c->length ? n : c->length);
    }
    char s[64];
    for (int i = 0; i < 32; i++) {
        s[2 * i] = HEX[d[i] >> 4];
        s[2 * i + 1] = HEX[d[i] & 15];
    }
    return buf_put(out, s, c->length < 64 ? c->length : 64);
}

static int do_variants(Col *c, const char *v, size_t len, Buf *out) {
    uint8_t d[64];
    Big h;
    b2_hash(&c->wide, (const uint8_t *)v, len, d);
    big_from(&h, d, 64);
    Frame *f = &c->frames[big_divmod(&h, (uint64_t)c->nframes)];
    if (put_bytes(out, f->head)) return -1;
    for (int i = 0; i < f->nslots; i++) {
        Slot *s = &f->slots[i];
        if (s->kind == S_DIGITS) {
            uint64_t r = big_mod(&h, s->span); /* the value: h % (10**n - low) ... */
            if (put_decimal(out, s->low + r, s->width)) return -1;
            big_divmod(&h, s->pow); /* ... then h //= 10**n */
        } else if (s->kind == S_IP) {
            uint64_t x = h.n ? h.w[0] : 0;
            char ip[16];
            int n = snprintf(ip, sizeof ip, "%u.%u.%u", (unsigned)(x >> 16 & 255), (unsigned)(x >> 8 & 255),
                             (unsigned)(x & 255));
            if (buf_put(out, ip, n)) return -1;
            big_shr(&h, 24);
        } else {
            uint64_t r = big_divmod(&h, s->size);
            Py_ssize_t nb = PyTuple_GET_SIZE(s->blocks);
            for (Py_ssize_t j = 0; j < nb; j++) {
                PyObject *blk = PyTuple_GET_ITEM(s->blocks, j);
                PyObject *heads = PyTuple_GET_ITEM(blk, 0), *tails = PyTuple_GET_ITEM(blk, 1);
                uint64_t nh = (uint64_t)PyTuple_GET_SIZE(heads), nt = (uint64_t)PyTuple_GET_SIZE(tails);
                if (r < nh * nt) {
                    if (put_bytes(out, PyTuple_GET_ITEM(heads, r % nh))) return -1;
                    if (put_bytes(out, PyTuple_GET_ITEM(tails, r / nh))) return -1;
                    break;
                }
                r -= nh * nt;
            }
        }
        if (put_bytes(out, s->after)) return -1;
    }
    return 0;
}

static int do_pick(Col *c, const char *v, size_t len, Buf *out) {
    PyObject *pool = c->data;
    uint64_t h = h64_of(&c->h64, v, len);
    return put_bytes(out, PyTuple_GET_ITEM(pool, h % (uint64_t)PyTuple_GET_SIZE(pool)));
}

static int do_email(Col *c, const char *v, size_t len, Buf *out) {
    PyObject *firsts = PyTuple_GET_ITEM(c->data, 0), *lasts = PyTuple_GET_ITEM(c->data, 1),
             *domains = PyTuple_GET_ITEM(c->data, 2);
    uint64_t h = h64_of(&c->h64, v, len);
    if (put_bytes(out, PyTuple_GET_ITEM(firsts, h % (uint64_t)PyTuple_GET_SIZE(firsts)))) return -1;
    if (buf_put(out, ".", 1)) return -1;
    if (put_bytes(out, PyTuple_GET_ITEM(lasts, (h >> 10) % (uint64_t)PyTuple_GET_SIZE(lasts)))) return -1;
    if (buf_put(out, ".", 1)) return -1;
    if (put_tag(out, &c->tag, v, len)) return -1;
    if (buf_put(out, "@", 1)) return -1;
    return put_bytes(out, PyTuple_GET_ITEM(domains, (h >> 30) % (uint64_t)PyTuple_GET_SIZE(domains)));
}

/* card.py, CardNumber._number for a value of 12-19 ASCII digits, alone or grouped by single spaces or hyphens
 * (regroup keeps the separators): the first digit kept, the middle ones moved by the keyed stream, a Luhn
 * check digit last. HAND_BACK: anything else (escapes, letters, other lengths) goes to the Python transform. */
#define HAND_BACK 1

static int do_card(Col *c, const char *v, size_t len, Buf *out) {
    uint8_t digits[19], stream[19];
    size_t nd = 0;
    if (!len || v[0] < '0' || v[0] > '9' || v[len - 1] < '0' || v[len - 1] > '9') return HAND_BACK;
    for (size_t i = 0; i < len; i++) {
        char ch = v[i];
        if (ch >= '0' && ch <= '9') {
            if (nd == 19) return HAND_BACK;
            digits[nd++] = (uint8_t)(ch - '0');
        } else if (ch != ' ' && ch != '-') {
            return HAND_BACK;
        } else if (v[i + 1] < '0' || v[i + 1] > '9') { /* a separator stands between digits (the last is one) */
            return HAND_BACK;
        }
    }
    if (nd < 12) return HAND_BACK;
    char text[19];
    for (size_t i = 0; i < nd; i++) text[i] = (char)('0' + digits[i]);
    const uint8_t *parts[3] = {(const uint8_t *)PyBytes_AS_STRING(c->key), (const uint8_t *)"card", (const uint8_t *)text};
    const size_t lens[3] = {(size_t)PyBytes_GET_SIZE(c->key), 5, nd}; /* "card\0" */
    shake256(parts, lens, stream, nd - 2);
    for (size_t i = 1; i + 1 < nd; i++) digits[i] = (uint8_t)((digits[i] + 1 + stream[i - 1] % 9) % 10);
    int sum = 0; /* Luhn over digits[0:nd-1]: from its last digit leftwards, every other one doubled */
    for (size_t k = 0; k + 1 < nd; k++) {
        int d = digits[nd - 2 - k];
        sum += k % 2 ? d : (d > 4 ? 2 * d - 9 : 2 * d);
    }
    digits[nd - 1] = (uint8_t)((10 - sum % 10) % 10);
    if (buf_reserve(out, len)) return -1;
    for (size_t i = 0, j = 0; i < len; i++) out->p[out->n++] = v[i] >= '0' && v[i] <= '9' ? (char)('0' + digits[j++]) : v[i];
    return 0;
}

/* ---------------- rows ---------------- */

/* ts == NULL: this thread holds the GIL. Functions below may drop it while they work and take it
 * back to call Python; they return -1 with the GIL held and an exception set. */
#define GIL_ON(ts)                       \
    do {                                 \
        if (*(ts)) {                     \
            PyEval_RestoreThread(*(ts)); \
            *(ts) = NULL;                \
        }                                \
    } while (0)
#define GIL_OFF(ts, allowed)                          \
    do {                                              \
        if ((allowed) && !*(ts)) *(ts) = PyEval_SaveThread(); \
    } while (0)

static int no_memory(PyThreadState **ts) {
    GIL_ON(ts);
    PyErr_NoMemory();
    return -1;
}

static int call_python(Col *c, const char *v, size_t len, Buf *out, PyThreadState **ts, int release) {
    GIL_ON(ts);
    PyObject *arg = PyBytes_FromStringAndSize(v, (Py_ssize_t)len);
    if (!arg) return -1;
    PyObject *res = PyObject_CallOneArg(c->fn, arg);
    Py_DECREF(arg);
    if (!res) return -1;
    if (!PyBytes_Check(res)) {
        PyErr_Format(PyExc_TypeError, "a transform returned %.100s, not bytes", Py_TYPE(res)->tp_name);
        Py_DECREF(res);
        return -1;
    }
    int rc = put_bytes(out, res);
    Py_DECREF(res);
    if (rc) return no_memory(ts);
    GIL_OFF(ts, release);
    return 0;
}

/* ---------------- json paths (json_paths.py, JsonPaths._edits, for the documents it reads plainly) ----------------
 * The kernel takes documents with no backslash (no COPY or JSON escapes), no control character, valid UTF-8,
 * in strict JSON grammar, whose every value has a rule it can run (or a keep/null unlisted policy). Anything
 * else — an error to report, a dropped key, an escape — goes to the Python transform, which is the reference. */

#define JSON_BAIL 1

static int apply_native(Col *c, const char *v, size_t len, Buf *out);

static int utf8_valid(const unsigned char *s, size_t n, int any_ascii) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (!any_ascii && (c < 0x20 || c == '\\')) return 0; /* control characters and escapes: the Python path's */
            i++;
            continue;
        }
        int len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else return 0;
        if (i + len > n) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (int k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += len;
    }
    return 1;
}

static int utf8_ok(const unsigned char *s, size_t n) { return utf8_valid(s, n, 0); }

static inline int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* len(copytext.decode(v)) for valid UTF-8 v: an escape is one character. */
static size_t copy_chars(const char *v, size_t len) {
    size_t n = 0, i = 0;
    while (i < len) {
        if (v[i] == '\\' && i + 1 < len) {
            char e = v[i + 1];
            i += 2;
            if (e == 'x' && i < len && is_hex(v[i])) {
                i += 1 + (i + 1 < len && is_hex(v[i + 1]));
            } else if (e >= '0' && e <= '7') {
                for (int k = 0; k < 2 && i < len && v[i] >= '0' && v[i] <= '7'; k++) i++;
            } else {
                while (i < len && ((unsigned char)v[i] & 0xC0) == 0x80) i++; /* the rest of the escaped character */
            }
        } else {
            i++;
            while (i < len && ((unsigned char)v[i] & 0xC0) == 0x80) i++;
        }
        n++;
    }
    return n;
}

/* faker_values.py, FakerTransform._fitted, with words of ASCII lower-case letters (kernel.py checks): sentences
 * of keyed words, cut at the value's length in characters. HAND_BACK: text that is not UTF-8 (Python's error). */
static int do_fit(Col *c, const char *v, size_t len, Buf *out) {
    if (!utf8_valid((const unsigned char *)v, len, 1)) return HAND_BACK;
    size_t n = copy_chars(v, len), chunk = 2 * n + 40, have = chunk, i = 0, start = out->n;
    uint8_t *d = malloc(chunk);
    if (!d) return -1;
    const uint8_t *parts[3] = {(const uint8_t *)PyBytes_AS_STRING(c->key), (const uint8_t *)"fit", (const uint8_t *)v};
    size_t lens[3] = {(size_t)PyBytes_GET_SIZE(c->key), 4, len}; /* "fit\0" */
    shake256(parts, lens, d, chunk);
    uint32_t nw = (uint32_t)PyTuple_GET_SIZE(c->data);
    size_t length = 0; /* of the text so far, with the space after it: Python's length + 1 */
    while (length < n + 1) {
        if (i + 37 > have) { /* a long text: more draws, chained from the last ones */
            uint8_t *more = realloc(d, have + chunk);
            if (!more) goto nomem;
            d = more;
            parts[2] = d + have - 32;
            lens[2] = 32;
            shake256(parts, lens, d + have, chunk);
            have += chunk;
        }
        int words = 4 + d[i] % 9;
        size_t first = out->n;
        for (int k = 0; k < words; k++) {
            const uint8_t *x = d + i + 1 + 3 * k;
            PyObject *w = PyTuple_GET_ITEM(c->data, (((uint32_t)x[0] << 16) | ((uint32_t)x[1] << 8) | x[2]) % nw);
            if ((k && buf_put(out, " ", 1)) || put_bytes(out, w)) goto nomem;
        }
        if (buf_put(out, ". ", 2)) goto nomem;
        out->p[first] = (char)(out->p[first] - 'a' + 'A'); /* capitalize(): the words are lower case already */
        length += out->n - first;
        i += 1 + 3 * (size_t)words;
    }
    free(d);
    out->n = start + n; /* ASCII: characters are bytes */
    if (n && out->p[out->n - 1] == ' ') out->p[out->n - 1] = '.';
    return 0;
nomem:
    free(d);
    return -1;
}

/* The length of the JSON scalar at s (number, true, false, null) as json_paths' regex matches it; 0 if none. */
static size_t scalar_len(const char *s, size_t n) {
    size_t i = 0;
    if (n >= 4 && (!memcmp(s, "true", 4) || !memcmp(s, "null", 4))) return 4;
    if (n >= 5 && !memcmp(s, "false", 5)) return 5;
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    } else return 0;
    if (i + 1 < n && s[i] == '.' && s[i + 1] >= '0' && s[i + 1] <= '9') {
        i += 2;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < n && (s[j] == '+' || s[j] == '-')) j++;
        if (j < n && s[j] >= '0' && s[j] <= '9') {
            while (j < n && s[j] >= '0' && s[j] <= '9') j++;
            i = j;
        }
    }
    return i;
}

/* A masked value (COPY text) as JSON in COPY text, as _mask_leaf and the final encode() write it. */
static int leaf_text(const char *m, size_t n, int was_string, Buf *out) {
    if (n == 2 && m[0] == '\\' && m[1] == 'N') return buf_put(out, "null", 4);
    if (!was_string && !memchr(m, '\\', n) && n && scalar_len(m, n) == n) return buf_put(out, m, n);
    if (buf_reserve(out, 4 * n + 4)) return -1;
    char *o = out->p + out->n;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m[i];
        if (c == '\\') { /* a COPY escape: the character it stands for, JSON-escaped, its backslash doubled */
            char e = ++i < n ? m[i] : 0;
            const char *j = e == '\\' ? "\\\\\\\\" : e == 't' ? "\\\\t" : e == 'n' ? "\\\\n" : e == 'r' ? "\\\\r"
                          : e == 'b' ? "\\\\b" : e == 'f' ? "\\\\f" : e == 'v' ? "\\\\u000b" : NULL;
            if (!j) return JSON_BAIL; /* encode() writes no other escape; leave it to Python */
            size_t jl = strlen(j); /* at most 7 for 2 characters read: 4n + 4 holds them all */
            memcpy(o, j, jl);
            o += jl;
        } else if (c == '"') {
            memcpy(o, "\\\\\"", 3);
            o += 3;
        } else if (c < 0x20) { /* encode() escapes these; a raw one cannot come from it */
            return JSON_BAIL;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    out->n = (size_t)(o - out->p);
    return 0;
}

typedef struct {
    int node; /* -1: skipping (kept, or nulled on close) */
    int is_object, null_on_close;
    size_t start;
} JFrame;

enum { J_VALUE, J_KEY_OR_CLOSE, J_KEY, J_COLON, J_COMMA_OR_CLOSE, J_VALUE_OR_CLOSE, J_END };

static int json_child(const JTree *t, int node, const char *key, size_t klen) {
    if (node < 0) return -1;
    const JNode *nd = &t->nodes[node];
    for (int i = 0; i < nd->nkids; i++) {
        PyObject *k = PyTuple_GET_ITEM(nd->keys, i);
        if ((size_t)PyBytes_GET_SIZE(k) == klen && !memcmp(PyBytes_AS_STRING(k), key, klen)) return nd->kids[i];
    }
    return -1;
}

/* 0: the masked document is in out; JSON_BAIL: out untouched, Python must do it; -1: no memory. */
static int do_json(Col *c, const char *v, size_t n, Buf *out) {
    const JTree *t = c->tree;
    if (!utf8_ok((const unsigned char *)v, n)) return JSON_BAIL;
    JFrame stack[64];
    int depth = 0, state = J_VALUE, path = 0; /* path: the node of the value expected next (-1: not listed) */
    size_t pos = 0, copied = 0, base = out->n;
    Buf leaf = {0};
    int rc = JSON_BAIL;
#define WS() while (pos < n && (v[pos] == ' ' || v[pos] == '\t' || v[pos] == '\n' || v[pos] == '\r')) pos++
#define EDIT(from, to, put)                                            \
    do {                                                               \
        if (buf_put(out, v + copied, (from) - copied)) goto nomem;     \
        int r_ = (put);                                                \
        if (r_) { rc = r_; goto done; }                                \
        copied = (to);                                                 \
    } while (0)
    WS();
    if (pos == n) { /* nothing but whitespace: the regex finds no token and nothing is wrong */
        rc = buf_put(out, v, n) ? -1 : 0;
        goto done_ok;
    }
    for (;;) {
        WS();
        if (pos == n) break;
        char ch = v[pos];
        size_t start = pos;
        if (state == J_KEY_OR_CLOSE || state == J_KEY) {
            if (ch == '}' && state == J_KEY_OR_CLOSE) goto close;
            if (ch != '"') goto done;
            const char *q = memchr(v + pos + 1, '"', n - pos - 1);
            if (!q) goto done;
            JFrame *f = &stack[depth - 1];
            path = f->node < 0 ? -1 : json_child(t, f->node, v + pos + 1, (size_t)(q - v - pos - 1));
            pos = (size_t)(q - v) + 1;
            state = J_COLON;
            continue;
        }
        if (state == J_COLON) {
            if (ch != ':') goto done;
            pos++;
            state = J_VALUE;
            continue;
        }
        if (state == J_COMMA_OR_CLOSE) {
            if (ch == ',') {
                pos++;
                JFrame *f = &stack[depth - 1];
                state = f->is_object ? J_KEY : J_VALUE;
                if (!f->is_object) path = f->node < 0 ? -1 : t->nodes[f->node].item;
                continue;
            }
            if (ch == '}' || ch == ']') goto close;
            goto done;
        }
        if (state == J_END) goto done; /* something after the document */
        if (state == J_VALUE_OR_CLOSE && ch == ']') goto close;
        { /* a value at `path` */
            int in_skip = depth && stack[depth - 1].node < 0;
            if (ch == '{' || ch == '[') {
                if (depth == 64) goto done;
                JFrame *f = &stack[depth++];
                f->is_object = ch == '{';
                f->start = start;
                f->null_on_close = 0;
                f->node = -1;
                if (!in_skip) {
                    const JNode *nd = path >= 0 ? &t->nodes[path] : NULL;
                    if (nd && nd->prefix) f->node = path; /* descend */
                    else {
                        int rule = nd ? nd->rule : R_NONE;
                        if (rule == R_NONE) {
                            if (t->unlisted != U_KEEP && t->unlisted != U_NULL) goto done;
                            f->null_on_close = t->unlisted == U_NULL;
                        } else if (rule == R_MASK) {
                            if (!nd->null_always) goto done; /* an error: Python says which path */
                            f->null_on_close = 1;
                        } else if (rule == R_PYTHON) goto done;
                    }
                }
                pos++;
                state = ch == '{' ? J_KEY_OR_CLOSE : J_VALUE_OR_CLOSE;
                if (ch == '[') path = f->node < 0 ? -1 : t->nodes[f->node].item;
                continue;
            }
            size_t len;
            int was_string = ch == '"';
            if (was_string) {
                const char *q = memchr(v + pos + 1, '"', n - pos - 1);
                if (!q) goto done;
                len = (size_t)(q - v) + 1 - pos;
            } else if (!(len = scalar_len(v + pos, n - pos))) goto done;
            pos += len;
            if (!in_skip) {
                const JNode *nd = path >= 0 ? &t->nodes[path] : NULL;
                int rule = nd ? nd->rule : R_NONE;
                if (rule == R_NONE) {
                    if (t->unlisted == U_NULL) EDIT(start, pos, buf_put(out, "null", 4) ? -1 : 0);
                    else if (t->unlisted != U_KEEP) goto done;
                } else if (rule == R_PYTHON) {
                    goto done;
                } else if (rule == R_MASK && !(len == 4 && !memcmp(v + start, "null", 4))) {
                    leaf.n = 0;
                    const char *val = was_string ? v + start + 1 : v + start;
                    size_t vl = was_string ? len - 2 : len;
                    if (apply_native(nd->leaf, val, vl, &leaf)) goto nomem;
                    EDIT(start, pos, leaf_text(leaf.p ? leaf.p : "", leaf.n, was_string, out));
                }
            }
            state = depth ? J_COMMA_OR_CLOSE : J_END;
            continue;
        }
    close:
        {
            JFrame *f = &stack[--depth];
            if ((v[pos] == '}') != f->is_object) goto done;
            pos++;
            if (f->null_on_close) EDIT(f->start, pos, buf_put(out, "null", 4) ? -1 : 0);
            state = depth ? J_COMMA_OR_CLOSE : J_END;
        }
    }
    if (state != J_END) goto done;
    if (buf_put(out, v + copied, n - copied)) goto nomem;
    rc = 0;
    goto done_ok;
nomem:
    rc = -1;
done:
    out->n = base; /* nothing half-written */
done_ok:
    free(leaf.p);
    return rc;
#undef WS
#undef EDIT
}

/* A native column's transform of one value, into out; -1: no memory. */
static int apply_native(Col *c, const char *v, size_t len, Buf *out) {
    int rc = 0;
    switch (c->kind) {
    case K_CONST:
        rc = put_bytes(out, c->data);
        break;
    case K_HASH:
        rc = do_hash(c, v, len, out);
        break;
    case K_PICK:
        rc = do_pick(c, v, len, out);
        break;
    case K_VARIANTS:
        rc = do_variants(c, v, len, out);
        break;
    case K_EMAIL:
        rc = do_email(c, v, len, out);
        break;
    }
    if (!rc && c->unique && (c->kind == K_PICK || c->kind == K_VARIANTS))
        rc = buf_put(out, "-", 1) || put_tag(out, &c->tag, v, len);
    return rc ? -1 : 0;
}

static int apply(Col *c, const char *v, size_t len, Buf *out, PyThreadState **ts, int release) {
    if (c->kind == K_CALL) return call_python(c, v, len, out, ts, release);
    if (c->kind == K_JSON) {
        int rc = do_json(c, v, len, out);
        if (rc == JSON_BAIL) return call_python(c, v, len, out, ts, release);
        return rc ? no_memory(ts) : 0;
    }
    if (c->kind == K_CARD || c->kind == K_FIT) {
        int rc = c->kind == K_CARD ? do_card(c, v, len, out) : do_fit(c, v, len, out);
        if (rc == HAND_BACK) return call_python(c, v, len, out, ts, release);
        return rc ? no_memory(ts) : 0;
    }
    return apply_native(c, v, len, out) ? no_memory(ts) : 0;
}

static int mask_row(Masker *m, Fields *fl, const char *line, Py_ssize_t len, Buf *out, PyThreadState **ts,
                    int release) {
    Py_ssize_t nf = 0, pos = 0;
    for (;;) { /* frame the fields */
        if (nf == fl->cap) {
            Py_ssize_t cap = fl->cap * 2 + 8;
            Py_ssize_t *s = realloc(fl->starts, cap * sizeof *s), *l;
            if (!s) return no_memory(ts);
            fl->starts = s;
            l = realloc(fl->lens, cap * sizeof *l);
            if (!l) return no_memory(ts);
            fl->lens = l;
            fl->cap = cap;
        }
        const char *tab = memchr(line + pos, '\t', (size_t)(len - pos));
        Py_ssize_t end = tab ? tab - line : len;
        fl->starts[nf] = pos;
        fl->lens[nf++] = end - pos;
        if (!tab) break;
        pos = end + 1;
    }
    size_t row_start = out->n;
    for (Py_ssize_t i = 0; i < nf; i++) {
        const char *v = line + fl->starts[i];
        Py_ssize_t vl = fl->lens[i];
        if (i) {
            if (buf_put(out, "\t", 1)) return no_memory(ts);
        }
        fl->starts[i] = (Py_ssize_t)(out->n - row_start); /* from here on: where the masked field is in out */
        Col *c = i < m->ncols ? &m->cols[i] : NULL;
        if (!c || c->kind == K_KEEP) {
            if (buf_put(out, v, vl)) return no_memory(ts);
        } else if (vl == 2 && v[0] == '\\' && v[1] == 'N') {
            if (c->mask_nulls ? apply(c, "", 0, out, ts, release) : buf_put(out, v, vl) ? no_memory(ts) : 0) return -1;
        } else if (apply(c, v, (size_t)vl, out, ts, release)) {
            return -1;
        }
        fl->lens[i] = (Py_ssize_t)(out->n - row_start) - fl->starts[i];
    }
    if (m->last_masked >= nf) {
        GIL_ON(ts);
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return -1;
    }
    if (m->row_hook) { /* templates: Python renders them from the masked fields */
        GIL_ON(ts);
        PyObject *fields = PyList_New(nf);
        if (!fields) return -1;
        for (Py_ssize_t i = 0; i < nf; i++) {
            PyObject *f = PyBytes_FromStringAndSize(out->p + row_start + fl->starts[i], fl->lens[i]);
            if (!f) {
                Py_DECREF(fields);
                return -1;
            }
            PyList_SET_ITEM(fields, i, f);
        }
        PyObject *res = PyObject_CallOneArg(m->row_hook, fields);
        Py_DECREF(fields);
        if (!res) return -1;
        if (!PyBytes_Check(res)) {
            Py_DECREF(res);
            PyErr_SetString(PyExc_TypeError, "the row hook must return bytes");
            return -1;
        }
        out->n = row_start;
        int rc = put_bytes(out, res);
        Py_DECREF(res);
        if (rc) return no_memory(ts);
        GIL_OFF(ts, release);
    }
    if (buf_put(out, "\n", 1)) return no_memory(ts);
    return 0;
}

/* Every line of data[0:len] (each ending in \n) masked into out. Returns the number of lines, -1 on error. */
static Py_ssize_t mask_lines(Masker *m, Fields *fl, const char *data, Py_ssize_t len, Buf *out, PyThreadState **ts,
                             int release) {
    Py_ssize_t pos = 0, rows = 0;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', (size_t)(len - pos));
        if (!nl) {
            GIL_ON(ts);
            PyErr_SetString(PyExc_ValueError, "COPY data does not end with a newline");
            return -1;
        }
        Py_ssize_t end = nl - data;
        if (mask_row(m, fl, data + pos, end - pos, out, ts, release)) return -1;
        rows++;
        pos = end + 1;
    }
    return rows;
}

static PyObject *take(Buf *b) {
    PyObject *res = PyBytes_FromStringAndSize(b->p ? b->p : "", (Py_ssize_t)b->n);
    free(b->p);
    return res;
}

static PyObject *Masker_mask_block(Masker *m, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    Buf out = {0};
    PyThreadState *ts = NULL;
    int release = !m->has_call && !m->row_hook;
    if (buf_reserve(&out, (size_t)view.len + view.len / 4 + 64)) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    Fields fl = {0};
    GIL_OFF(&ts, release);
    Py_ssize_t rows = mask_lines(m, &fl, view.buf, view.len, &out, &ts, release);
    GIL_ON(&ts);
    free(fl.starts);
    free(fl.lens);
    PyBuffer_Release(&view);
    if (rows < 0) {
        free(out.p);
        return NULL;
    }
    return take(&out);
}

/* libpq's PQgetCopyData and PQfreemem, from the library psycopg itself loaded (kernel.py finds them). */
typedef int (*GetCopyData)(void *conn, char **buffer, int async);
typedef void (*FreeMem)(void *ptr);

static PyObject *Masker_pump(Masker *m, PyObject *args) {
    unsigned long long conn_addr, get_addr, free_addr;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "KKKn", &conn_addr, &get_addr, &free_addr, &limit)) return NULL;
    void *conn = (void *)(uintptr_t)conn_addr;
    GetCopyData get = (GetCopyData)(uintptr_t)get_addr;
    FreeMem freemem = (FreeMem)(uintptr_t)free_addr;
    Buf out = {0};
    PyThreadState *ts = NULL;
    int release = !m->has_call && !m->row_hook;
    Py_ssize_t rows = 0;
    int status = 0; /* 0: more to come, 1: the COPY ended, 2: libpq failed (the caller reads its error) */
    Fields fl = {0};
    if (buf_reserve(&out, (size_t)limit + (1 << 16))) return PyErr_NoMemory();
    ts = PyEval_SaveThread(); /* a blocking read: never hold the GIL while waiting for the server */
    while (out.n < (size_t)limit) {
        char *data = NULL;
        int n = get(conn, &data, 0);
        if (n == -1) {
            status = 1;
            break;
        }
        if (n < 0) {
            status = 2;
            break;
        }
        Py_ssize_t r = mask_lines(m, &fl, data, n, &out, &ts, release);
        freemem(data);
        if (r < 0) {
            GIL_ON(&ts);
            free(out.p);
            free(fl.starts);
            free(fl.lens);
            return NULL;
        }
        rows += r;
        if (!release) GIL_OFF(&ts, 1); /* hold it only for Python calls, never across a read */
    }
    GIL_ON(&ts);
    free(fl.starts);
    free(fl.lens);
    PyObject *block = take(&out);
    if (!block) return NULL;
    return Py_BuildValue("Nni", block, rows, status);
}

/* ---------------- building a Masker from kernel.py's compiled rules ---------------- */

static int setup_keys(Col *c, PyObject *subkey, int wide) {
    char *k;
    Py_ssize_t kl;
    if (PyBytes_AsStringAndSize(subkey, &k, &kl)) return -1;
    if (kl < 1 || kl > 64) {
        PyErr_SetString(PyExc_ValueError, "a sub-key has 1 to 64 bytes");
        return -1;
    }
    b2_setup(&c->h64, 8, (uint8_t *)k, (size_t)kl, NULL, 0);
    b2_setup(&c->tag, 10, (uint8_t *)k, (size_t)kl, (const uint8_t *)"prodclone-uniq", 14);
    if (wide) b2_setup(&c->wide, wide, (uint8_t *)k, (size_t)kl, NULL, 0);
    return 0;
}

static int bytes_tuple(PyObject *t, const char *what) {
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) == 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a non-empty tuple", what);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(t, i))) {
            PyErr_Format(PyExc_TypeError, "%s must hold bytes", what);
            return -1;
        }
    return 0;
}

static int setup_frames(Col *c, PyObject *frames) {
    if (!PyTuple_Check(frames) || PyTuple_GET_SIZE(frames) == 0) {
        PyErr_SetString(PyExc_TypeError, "variants need a non-empty tuple of frames");
        return -1;
    }
    c->nframes = (int)PyTuple_GET_SIZE(frames);
    c->frames = calloc(c->nframes, sizeof(Frame));
    if (!c->frames) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < c->nframes; i++) {
        Frame *f = &c->frames[i];
        PyObject *slots;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(frames, i), "SO!", &f->head, &PyTuple_Type, &slots)) return -1;
        f->nslots = (int)PyTuple_GET_SIZE(slots);
        f->slots = calloc(f->nslots + 1, sizeof(Slot));
        if (!f->slots) {
            PyErr_NoMemory();
            return -1;
        }
        for (int j = 0; j < f->nslots; j++) {
            Slot *s = &f->slots[j];
            PyObject *spec = PyTuple_GET_ITEM(slots, j);
            const char *kind;
            if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 2 ||
                !(kind = PyUnicode_AsUTF8(PyTuple_GET_ITEM(spec, 0)))) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a slot is (kind, ..., after)");
                return -1;
            }
            if (!strcmp(kind, "d")) {
                s->kind = S_DIGITS;
                if (!PyArg_ParseTuple(spec, "siKKKS", &kind, &s->width, &s->low, &s->span, &s->pow, &s->after)) return -1;
                if (!s->span || !s->pow) {
                    PyErr_SetString(PyExc_ValueError, "a digit slot needs a span");
                    return -1;
                }
            } else if (!strcmp(kind, "ip")) {
                s->kind = S_IP;
                if (!PyArg_ParseTuple(spec, "sS", &kind, &s->after)) return -1;
            } else if (!strcmp(kind, "w")) {
                s->kind = S_WORD;
                if (!PyArg_ParseTuple(spec, "sKO!S", &kind, &s->size, &PyTuple_Type, &s->blocks, &s->after)) return -1;
                uint64_t total = 0;
                for (Py_ssize_t b = 0; b < PyTuple_GET_SIZE(s->blocks); b++) {
                    PyObject *blk = PyTuple_GET_ITEM(s->blocks, b);
                    if (!PyTuple_Check(blk) || PyTuple_GET_SIZE(blk) != 2 || bytes_tuple(PyTuple_GET_ITEM(blk, 0), "heads") ||
                        bytes_tuple(PyTuple_GET_ITEM(blk, 1), "tails")) {
                        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a block is (heads, tails)");
                        return -1;
                    }
                    total += (uint64_t)PyTuple_GET_SIZE(PyTuple_GET_ITEM(blk, 0)) * PyTuple_GET_SIZE(PyTuple_GET_ITEM(blk, 1));
                }
                if (!s->size || total != s->size) {
                    PyErr_SetString(PyExc_ValueError, "a word slot's size must be its blocks' total");
                    return -1;
                }
            } else {
                PyErr_Format(PyExc_ValueError, "unknown slot kind %s", kind);
                return -1;
            }
        }
    }
    return 0;
}

static int setup_col(Col *c, PyObject *spec);

/* nodes: tuple of (rule, item child or -1, (key bytes, ...), (child, ...), prefix); node 0 is the document.
 * rule: None | ("keep",) | ("python",) | ("mask", native spec, null_always). */
static int setup_tree(Col *c, int unlisted, PyObject *nodes) {
    JTree *t = calloc(1, sizeof(JTree));
    if (!t) {
        PyErr_NoMemory();
        return -1;
    }
    c->tree = t;
    c->unique = 0;
    t->unlisted = unlisted;
    t->nnodes = (int)PyTuple_GET_SIZE(nodes);
    if (t->nnodes < 1 || unlisted < U_FAIL || unlisted > U_DROP) {
        PyErr_SetString(PyExc_ValueError, "json: a tree needs its root and a known unlisted policy");
        return -1;
    }
    t->nodes = calloc(t->nnodes, sizeof(JNode));
    if (!t->nodes) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < t->nnodes; i++) {
        JNode *nd = &t->nodes[i];
        PyObject *rule, *kids;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(nodes, i), "OiO!O!p", &rule, &nd->item, &PyTuple_Type, &nd->keys,
                              &PyTuple_Type, &kids, &nd->prefix))
            return -1;
        nd->nkids = (int)PyTuple_GET_SIZE(nd->keys);
        if (PyTuple_GET_SIZE(kids) != nd->nkids || nd->item >= t->nnodes) {
            PyErr_SetString(PyExc_ValueError, "json: keys and children differ");
            return -1;
        }
        nd->kids = calloc(nd->nkids + 1, sizeof(int));
        if (!nd->kids) {
            PyErr_NoMemory();
            return -1;
        }
        for (int k = 0; k < nd->nkids; k++) {
            if (!PyBytes_Check(PyTuple_GET_ITEM(nd->keys, k))) {
                PyErr_SetString(PyExc_TypeError, "json: keys are bytes");
                return -1;
            }
            nd->kids[k] = (int)PyLong_AsLong(PyTuple_GET_ITEM(kids, k));
            if (nd->kids[k] <= 0 || nd->kids[k] >= t->nnodes) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "json: a child out of range");
                return -1;
            }
        }
        const char *what;
        if (rule == Py_None) nd->rule = R_NONE;
        else if (!PyTuple_Check(rule) || PyTuple_GET_SIZE(rule) < 1 || !(what = PyUnicode_AsUTF8(PyTuple_GET_ITEM(rule, 0)))) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "json: a rule is None or a tuple");
            return -1;
        } else if (!strcmp(what, "keep")) nd->rule = R_KEEP;
        else if (!strcmp(what, "python")) nd->rule = R_PYTHON;
        else if (!strcmp(what, "mask")) {
            PyObject *native;
            nd->rule = R_MASK;
            if (!PyArg_ParseTuple(rule, "sO!p", &what, &PyTuple_Type, &native, &nd->null_always)) return -1;
            nd->leaf = calloc(1, sizeof(Col));
            if (!nd->leaf) {
                PyErr_NoMemory();
                return -1;
            }
            if (setup_col(nd->leaf, native)) return -1;
            int k = nd->leaf->kind;
            if (k == K_KEEP || k == K_CALL || k == K_JSON) {
                PyErr_SetString(PyExc_ValueError, "json: a masked path needs a native rule");
                return -1;
            }
        } else {
            PyErr_Format(PyExc_ValueError, "json: unknown rule %s", what);
            return -1;
        }
    }
    return 0;
}

static void free_col(Col *c) {
    if (c->frames) {
        for (int j = 0; j < c->nframes; j++) free(c->frames[j].slots);
        free(c->frames);
    }
    if (c->tree) {
        for (int i = 0; i < c->tree->nnodes; i++) {
            free(c->tree->nodes[i].kids);
            if (c->tree->nodes[i].leaf) {
                free_col(c->tree->nodes[i].leaf);
                free(c->tree->nodes[i].leaf);
            }
        }
        free(c->tree->nodes);
        free(c->tree);
    }
}

static int setup_col(Col *c, PyObject *spec) {
    const char *kind;
    PyObject *subkey = NULL;
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1 || !(kind = PyUnicode_AsUTF8(PyTuple_GET_ITEM(spec, 0)))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a column's spec is a tuple (kind, ...)");
        return -1;
    }
    if (!strcmp(kind, "keep")) {
        c->kind = K_KEEP;
        return 0;
    }
    if (!strcmp(kind, "call")) {
        c->kind = K_CALL;
        return PyArg_ParseTuple(spec, "spO", &kind, &c->mask_nulls, &c->fn) ? 0 : -1;
    }
    if (!strcmp(kind, "const")) {
        c->kind = K_CONST;
        return PyArg_ParseTuple(spec, "spS", &kind, &c->mask_nulls, &c->data) ? 0 : -1;
    }
    if (!strcmp(kind, "hash")) {
        c->kind = K_HASH;
        if (!PyArg_ParseTuple(spec, "spSiiS", &kind, &c->mask_nulls, &subkey, &c->fmt, &c->length, &c->data)) return -1;
        if (c->fmt < F_HEX || c->fmt > F_UUID || c->length < 1 || c->length > 64) {
            PyErr_SetString(PyExc_ValueError, "hash: unknown format or length");
            return -1;
        }
        return setup_keys(c, subkey, 32);
    }
    if (!strcmp(kind, "pick")) {
        c->kind = K_PICK;
        if (!PyArg_ParseTuple(spec, "spSpO", &kind, &c->mask_nulls, &subkey, &c->unique, &c->data)) return -1;
        return bytes_tuple(c->data, "a pool") || setup_keys(c, subkey, 0);
    }
    if (!strcmp(kind, "variants")) {
        PyObject *frames;
        c->kind = K_VARIANTS;
        if (!PyArg_ParseTuple(spec, "spSpO", &kind, &c->mask_nulls, &subkey, &c->unique, &frames)) return -1;
        return setup_keys(c, subkey, 64) || setup_frames(c, frames);
    }
    if (!strcmp(kind, "email")) {
        c->kind = K_EMAIL;
        if (!PyArg_ParseTuple(spec, "spSO!", &kind, &c->mask_nulls, &subkey, &PyTuple_Type, &c->data)) return -1;
        if (PyTuple_GET_SIZE(c->data) != 3 || bytes_tuple(PyTuple_GET_ITEM(c->data, 0), "firsts") ||
            bytes_tuple(PyTuple_GET_ITEM(c->data, 1), "lasts") || bytes_tuple(PyTuple_GET_ITEM(c->data, 2), "domains")) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "email takes (firsts, lasts, domains)");
            return -1;
        }
        return setup_keys(c, subkey, 0);
    }
    if (!strcmp(kind, "json")) {
        PyObject *nodes;
        int unlisted;
        c->kind = K_JSON;
        if (!PyArg_ParseTuple(spec, "spiO!O", &kind, &c->mask_nulls, &unlisted, &PyTuple_Type, &nodes, &c->fn)) return -1;
        return setup_tree(c, unlisted, nodes);
    }
    if (!strcmp(kind, "card")) {
        c->kind = K_CARD;
        return PyArg_ParseTuple(spec, "spSO", &kind, &c->mask_nulls, &c->key, &c->fn) ? 0 : -1;
    }
    if (!strcmp(kind, "fit")) {
        c->kind = K_FIT;
        if (!PyArg_ParseTuple(spec, "spSOO", &kind, &c->mask_nulls, &c->key, &c->data, &c->fn)) return -1;
        if (bytes_tuple(c->data, "the words")) return -1;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(c->data); j++) {
            PyObject *w = PyTuple_GET_ITEM(c->data, j);
            if (!PyBytes_GET_SIZE(w) || PyBytes_AS_STRING(w)[0] < 'a' || PyBytes_AS_STRING(w)[0] > 'z') {
                PyErr_SetString(PyExc_ValueError, "fit: words start with a lower-case ASCII letter");
                return -1;
            }
        }
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "unknown column kind %s", kind);
    return -1;
}

static void Masker_dealloc(Masker *m) {
    Py_XDECREF(m->row_hook);
    Py_XDECREF(m->spec_ref);
    if (m->cols) {
        for (int i = 0; i < m->ncols; i++) free_col(&m->cols[i]);
        free(m->cols);
    }
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static int Masker_init(Masker *m, PyObject *args, PyObject *kw) {
    static char *names[] = {"columns", "row_hook", NULL};
    PyObject *cols, *hook = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|O", names, &PyTuple_Type, &cols, &hook)) return -1;
    if (m->cols) {
        PyErr_SetString(PyExc_TypeError, "a Masker is built once");
        return -1;
    }
    /* Every object the columns point into (bytes, tuples, callables) stays alive through this tuple. */
    Py_INCREF(cols);
    m->spec_ref = cols;
    m->ncols = (int)PyTuple_GET_SIZE(cols);
    m->cols = calloc(m->ncols ? m->ncols : 1, sizeof(Col));
    if (!m->cols) {
        PyErr_NoMemory();
        return -1;
    }
    m->last_masked = -1;
    for (int i = 0; i < m->ncols; i++) {
        if (setup_col(&m->cols[i], PyTuple_GET_ITEM(cols, i))) return -1;
        if (m->cols[i].kind != K_KEEP) m->last_masked = i;
        if (m->cols[i].kind == K_CALL) m->has_call = 1;
    }
    if (hook != Py_None) {
        Py_INCREF(hook);
        m->row_hook = hook;
    }
    return 0;
}

static PyMethodDef Masker_methods[] = {
    {"mask_block", (PyCFunction)Masker_mask_block, METH_O,
     "mask_block(data) -> bytes: COPY text lines (each ending in a newline) masked."},
    {"pump", (PyCFunction)Masker_pump, METH_VARARGS,
     "pump(pgconn, PQgetCopyData, PQfreemem, limit) -> (block, rows, status): reads a COPY TO STDOUT in progress "
     "until at least limit bytes are masked or it ends (status 0: more, 1: ended, 2: libpq failed)."},
    {NULL}};

static PyTypeObject MaskerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "prodclone.masking._kernel.Masker",
    .tp_basicsize = sizeof(Masker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A table's compiled rules, masking COPY text in blocks.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Masker_init,
    .tp_dealloc = (destructor)Masker_dealloc,
    .tp_methods = Masker_methods,
};

static PyObject *k_blake2b(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"data", "key", "digest_size", "person", NULL};
    Py_buffer data, key = {0}, person = {0};
    int size = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|y*iy*", names, &data, &key, &size, &person)) return NULL;
    PyObject *res = NULL;
    if (size < 1 || size > 64 || key.len > 64 || person.len > 16) {
        PyErr_SetString(PyExc_ValueError, "digest_size 1..64, key up to 64 bytes, person up to 16");
    } else {
        B2Key k;
        uint8_t out[64];
        b2_setup(&k, size, key.buf, (size_t)key.len, person.buf, (size_t)person.len);
        b2_hash(&k, data.buf, (size_t)data.len, out);
        res = PyBytes_FromStringAndSize((char *)out, size);
    }
    PyBuffer_Release(&data);
    if (key.obj) PyBuffer_Release(&key);
    if (person.obj) PyBuffer_Release(&person);
    return res;
}

static PyMethodDef module_methods[] = {
    {"blake2b", (PyCFunction)(void (*)(void))k_blake2b, METH_VARARGS | METH_KEYWORDS,
     "blake2b(data, key=b'', digest_size=64, person=b'') -> bytes: the kernel's BLAKE2b, for tests against hashlib."},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", "The compiled masking kernel.", -1, module_methods};

PyMODINIT_FUNC PyInit__kernel(void) {
    if (PyType_Ready(&MaskerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&MaskerType);
    if (PyModule_AddObject(m, "Masker", (PyObject *)&MaskerType) < 0) {
        Py_DECREF(&MaskerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
