/* bot._scan: the per-word part of alert matching (bot/matching.py), compiled.
 *
 * Matching 1,000 papers against standing queries spends most of its time on the papers' 200,000 words: in
 * Python each word is a new string to split off, hash, stem through a dict and test against the words the
 * queries name. Here a `Table` maps each raw ASCII word (as FTS5's unicode61 splits and lower-cases it) to the
 * ids of the named words its tokens are, and `Table.scan` folds, splits and looks up the words of many texts in
 * one pass over their characters, setting one bit per (word id, paper) without making a string per word.
 *
 * Python decides everything about meaning: which raw words exist (`unknown`), what they stem to and which ids
 * those are (`add`). The pure-Python path in bot/matching.py computes the same bitsets; the tests run both. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint64_t hash; /* 0: an empty slot */
    uint32_t key;  /* offset of the word in `keys` */
    uint32_t len;
    uint32_t ids;  /* offset of its ids in `ids` */
    uint32_t nids; /* 0: no named word; the word is known and asks for nothing */
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t cap; /* a power of two, at least twice `used` */
    size_t used;
    char *keys;
    size_t keys_len, keys_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
} Table;

/* unicode61 on ASCII: letters and digits are token characters, lower-cased; everything else separates. */
static unsigned char FOLD[256];

static void init_fold(void) {
    for (int c = 0; c < 256; c++) {
        if (c >= 'a' && c <= 'z') FOLD[c] = (unsigned char)c;
        else if (c >= 'A' && c <= 'Z') FOLD[c] = (unsigned char)(c - 'A' + 'a');
        else if (c >= '0' && c <= '9') FOLD[c] = (unsigned char)c;
        else FOLD[c] = 0;
    }
}

#define FNV_BASIS 1469598103934665603ULL
#define FNV_PRIME 1099511628211ULL

static uint64_t hash_word(const char *w, size_t n) { /* FNV-1a; 0 marks an empty slot */
    uint64_t h = FNV_BASIS;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)w[i]) * FNV_PRIME;
    return h ? h : 1;
}

static Slot *find(Table *t, const char *w, size_t n, uint64_t h) {
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        Slot *s = &t->slots[i];
        if (s->hash == 0) return s;
        if (s->hash == h && s->len == n && memcmp(t->keys + s->key, w, n) == 0) return s;
    }
}

static int grow_slots(Table *t) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    Slot *slots = PyMem_Calloc(cap, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Slot *old = t->slots;
    size_t old_cap = t->cap;
    t->slots = slots;
    t->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].hash == 0) continue;
        size_t mask = cap - 1;
        size_t j = (size_t)old[i].hash & mask;
        while (slots[j].hash != 0) j = (j + 1) & mask;
        slots[j] = old[i];
    }
    PyMem_Free(old);
    return 0;
}

static int reserve(void **buf, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    void *b = PyMem_Realloc(*buf, cap2 * item);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = b;
    *cap = cap2;
    return 0;
}

static void Table_dealloc(Table *t) {
    PyMem_Free(t->slots);
    PyMem_Free(t->keys);
    PyMem_Free(t->ids);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* The characters of a str that must be ASCII (the caller sends other texts down the slow path). */
static const char *ascii_of(PyObject *text, Py_ssize_t *n) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) {
        PyErr_SetString(PyExc_ValueError, "Table takes ASCII str texts only");
        return NULL;
    }
    *n = PyUnicode_GET_LENGTH(text);
    return (const char *)PyUnicode_DATA(text);
}

static PyObject *Table_add(Table *t, PyObject *args) {
    PyObject *word, *ids;
    if (!PyArg_ParseTuple(args, "UO:add", &word, &ids)) return NULL;
    Py_ssize_t n;
    const char *w = ascii_of(word, &n);
    if (w == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (FOLD[(unsigned char)w[i]] == 0 || FOLD[(unsigned char)w[i]] != (unsigned char)w[i]) {
            PyErr_SetString(PyExc_ValueError, "a word is lower-case ASCII letters and digits");
            return NULL;
        }
    }
    if (n == 0 || (size_t)n > UINT32_MAX || t->keys_len + (size_t)n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "an empty word, or no room for it (start a new Table)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(ids, "ids must be a sequence of ints");
    if (seq == NULL) return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    if (reserve((void **)&t->ids, &t->ids_cap, t->ids_len + (size_t)k, sizeof(int32_t)) < 0) goto fail;
    for (Py_ssize_t i = 0; i < k; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) goto fail;
        if (v < 0 || v > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "ids are 0 to 2**31 - 1");
            goto fail;
        }
        t->ids[t->ids_len + (size_t)i] = (int32_t)v;
    }
    if ((t->used + 1) * 2 > t->cap && grow_slots(t) < 0) goto fail;
    uint64_t h = hash_word(w, (size_t)n);
    Slot *s = find(t, w, (size_t)n, h);
    if (s->hash == 0) {
        if (reserve((void **)&t->keys, &t->keys_cap, t->keys_len + (size_t)n, 1) < 0) goto fail;
        memcpy(t->keys + t->keys_len, w, (size_t)n);
        s->hash = h;
        s->key = (uint32_t)t->keys_len;
        s->len = (uint32_t)n;
        t->keys_len += (size_t)n;
        t->used++;
    }
    s->ids = (uint32_t)t->ids_len;
    s->nids = (uint32_t)k;
    t->ids_len += (size_t)k;
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    Py_DECREF(seq);
    return NULL;
}

/* Calls f(state, word, length, its hash_word, text index) for every word of every text; stops at f's nonzero
 * return. */
typedef int (*word_fn)(void *state, const char *w, size_t n, uint64_t h, Py_ssize_t text);

static Py_ssize_t longest(PyObject *seq) {
    Py_ssize_t most = 0, count = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *text = PySequence_Fast_GET_ITEM(seq, k);
        if (!PyUnicode_Check(text)) {
            PyErr_SetString(PyExc_TypeError, "texts must be str");
            return -1;
        }
        if (PyUnicode_GET_LENGTH(text) > most) most = PyUnicode_GET_LENGTH(text);
    }
    return most;
}

static int each_word(PyObject *seq, word_fn f, void *state) {
    Py_ssize_t most = longest(seq);
    if (most < 0) return -1;
    char *buf = PyMem_Malloc((size_t)most + 1); /* a word, folded */
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int r = 0;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t n;
        const char *s = ascii_of(PySequence_Fast_GET_ITEM(seq, k), &n);
        if (s == NULL) {
            r = -1;
            break;
        }
        size_t len = 0;
        uint64_t h = FNV_BASIS; /* hash_word, computed while folding */
        for (Py_ssize_t i = 0; i <= n; i++) {
            unsigned char c = i < n ? FOLD[(unsigned char)s[i]] : 0;
            if (c) {
                buf[len++] = (char)c;
                h = (h ^ c) * FNV_PRIME;
            } else if (len) {
                r = f(state, buf, len, h ? h : 1, k);
                if (r) goto done;
                len = 0;
                h = FNV_BASIS;
            }
        }
    }
done:
    PyMem_Free(buf);
    return r;
}

typedef struct {
    Table *t;
    PyObject *out; /* set of str */
} UnknownState;

static int note_unknown(void *state, const char *w, size_t n, uint64_t h, Py_ssize_t text) {
    (void)text;
    UnknownState *u = state;
    if (u->t->cap && find(u->t, w, n, h)->hash != 0) return 0;
    PyObject *s = PyUnicode_FromStringAndSize(w, (Py_ssize_t)n);
    if (s == NULL) return -1;
    int r = PySet_Add(u->out, s);
    Py_DECREF(s);
    return r;
}

static PyObject *Table_unknown(Table *t, PyObject *texts) {
    PyObject *seq = PySequence_Fast(texts, "texts must be a sequence");
    if (seq == NULL) return NULL;
    PyObject *out = PySet_New(NULL);
    if (out != NULL) {
        UnknownState u = {t, out};
        if (each_word(seq, note_unknown, &u) != 0) Py_CLEAR(out);
    }
    Py_DECREF(seq);
    return out;
}

typedef struct {
    Table *t;
    Py_ssize_t columns, nwords, words; /* words: uint64 words per bitset */
    int32_t *row_of;                   /* (word id, column slot) -> row in `bits`, or -1 */
    int slot_of[8];                    /* text column -> its own slot in row_of (1 ..), or 0: not kept */
    Py_ssize_t slots;
    uint64_t *bits;
    size_t rows, rows_cap;
} ScanState;

static int set_bit(ScanState *st, int32_t id, int slot, Py_ssize_t doc) {
    int32_t *r = &st->row_of[(size_t)id * (size_t)st->slots + (size_t)slot];
    if (*r < 0) {
        if (reserve((void **)&st->bits, &st->rows_cap, (st->rows + 1) * (size_t)st->words, sizeof(uint64_t)) < 0)
            return -1;
        memset(st->bits + st->rows * (size_t)st->words, 0, (size_t)st->words * sizeof(uint64_t));
        *r = (int32_t)st->rows++;
    }
    st->bits[(size_t)*r * (size_t)st->words + (size_t)(doc >> 6)] |= (uint64_t)1 << (doc & 63);
    return 0;
}

static int note_word(void *state, const char *w, size_t n, uint64_t h, Py_ssize_t text) {
    ScanState *st = state;
    Slot *s = st->t->cap ? find(st->t, w, n, h) : NULL;
    if (s == NULL || s->hash == 0) {
        PyObject *word = PyUnicode_FromStringAndSize(w, (Py_ssize_t)n);
        if (word != NULL) {
            PyErr_SetObject(PyExc_KeyError, word);
            Py_DECREF(word);
        }
        return -1;
    }
    Py_ssize_t doc = text / st->columns;
    int col = st->slot_of[text % st->columns];
    for (uint32_t i = 0; i < s->nids; i++) {
        int32_t id = st->t->ids[s->ids + i];
        if (id >= st->nwords) {
            PyErr_SetString(PyExc_IndexError, "a word id beyond the stems given");
            return -1;
        }
        if (set_bit(st, id, 0, doc) < 0) return -1;
        if (col > 0 && set_bit(st, id, col, doc) < 0) return -1;
    }
    return 0;
}

/* A bitset as a Python int, and back (a non-negative int of at most `words` machine words; -1: it is not). */
static PyObject *int_of(const uint64_t *b, Py_ssize_t words) {
    while (words > 1 && b[words - 1] == 0) words--; /* the conversion goes byte by byte: skip the zero high end */
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(b, (size_t)words * sizeof(uint64_t), Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
    return _PyLong_FromByteArray((const unsigned char *)b, (size_t)words * sizeof(uint64_t), 1, 0);
#endif
}

static int bits_of(PyObject *v, uint64_t *b, Py_ssize_t words) {
    if (!PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "a bitset is an int");
        return -1;
    }
    size_t size = (size_t)words * sizeof(uint64_t);
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t need = PyLong_AsNativeBytes(v, b, (Py_ssize_t)size, Py_ASNATIVEBYTES_LITTLE_ENDIAN
                                           | Py_ASNATIVEBYTES_UNSIGNED_BUFFER | Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    if (need < 0) return -1;
    if ((size_t)need > size) {
        PyErr_SetString(PyExc_OverflowError, "a bitset with a bit past the last paper");
        return -1;
    }
    return 0;
#else
    /* OverflowError for a negative int or one with a bit past the last paper */
    return _PyLong_AsByteArray((PyLongObject *)v, (unsigned char *)b, size, 1, 0);
#endif
}

static PyObject *row_int(ScanState *st, int32_t row) {
    return int_of(st->bits + (size_t)row * (size_t)st->words, st->words);
}

/* scan(texts, stems, columns, keep, first, second)
 *     -> (bits by word id, {stem: bits}, [{stem: bits} per kept column], [j: first[j] and second[j] meet])
 *
 * texts: `columns` texts per paper, paper-major; bit i of a bitset is paper i. stems[id] names word id.
 * keep: the text columns (0 .. columns-1) to return bitsets of their own for. first, second: word ids (int32
 * buffers of one length, array("i")), pairs of words in some paper together listed by index (the two words of
 * a phrase, which can only be where both are: the Python way tests every pair). Every word must have been
 * added (KeyError names the first that was not). Bitsets are little-endian uint64 words: this assumes a
 * little-endian machine, checked at import. */
static PyObject *Table_scan(Table *t, PyObject *args) {
    PyObject *texts, *stems, *keep;
    Py_ssize_t columns;
    Py_buffer first, second;
    if (!PyArg_ParseTuple(args, "OO!nOy*y*:scan", &texts, &PyList_Type, &stems, &columns, &keep, &first, &second))
        return NULL;
    PyObject *seq = NULL, *kept = NULL;
    ScanState st = {0};
    PyObject *result = NULL, *all = NULL, *anyb = NULL, *cols = NULL, *both = NULL, *zero = NULL;
    if (columns < 1 || columns > 8) {
        PyErr_SetString(PyExc_ValueError, "columns is 1 to 8");
        goto done;
    }
    if (first.len != second.len || first.len % (Py_ssize_t)sizeof(int32_t) != 0) {
        PyErr_SetString(PyExc_ValueError, "first and second are int32 buffers of one length");
        goto done;
    }
    seq = PySequence_Fast(texts, "texts must be a sequence");
    if (seq == NULL) goto done;
    kept = PySequence_Fast(keep, "keep must be a sequence");
    if (kept == NULL) goto done;
    st.t = t;
    st.columns = columns;
    st.nwords = PyList_GET_SIZE(stems);
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count % columns != 0) {
        PyErr_SetString(PyExc_ValueError, "texts must hold `columns` texts per paper");
        goto done;
    }
    Py_ssize_t docs = count / columns;
    st.words = docs ? (docs + 63) / 64 : 1;
    Py_ssize_t nkeep = PySequence_Fast_GET_SIZE(kept);
    if (nkeep > 7) {
        PyErr_SetString(PyExc_ValueError, "at most 7 kept columns");
        goto done;
    }
    for (Py_ssize_t j = 0; j < nkeep; j++) {
        Py_ssize_t c = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(kept, j));
        if (c == -1 && PyErr_Occurred()) goto done;
        if (c < 0 || c >= columns) {
            PyErr_SetString(PyExc_ValueError, "a kept column out of range");
            goto done;
        }
        st.slot_of[c] = (int)j + 1;
    }
    st.slots = nkeep + 1;
    st.row_of = PyMem_Malloc(((size_t)st.nwords * (size_t)st.slots + 1) * sizeof(int32_t));
    if (st.row_of == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memset(st.row_of, 0xFF, ((size_t)st.nwords * (size_t)st.slots + 1) * sizeof(int32_t));
    if (each_word(seq, note_word, &st) != 0) goto done;
    all = PyList_New(st.nwords);
    anyb = PyDict_New();
    cols = PyList_New(nkeep);
    if (all == NULL || anyb == NULL || cols == NULL) goto done;
    for (Py_ssize_t j = 0; j < nkeep; j++) {
        PyObject *d = PyDict_New();
        if (d == NULL) goto done;
        PyList_SET_ITEM(cols, j, d);
    }
    zero = PyLong_FromLong(0);
    if (zero == NULL) goto done;
    for (Py_ssize_t id = 0; id < st.nwords; id++) {
        int32_t *r = &st.row_of[(size_t)id * (size_t)st.slots];
        if (r[0] < 0) {
            Py_INCREF(zero);
            PyList_SET_ITEM(all, id, zero);
            continue;
        }
        PyObject *stem = PyList_GET_ITEM(stems, id);
        PyObject *b = row_int(&st, r[0]);
        if (b == NULL) goto done;
        PyList_SET_ITEM(all, id, b);
        if (PyDict_SetItem(anyb, stem, b) < 0) goto done;
        for (Py_ssize_t j = 1; j < st.slots; j++) {
            if (r[j] < 0) continue;
            PyObject *cb = row_int(&st, r[j]);
            int bad = cb == NULL || PyDict_SetItem(PyList_GET_ITEM(cols, j - 1), stem, cb) < 0;
            Py_XDECREF(cb);
            if (bad) goto done;
        }
    }
    both = PyList_New(0);
    if (both == NULL) goto done;
    const int32_t *a = first.buf, *b = second.buf;
    for (Py_ssize_t j = 0; j < first.len / (Py_ssize_t)sizeof(int32_t); j++) {
        if (a[j] < 0 || a[j] >= st.nwords || b[j] < 0 || b[j] >= st.nwords) {
            PyErr_SetString(PyExc_IndexError, "a pair's word id beyond the stems given");
            goto done;
        }
        int32_t ra = st.row_of[(size_t)a[j] * (size_t)st.slots], rb = st.row_of[(size_t)b[j] * (size_t)st.slots];
        if (ra < 0 || rb < 0) continue;
        const uint64_t *x = st.bits + (size_t)ra * (size_t)st.words, *y = st.bits + (size_t)rb * (size_t)st.words;
        for (Py_ssize_t w = 0; w < st.words; w++) {
            if (x[w] & y[w]) {
                PyObject *jj = PyLong_FromSsize_t(j);
                int bad = jj == NULL || PyList_Append(both, jj) < 0;
                Py_XDECREF(jj);
                if (bad) goto done;
                break;
            }
        }
    }
    result = PyTuple_Pack(4, all, anyb, cols, both);
done:
    Py_XDECREF(all);
    Py_XDECREF(anyb);
    Py_XDECREF(cols);
    Py_XDECREF(both);
    Py_XDECREF(zero);
    PyMem_Free(st.row_of);
    PyMem_Free(st.bits);
    Py_XDECREF(kept);
    Py_XDECREF(seq);
    PyBuffer_Release(&first);
    PyBuffer_Release(&second);
    return result;
}

static Py_ssize_t Table_len(Table *t) { return (Py_ssize_t)t->used; }

/* The set bits of a bitset, ascending, into `at`; returns how many (-1: an error). */
static Py_ssize_t positions(PyObject *v, uint64_t *buf, Py_ssize_t words, int32_t *at) {
    if (bits_of(v, buf, words) < 0) return -1;
    Py_ssize_t n = 0;
    for (Py_ssize_t w = 0; w < words; w++) {
        for (uint64_t x = buf[w]; x; x &= x - 1) at[n++] = (int32_t)(w * 64 + __builtin_ctzll(x));
    }
    return n;
}

/* One group's answer: ((paper, terms), ...) for the papers at `at`; terms are `texts` for every paper, or, when
 * `per_paper`, those of `texts` whose leaf (ids[k] in lb) has the paper's bit. */
static PyObject *found_of(PyObject *papers, const int32_t *at, Py_ssize_t n, PyObject *texts, PyObject *ids,
                          PyObject *lb, int per_paper, Py_ssize_t words) {
    PyObject *found = PyTuple_New(n);
    if (found == NULL) return NULL;
    Py_ssize_t nids = per_paper ? PyTuple_GET_SIZE(ids) : 0;
    uint64_t *leaf = NULL;
    if (per_paper) {
        if (PyTuple_GET_SIZE(texts) != nids) {
            PyErr_SetString(PyExc_ValueError, "a group's texts and ids differ in length");
            goto fail;
        }
        leaf = PyMem_Calloc((size_t)(nids * words) + 1, sizeof(uint64_t));
        if (leaf == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (Py_ssize_t k = 0; k < nids; k++) {
            Py_ssize_t j = PyLong_AsSsize_t(PyTuple_GET_ITEM(ids, k));
            if (j == -1 && PyErr_Occurred()) goto fail;
            if (j < 0 || j >= PyList_GET_SIZE(lb)) {
                PyErr_SetString(PyExc_IndexError, "a leaf id past the leaves' bitsets");
                goto fail;
            }
            if (bits_of(PyList_GET_ITEM(lb, j), leaf + k * words, words) < 0) goto fail;
        }
    }
    for (Py_ssize_t m = 0; m < n; m++) {
        PyObject *terms = texts;
        Py_INCREF(terms);
        if (per_paper) {
            Py_DECREF(terms);
            terms = PyList_New(0);
            if (terms == NULL) goto fail;
            int32_t i = at[m];
            for (Py_ssize_t k = 0; k < nids; k++) {
                if (!(leaf[k * words + (i >> 6)] >> (i & 63) & 1)) continue;
                if (PyList_Append(terms, PyTuple_GET_ITEM(texts, k)) < 0) {
                    Py_DECREF(terms);
                    goto fail;
                }
            }
            Py_SETREF(terms, PyList_AsTuple(terms));
            if (terms == NULL) goto fail;
        }
        PyObject *pair = PyTuple_Pack(2, PyList_GET_ITEM(papers, at[m]), terms);
        Py_DECREF(terms);
        if (pair == NULL) goto fail;
        PyObject_GC_UnTrack(pair); /* see answers() */
        PyTuple_SET_ITEM(found, m, pair);
    }
    PyMem_Free(leaf);
    PyObject_GC_UnTrack(found);
    return found;
fail:
    PyMem_Free(leaf);
    Py_DECREF(found);
    return NULL;
}

/* answers(hits, groups, groups_of, some_of, papers, lb) -> [(key, found), ...]: bot.matching._match's loop.
 *
 * The answer tuples are left out of the cyclic garbage collector: they are immutable and hold papers, strings
 * and other answer tuples only, so no cycle can run through them (an untracked tuple in a cycle would leak,
 * never crash). The collector otherwise scans each of them (about 100,000 for 1,000 papers x 100k alerts) at the
 * first collection after a batch: 20-25 ms, a fifth of the whole batch (measured with gc.callbacks). */
static PyObject *answers(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *hits, *groups, *groups_of, *some_of, *papers, *lb;
    if (!PyArg_ParseTuple(args, "O!O!OOO!O!:answers", &PyList_Type, &hits, &PyDict_Type, &groups, &groups_of,
                          &some_of, &PyList_Type, &papers, &PyList_Type, &lb))
        return NULL;
    if (!PyAnySet_Check(some_of)) {
        PyErr_SetString(PyExc_TypeError, "some_of must be a set");
        return NULL;
    }
    Py_ssize_t np = PyList_GET_SIZE(papers), words = np ? (np + 63) / 64 : 1;
    uint64_t *buf = PyMem_Malloc((size_t)words * sizeof(uint64_t));
    int32_t *at = PyMem_Malloc(((size_t)np + 1) * sizeof(int32_t));
    PyObject *out = PyList_New(0);
    if (buf == NULL || at == NULL || out == NULL) {
        if (out != NULL) PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t h = 0; h < PyList_GET_SIZE(hits); h++) {
        PyObject *hit = PyList_GET_ITEM(hits, h);
        if (!PyTuple_Check(hit) || PyTuple_GET_SIZE(hit) != 2) {
            PyErr_SetString(PyExc_TypeError, "a hit is (plan id, bitset)");
            goto fail;
        }
        PyObject *pid = PyTuple_GET_ITEM(hit, 0);
        Py_ssize_t n = positions(PyTuple_GET_ITEM(hit, 1), buf, words, at);
        if (n < 0) goto fail;
        PyObject *gs = PyDict_GetItemWithError(groups, pid);
        if (gs != NULL) Py_INCREF(gs);
        else if (PyErr_Occurred() || (gs = PyObject_CallOneArg(groups_of, pid)) == NULL) goto fail;
        int some = PySet_Contains(some_of, pid);
        if (some < 0 || !PyList_Check(gs)) {
            if (some >= 0) PyErr_SetString(PyExc_TypeError, "a plan's groups are a list");
            Py_DECREF(gs);
            goto fail;
        }
        for (Py_ssize_t g = 0; g < PyList_GET_SIZE(gs); g++) {
            PyObject *group = PyList_GET_ITEM(gs, g);
            if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) != 3 || !PyTuple_Check(PyTuple_GET_ITEM(group, 0))
                || !PyTuple_Check(PyTuple_GET_ITEM(group, 1)) || !PyList_Check(PyTuple_GET_ITEM(group, 2))) {
                PyErr_SetString(PyExc_TypeError, "a group is (texts, ids, keys)");
                Py_DECREF(gs);
                goto fail;
            }
            PyObject *texts = PyTuple_GET_ITEM(group, 0), *ids = PyTuple_GET_ITEM(group, 1);
            PyObject *keys = PyTuple_GET_ITEM(group, 2);
            int per_paper = some && PyTuple_GET_SIZE(ids) != 1;
            PyObject *found = found_of(papers, at, n, texts, ids, lb, per_paper, words);
            if (found == NULL) {
                Py_DECREF(gs);
                goto fail;
            }
            for (Py_ssize_t k = 0; k < PyList_GET_SIZE(keys); k++) {
                PyObject *pair = PyTuple_Pack(2, PyList_GET_ITEM(keys, k), found);
                if (pair != NULL) PyObject_GC_UnTrack(pair);
                if (pair == NULL || PyList_Append(out, pair) < 0) {
                    Py_XDECREF(pair);
                    Py_DECREF(found);
                    Py_DECREF(gs);
                    goto fail;
                }
                Py_DECREF(pair);
            }
            Py_DECREF(found);
        }
        Py_DECREF(gs);
    }
    PyMem_Free(buf);
    PyMem_Free(at);
    return out;
fail:
    PyMem_Free(buf);
    PyMem_Free(at);
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"answers", (PyCFunction)answers, METH_VARARGS,
     "answers(hits, groups, groups_of, some_of, papers, lb) -> [(key, ((paper, terms), ...)), ...]."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Table_methods[] = {
    {"add", (PyCFunction)Table_add, METH_VARARGS,
     "add(word, ids): the raw word (lower-case ASCII letters and digits) is the named words `ids` (none: known, "
     "asks for nothing)."},
    {"unknown", (PyCFunction)Table_unknown, METH_O, "unknown(texts): the set of the texts' words not added yet."},
    {"scan", (PyCFunction)Table_scan, METH_VARARGS,
     "scan(texts, stems, columns, keep, first, second) -> (bits by word id, {stem: bits}, [{stem: bits} per kept "
     "column], [j: words first[j] and second[j] meet in a paper])."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Table_as_sequence = {.sq_length = (lenfunc)Table_len};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bot._scan.Table",
    .tp_basicsize = sizeof(Table),
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Raw ASCII words -> the ids of the named words they are; see the module docstring.",
    .tp_methods = Table_methods,
    .tp_as_sequence = &Table_as_sequence,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT, .m_name = "bot._scan",
    .m_doc = "The per-word part of alert matching, compiled (see bot/matching.py).", .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__scan(void) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "bot._scan assumes a little-endian machine");
        return NULL;
    }
    init_fold();
    if (PyType_Ready(&TableType) < 0) return NULL;
    PyObject *m = PyModule_Create(&scan_module);
    if (m == NULL) return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
