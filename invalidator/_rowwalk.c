/* The row walk of invalidator/rowparse.py and the effects of invalidator/rules.py for the
 * common table (one entity, one integer key column, no list), compiled.
 *
 * A Plan is built once per table map by invalidator/fastrows.py, which decides whether a
 * table qualifies.  Plan.apply(data, start, end, operation, ops) walks every row image of
 * one rows event and records in ``ops`` (a Batch's dict) what the Python path records:
 * in delete mode the key of each image, in refresh mode the before image's key (when the
 * key changed) and the after image's JSON bytes, as RowCodec.from_binlog writes them.
 *
 * It returns True when every row was handled and the images end exactly at ``end``.  On
 * anything else (malformed bytes, a NULL key, invalid UTF-8, a value the library's
 * decode would raise on) it returns False, having recorded only what the Python path
 * records for the rows before, in the same order: the caller then runs the Python path
 * over the whole event, which reproduces those entries and decides what the rest does.
 * tests/test_invalidator_fastrows.py holds both paths to the same bytes.
 *
 * The op format is not known here: invalidator/apply.py owns it and fastrows.py hands
 * over its pieces, OP_DELETE as Plan's delete_op and write_prefix(ttl) as write_prefix
 * (a stored value's op is write_prefix + the JSON object).  The operation codes of
 * Plan.apply are exported as INSERT, UPDATE and DELETE.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { K_SKIP = 0, K_INT = 1, K_UTF8 = 2, K_TIMESTAMP2 = 3, K_DATETIME2 = 4, K_DATE = 5 };
enum { ROWS_INSERT = 0, ROWS_UPDATE = 1, ROWS_DELETE = 2 };

typedef struct {
    int size;        /* fixed size, 0 when length-prefixed */
    int prefix;      /* length-prefix bytes (1..4) */
    int kind;        /* how the value is written in refresh mode (K_*) */
    int fsp;         /* fractional digits of a temporal column */
    int is_unsigned; /* integers */
} ColSpec;

typedef struct {
    Py_ssize_t off;
    Py_ssize_t len;
    int null;
} Span;

typedef struct {
    int column;      /* table column index */
    char *name;      /* "name": as JSON, UTF-8 */
    Py_ssize_t name_len;
} Served;

typedef struct {
    PyObject_HEAD
    int ncols;
    ColSpec *cols;
    Span *before, *after;
    int key;
    char *key_prefix, *key_suffix;
    Py_ssize_t key_prefix_len, key_suffix_len;
    PyObject *delete_op;   /* bytes */
    int nserved;           /* 0: delete mode */
    Served *served;
    PyObject *write_prefix; /* bytes: OP_SET + "<ttl> ", refresh mode */
    char *buf;
    Py_ssize_t cap;
} Plan;

/* ------------------------------------------------------------ buffer */

static int reserve(Plan *p, Py_ssize_t used, Py_ssize_t more) {
    if (used + more <= p->cap)
        return 0;
    Py_ssize_t cap = p->cap ? p->cap : 1024;
    while (cap < used + more)
        cap *= 2;
    char *buf = PyMem_Realloc(p->buf, (size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->buf = buf;
    p->cap = cap;
    return 0;
}

/* ------------------------------------------------------------- walking */

/* The spans of one image at *pos (every column present: FULL row image); -1 if malformed. */
static int walk(const Plan *p, const unsigned char *d, Py_ssize_t *pos, Py_ssize_t end, Span *spans) {
    Py_ssize_t o = *pos;
    Py_ssize_t nbytes = (p->ncols + 7) / 8;
    if (o + nbytes > end)
        return -1;
    const unsigned char *nulls = d + o;
    o += nbytes;
    for (int i = 0; i < p->ncols; i++) {
        const ColSpec *c = &p->cols[i];
        if (nulls[i >> 3] >> (i & 7) & 1) {
            spans[i].null = 1;
            spans[i].off = o;
            spans[i].len = 0;
            continue;
        }
        Py_ssize_t len;
        if (c->prefix) {
            if (o + c->prefix > end)
                return -1;
            len = 0;
            for (int b = c->prefix - 1; b >= 0; b--)
                len = (len << 8) | d[o + b];
            o += c->prefix;
        } else {
            len = c->size;
        }
        if (len > end - o)
            return -1;
        spans[i].null = 0;
        spans[i].off = o;
        spans[i].len = len;
        o += len;
    }
    *pos = o;
    return 0;
}

/* An integer column as the library reads it: little-endian, signed unless unsigned. */
static void read_int(const ColSpec *c, const unsigned char *v, int64_t *s, uint64_t *u, int *neg) {
    uint64_t x = 0;
    for (int b = c->size - 1; b >= 0; b--)
        x = (x << 8) | v[b];
    *neg = 0;
    if (!c->is_unsigned && c->size < 8 && (x >> (c->size * 8 - 1)) & 1) {
        *s = (int64_t)x - ((int64_t)1 << (c->size * 8));
        *neg = 1;
    } else if (!c->is_unsigned && c->size == 8 && (x >> 63)) {
        *s = (int64_t)x;
        *neg = 1;
    }
    *u = x;
}

/* Decimal text of an integer column into out (>= 21 bytes); returns the length. */
static int int_text(const ColSpec *c, const unsigned char *v, char *out) {
    int64_t s;
    uint64_t u;
    int neg;
    read_int(c, v, &s, &u, &neg);
    char tmp[24];
    int n = 0;
    uint64_t m = neg ? (uint64_t)0 - (uint64_t)s : u;
    do {
        tmp[n++] = (char)('0' + m % 10);
        m /= 10;
    } while (m);
    int k = 0;
    if (neg)
        out[k++] = '-';
    while (n)
        out[k++] = tmp[--n];
    return k;
}

/* The key of one image as a str (prefix + integer text + suffix); NULL + no error if NULL. */
static PyObject *key_of(Plan *p, const unsigned char *d, const Span *spans) {
    const Span *s = &spans[p->key];
    if (s->null)
        return NULL;
    char text[24];
    int n = int_text(&p->cols[p->key], d + s->off, text);
    Py_ssize_t total = p->key_prefix_len + n + p->key_suffix_len;
    char small[256];
    char *buf = total <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)total);
    if (buf == NULL)
        return PyErr_NoMemory();
    memcpy(buf, p->key_prefix, (size_t)p->key_prefix_len);
    memcpy(buf + p->key_prefix_len, text, (size_t)n);
    memcpy(buf + p->key_prefix_len + n, p->key_suffix, (size_t)p->key_suffix_len);
    PyObject *key = PyUnicode_DecodeUTF8(buf, total, "strict");
    if (buf != small)
        PyMem_Free(buf);
    return key;
}

static int same_key(const Plan *p, const unsigned char *d, const Span *a, const Span *b) {
    const Span *x = &a[p->key], *y = &b[p->key];
    return x->len == y->len && memcmp(d + x->off, d + y->off, (size_t)x->len) == 0;
}

/* ------------------------------------------------------------ JSON values */

static const char HEX[] = "0123456789abcdef";

/* Length of a strict UTF-8 sequence starting at s (Python's decoder's rules); 0 if invalid. */
static int utf8_seq(const unsigned char *s, Py_ssize_t left) {
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return left >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (left < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0)
            return 0; /* surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (left < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && s[1] >= 0x90)
            return 0; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

/* A JSON string as json.dumps(ensure_ascii=False) writes it; -1 on invalid UTF-8 (fall back). */
static int put_string(Plan *p, Py_ssize_t *used, const unsigned char *s, Py_ssize_t n) {
    if (reserve(p, *used, n * 6 + 2) < 0)
        return -2;
    char *o = p->buf + *used;
    *o++ = '"';
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x80) {
            int k = utf8_seq(s + i, n - i);
            if (!k)
                return -1;
            memcpy(o, s + i, (size_t)k);
            o += k;
            i += k;
            continue;
        }
        i++;
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c >= 0x20) {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            switch (c) {
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u'; *o++ = '0'; *o++ = '0';
                *o++ = HEX[c >> 4]; *o++ = HEX[c & 15];
            }
        }
    }
    *o++ = '"';
    *used = o - p->buf;
    return 0;
}

static int leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int y, int m) {
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : dim[m - 1];
}

/* The microseconds of a TIME2/DATETIME2/TIMESTAMP2 fraction, as rowparse._fraction. */
static long fraction(const unsigned char *v, int fsp) {
    static const int bytes[] = {0, 1, 1, 2, 2, 3, 3};
    if (fsp <= 0 || fsp > 6)
        return 0;
    int n = bytes[fsp];
    long x = 0;
    for (int b = 0; b < n; b++)
        x = (x << 8) | v[b];
    if (x >> (n * 8 - 1) & 1)
        x -= 1L << (n * 8); /* signed, big-endian */
    if (fsp % 2)
        x /= 10; /* int(micro / 10): toward zero */
    for (int k = fsp; k < 6; k++)
        x *= 10;
    return x;
}

static char *digits(char *o, int value, int width) {
    for (int k = width - 1; k >= 0; k--) {
        o[k] = (char)('0' + value % 10);
        value /= 10;
    }
    return o + width;
}

/* "YYYY-MM-DDTHH:MM:SS[.f...]<zone>" with quotes; micro > 999999 -> -1 (Python raises: fall back). */
static int put_datetime(Plan *p, Py_ssize_t *used, int y, int mo, int d, int h, int mi, int s,
                        long micro, int fsp, char zone) {
    if (micro > 999999)
        return -1;
    if (micro < 0)
        micro = 0; /* the library keeps the whole second: replace() only for micro > 0 */
    if (reserve(p, *used, 32) < 0)
        return -2;
    char *o = p->buf + *used;
    *o++ = '"';
    o = digits(o, y, 4); *o++ = '-';
    o = digits(o, mo, 2); *o++ = '-';
    o = digits(o, d, 2); *o++ = 'T';
    o = digits(o, h, 2); *o++ = ':';
    o = digits(o, mi, 2); *o++ = ':';
    o = digits(o, s, 2);
    if (fsp > 0) {
        char frac[6];
        digits(frac, (int)micro, 6);
        *o++ = '.';
        memcpy(o, frac, (size_t)fsp);
        o += fsp;
    }
    if (zone)
        *o++ = zone;
    *o++ = '"';
    *used = o - p->buf;
    return 0;
}

static int put_raw(Plan *p, Py_ssize_t *used, const char *s, Py_ssize_t n) {
    if (reserve(p, *used, n) < 0)
        return -2;
    memcpy(p->buf + *used, s, (size_t)n);
    *used += n;
    return 0;
}

/* One column's JSON; 0 ok, -1 fall back, -2 error set. */
static int put_value(Plan *p, Py_ssize_t *used, const unsigned char *d, const Span *sp, const ColSpec *c) {
    if (sp->null)
        return put_raw(p, used, "null", 4);
    const unsigned char *v = d + sp->off;
    switch (c->kind) {
    case K_INT: {
        char text[24];
        int n = int_text(c, v, text);
        return put_raw(p, used, text, n);
    }
    case K_UTF8:
        return put_string(p, used, v, sp->len);
    case K_TIMESTAMP2: {
        long long secs = (long long)(int32_t)((uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3]);
        if (secs < 0)
            return -1;
        long micro = fraction(v + 4, c->fsp);
        if (secs == 0 && micro <= 0)
            return put_raw(p, used, "null", 4); /* the zero timestamp */
        long long days = secs / 86400, rem = secs % 86400;
        /* civil from days (H. Hinnant) */
        long long z = days + 719468, era = z / 146097;
        long long doe = z - era * 146097;
        long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        long long mp = (5 * doy + 2) / 153;
        int day = (int)(doy - (153 * mp + 2) / 5 + 1);
        int month = (int)(mp < 10 ? mp + 3 : mp - 9);
        int year = (int)(yoe + era * 400 + (month <= 2));
        return put_datetime(p, used, year, month, day, (int)(rem / 3600), (int)(rem / 60 % 60),
                            (int)(rem % 60), micro, c->fsp, 'Z');
    }
    case K_DATETIME2: {
        uint64_t b = 0;
        for (int k = 0; k < 5; k++)
            b = (b << 8) | v[k];
        int ym = (int)((b >> 22) & 0x1FFFF);
        int year = ym / 13, month = ym % 13, day = (int)((b >> 17) & 0x1F);
        int hour = (int)((b >> 12) & 0x1F), minute = (int)((b >> 6) & 0x3F), second = (int)(b & 0x3F);
        if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)
            || hour > 23 || minute > 59 || second > 59)
            return put_raw(p, used, "null", 4); /* out of DATETIME2 range: None */
        return put_datetime(p, used, year, month, day, hour, minute, second, fraction(v + 5, c->fsp), c->fsp, 0);
    }
    case K_DATE: {
        unsigned x = v[0] | v[1] << 8 | v[2] << 16;
        int year = (int)((x >> 9) & 0x7FFF), month = (int)((x >> 5) & 0xF), day = (int)(x & 0x1F);
        if (x == 0 || year == 0 || month == 0 || day == 0)
            return put_raw(p, used, "null", 4);
        if (year > 9999 || month > 12 || day > days_in_month(year, month))
            return -1; /* datetime.date raises: the Python path decides */
        if (reserve(p, *used, 12) < 0)
            return -2;
        char *o = p->buf + *used;
        *o++ = '"';
        o = digits(o, year, 4); *o++ = '-';
        o = digits(o, month, 2); *o++ = '-';
        o = digits(o, day, 2);
        *o++ = '"';
        *used = o - p->buf;
        return 0;
    }
    default:
        return -1;
    }
}

/* The after image's value for ops: write_prefix + JSON object; NULL + no error: fall back. */
static PyObject *row_value(Plan *p, const unsigned char *d, const Span *spans) {
    Py_ssize_t used = 0;
    int r = put_raw(p, &used, PyBytes_AS_STRING(p->write_prefix), PyBytes_GET_SIZE(p->write_prefix));
    if (r == 0)
        r = put_raw(p, &used, "{", 1);
    for (int j = 0; r == 0 && j < p->nserved; j++) {
        const Served *s = &p->served[j];
        if (j)
            r = put_raw(p, &used, ",", 1);
        if (r == 0)
            r = put_raw(p, &used, s->name, s->name_len);
        if (r == 0)
            r = put_value(p, &used, d, &spans[s->column], &p->cols[s->column]);
    }
    if (r == 0)
        r = put_raw(p, &used, "}", 1);
    if (r < 0)
        return NULL;
    return PyBytes_FromStringAndSize(p->buf, used);
}

/* ------------------------------------------------------------- Plan.apply */

static int record(PyObject *ops, PyObject *key, PyObject *value) {
    int r = PyDict_SetItem(ops, key, value);
    Py_DECREF(key);
    return r;
}

static PyObject *Plan_apply(Plan *p, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, end;
    int operation;
    PyObject *ops;
    if (!PyArg_ParseTuple(args, "y*nniO!", &view, &start, &end, &operation, &PyDict_Type, &ops))
        return NULL;
    const unsigned char *d = view.buf;
    int ok = 1;
    if (start < 0 || end > view.len || start > end || operation < ROWS_INSERT || operation > ROWS_DELETE)
        ok = 0;
    Py_ssize_t o = start;
    int refresh = p->nserved > 0;
    while (ok && o < end) {
        int has_before = operation != ROWS_INSERT, has_after = operation != ROWS_DELETE;
        if (has_before && walk(p, d, &o, end, p->before) < 0) { ok = 0; break; }
        if (has_after && walk(p, d, &o, end, p->after) < 0) { ok = 0; break; }
        if ((has_before && p->before[p->key].null) || (has_after && p->after[p->key].null)) { ok = 0; break; }
        PyObject *value = NULL;
        if (has_after && refresh) {
            value = row_value(p, d, p->after);
            if (value == NULL) {
                if (PyErr_Occurred())
                    goto error;
                ok = 0;
                break;
            }
        }
        if (has_before && !(has_after && same_key(p, d, p->before, p->after))) {
            PyObject *key = key_of(p, d, p->before);
            if (key == NULL || record(ops, key, p->delete_op) < 0) {
                Py_XDECREF(value);
                goto error;
            }
        }
        if (has_after) {
            PyObject *key = key_of(p, d, p->after);
            int r = key == NULL ? -1 : record(ops, key, value != NULL ? value : p->delete_op);
            Py_XDECREF(value);
            if (r < 0)
                goto error;
        }
    }
    if (o != end)
        ok = 0;
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
error:
    PyBuffer_Release(&view);
    return NULL;
}

/* ------------------------------------------------------------ Plan() */

static char *copy_utf8(PyObject *s, Py_ssize_t *len) {
    const char *u = PyUnicode_AsUTF8AndSize(s, len);
    if (u == NULL)
        return NULL;
    char *out = PyMem_Malloc((size_t)*len + 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, u, (size_t)*len + 1);
    return out;
}

static void Plan_dealloc(Plan *p) {
    PyMem_Free(p->cols);
    PyMem_Free(p->before);
    PyMem_Free(p->after);
    PyMem_Free(p->key_prefix);
    PyMem_Free(p->key_suffix);
    Py_XDECREF(p->delete_op);
    for (int j = 0; p->served && j < p->nserved; j++)
        PyMem_Free(p->served[j].name);
    PyMem_Free(p->served);
    Py_XDECREF(p->write_prefix);
    PyMem_Free(p->buf);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

/* Plan(columns, key, key_prefix, key_suffix, delete_op, served, write_prefix)
 *   columns: ((size, prefix, kind, fsp, unsigned), ...) for every table column
 *   served: ((column index, b'"name":'), ...), empty in delete mode; write_prefix: bytes or None */
static int Plan_init(Plan *p, PyObject *args, PyObject *kwargs) {
    PyObject *columns, *prefix, *suffix, *delete_op, *served, *write_prefix;
    int key;
    static char *names[] = {"columns", "key", "key_prefix", "key_suffix", "delete_op", "served", "write_prefix", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!iUUSO!O", names, &PyTuple_Type, &columns, &key, &prefix,
                                     &suffix, &delete_op, &PyTuple_Type, &served, &write_prefix))
        return -1;
    if (p->cols != NULL) {
        PyErr_SetString(PyExc_TypeError, "a Plan is initialised once");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(columns);
    if (n < 1 || n > 4096 || key < 0 || key >= n) {
        PyErr_SetString(PyExc_ValueError, "1 to 4096 columns, and the key one of them");
        return -1;
    }
    p->ncols = (int)n;
    p->cols = PyMem_Calloc((size_t)n, sizeof(ColSpec));
    p->before = PyMem_Calloc((size_t)n, sizeof(Span));
    p->after = PyMem_Calloc((size_t)n, sizeof(Span));
    if (!p->cols || !p->before || !p->after) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ColSpec *c = &p->cols[i];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(columns, i), "iiiip", &c->size, &c->prefix, &c->kind, &c->fsp,
                              &c->is_unsigned))
            return -1;
        if (c->size < 0 || c->prefix < 0 || c->prefix > 4 || (c->size == 0) == (c->prefix == 0)
            || c->kind < K_SKIP || c->kind > K_DATE || c->fsp < 0 || c->fsp > 6) {
            PyErr_Format(PyExc_ValueError, "column %zd: a fixed size or a length prefix, a known kind", i);
            return -1;
        }
        int need = c->kind == K_INT ? -1 : c->kind == K_TIMESTAMP2 ? 4 + (c->fsp + 1) / 2
                 : c->kind == K_DATETIME2 ? 5 + (c->fsp + 1) / 2 : c->kind == K_DATE ? 3 : 0;
        if ((c->kind == K_INT && !(c->size == 1 || c->size == 2 || c->size == 3 || c->size == 4 || c->size == 8))
            || (need > 0 && c->size != need) || (c->kind == K_UTF8 && !c->prefix)) {
            PyErr_Format(PyExc_ValueError, "column %zd: its size does not fit its kind", i);
            return -1;
        }
    }
    if (p->cols[key].kind != K_INT) {
        PyErr_SetString(PyExc_ValueError, "the key column must be an integer");
        return -1;
    }
    p->key = key;
    if (!(p->key_prefix = copy_utf8(prefix, &p->key_prefix_len)) || !(p->key_suffix = copy_utf8(suffix, &p->key_suffix_len)))
        return -1;
    Py_INCREF(delete_op);
    p->delete_op = delete_op;
    Py_ssize_t m = PyTuple_GET_SIZE(served);
    if (m) {
        if (!PyBytes_Check(write_prefix)) {
            PyErr_SetString(PyExc_TypeError, "refresh mode needs write_prefix bytes");
            return -1;
        }
        p->served = PyMem_Calloc((size_t)m, sizeof(Served));
        if (!p->served) {
            PyErr_NoMemory();
            return -1;
        }
        p->nserved = (int)m;
        for (Py_ssize_t j = 0; j < m; j++) {
            const char *name;
            Py_ssize_t len;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(served, j), "iy#", &p->served[j].column, &name, &len))
                return -1;
            int col = p->served[j].column;
            if (col < 0 || col >= n || p->cols[col].kind == K_SKIP) {
                PyErr_Format(PyExc_ValueError, "served column %zd: not a written column of the table", j);
                return -1;
            }
            if (!(p->served[j].name = PyMem_Malloc((size_t)len + 1))) {
                PyErr_NoMemory();
                return -1;
            }
            memcpy(p->served[j].name, name, (size_t)len);
            p->served[j].name_len = len;
        }
        Py_INCREF(write_prefix);
        p->write_prefix = write_prefix;
    }
    return 0;
}

static PyMethodDef Plan_methods[] = {
    {"apply", (PyCFunction)Plan_apply, METH_VARARGS,
     "apply(data, start, end, operation, ops) -> bool: record the rows' effects in ops; False: use the Python path"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "invalidator._rowwalk.Plan",
    .tp_basicsize = sizeof(Plan),
    .tp_dealloc = (destructor)Plan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The compiled row walk for one table map (see invalidator/fastrows.py).",
    .tp_methods = Plan_methods,
    .tp_init = (initproc)Plan_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "invalidator._rowwalk",
    .m_doc = "Compiled row walk (see invalidator/fastrows.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__rowwalk(void) {
    if (PyType_Ready(&PlanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PlanType);
    if (PyModule_AddObject(m, "Plan", (PyObject *)&PlanType) < 0
        || PyModule_AddIntConstant(m, "SKIP", K_SKIP) < 0 || PyModule_AddIntConstant(m, "INT", K_INT) < 0
        || PyModule_AddIntConstant(m, "UTF8", K_UTF8) < 0 || PyModule_AddIntConstant(m, "TIMESTAMP2", K_TIMESTAMP2) < 0
        || PyModule_AddIntConstant(m, "DATETIME2", K_DATETIME2) < 0 || PyModule_AddIntConstant(m, "DATE", K_DATE) < 0
        || PyModule_AddIntConstant(m, "INSERT", ROWS_INSERT) < 0 || PyModule_AddIntConstant(m, "UPDATE", ROWS_UPDATE) < 0
        || PyModule_AddIntConstant(m, "DELETE", ROWS_DELETE) < 0) {
        Py_DECREF(&PlanType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
