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

static uint64_t big_divmod(Big *b, uint64_t d) { /* b //= d; returns b % d */
    u128 rem = 0;
    for (int i = b->n - 1; i >= 0; i--) {
        u128 cur = (rem << 64) | b->w[i];
        b->w[i] = (uint64_t)(cur / d);
        rem = cur % d;
    }
    while (b->n && !b->w[b->n - 1]) b->n--;
    return (uint64_t)rem;
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

enum { K_KEEP, K_CALL, K_CONST, K_HASH, K_PICK, K_VARIANTS, K_EMAIL };
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

typedef struct {
    int kind;
    int mask_nulls, unique;
    PyObject *fn;    /* K_CALL */
    PyObject *data;  /* K_CONST: bytes; K_HASH: prefix; K_PICK: pool tuple; K_EMAIL: (firsts, lasts, domains) */
    int fmt, length; /* K_HASH */
    B2Key h64, tag, wide; /* wide: 32 bytes (hash) or 64 (variants) */
    int nframes;
    Frame *frames;
} Col;

typedef struct {
    PyObject_HEAD
    int ncols;
    Col *cols;
    int last_masked; /* highest column index with a transform, -1 if none */
    int has_call;
    PyObject *row_hook;
    PyObject *spec_ref; /* the compiled rules, kept alive: columns point into them */
    Py_ssize_t *starts, *lens; /* field offsets of the current row */
    Py_ssize_t fcap;
} Masker;

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
        char s[80];
        int n = 0;
        Big b;
        big_from(&b, d, 32);
        char rev[80];
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
            Big rest = h;
            uint64_t r = big_divmod(&rest, s->span); /* the value: h % (10**n - low) ... */
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

static int apply(Col *c, const char *v, size_t len, Buf *out, PyThreadState **ts, int release) {
    int rc = 0;
    switch (c->kind) {
    case K_CALL:
        return call_python(c, v, len, out, ts, release);
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
    return rc ? no_memory(ts) : 0;
}

static int mask_row(Masker *m, const char *line, Py_ssize_t len, Buf *out, PyThreadState **ts, int release) {
    Py_ssize_t nf = 0, pos = 0;
    for (;;) { /* frame the fields */
        if (nf == m->fcap) {
            Py_ssize_t cap = m->fcap * 2 + 8;
            Py_ssize_t *s = realloc(m->starts, cap * sizeof *s), *l;
            if (!s) return no_memory(ts);
            m->starts = s;
            l = realloc(m->lens, cap * sizeof *l);
            if (!l) return no_memory(ts);
            m->lens = l;
            m->fcap = cap;
        }
        const char *tab = memchr(line + pos, '\t', (size_t)(len - pos));
        Py_ssize_t end = tab ? tab - line : len;
        m->starts[nf] = pos;
        m->lens[nf++] = end - pos;
        if (!tab) break;
        pos = end + 1;
    }
    size_t row_start = out->n;
    for (Py_ssize_t i = 0; i < nf; i++) {
        const char *v = line + m->starts[i];
        Py_ssize_t vl = m->lens[i];
        if (i) {
            if (buf_put(out, "\t", 1)) return no_memory(ts);
        }
        m->starts[i] = (Py_ssize_t)(out->n - row_start); /* from here on: where the masked field is in out */
        Col *c = i < m->ncols ? &m->cols[i] : NULL;
        if (!c || c->kind == K_KEEP) {
            if (buf_put(out, v, vl)) return no_memory(ts);
        } else if (vl == 2 && v[0] == '\\' && v[1] == 'N') {
            if (c->mask_nulls ? apply(c, "", 0, out, ts, release) : buf_put(out, v, vl) ? no_memory(ts) : 0) return -1;
        } else if (apply(c, v, (size_t)vl, out, ts, release)) {
            return -1;
        }
        m->lens[i] = (Py_ssize_t)(out->n - row_start) - m->starts[i];
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
            PyObject *f = PyBytes_FromStringAndSize(out->p + row_start + m->starts[i], m->lens[i]);
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
static Py_ssize_t mask_lines(Masker *m, const char *data, Py_ssize_t len, Buf *out, PyThreadState **ts, int release) {
    Py_ssize_t pos = 0, rows = 0;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', (size_t)(len - pos));
        if (!nl) {
            GIL_ON(ts);
            PyErr_SetString(PyExc_ValueError, "COPY data does not end with a newline");
            return -1;
        }
        Py_ssize_t end = nl - data;
        if (mask_row(m, data + pos, end - pos, out, ts, release)) return -1;
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
    GIL_OFF(&ts, release);
    Py_ssize_t rows = mask_lines(m, view.buf, view.len, &out, &ts, release);
    GIL_ON(&ts);
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
        if (!m->row_hook && !m->has_call) GIL_OFF(&ts, 1);
        Py_ssize_t r = mask_lines(m, data, n, &out, &ts, release);
        freemem(data);
        if (r < 0) {
            GIL_ON(&ts);
            free(out.p);
            return NULL;
        }
        rows += r;
        if (!release) GIL_OFF(&ts, 1); /* hold it only for Python calls, never across a read */
    }
    GIL_ON(&ts);
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
    PyErr_Format(PyExc_ValueError, "unknown column kind %s", kind);
    return -1;
}

static void Masker_dealloc(Masker *m) {
    Py_XDECREF(m->row_hook);
    Py_XDECREF(m->spec_ref);
    if (m->cols) {
        for (int i = 0; i < m->ncols; i++) {
            Col *c = &m->cols[i];
            if (c->frames) {
                for (int j = 0; j < c->nframes; j++) free(c->frames[j].slots);
                free(c->frames);
            }
        }
        free(m->cols);
    }
    free(m->starts);
    free(m->lens);
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
