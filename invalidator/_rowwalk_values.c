/* Values as invalidator/rowparse.py and RowCodec.from_binlog write them, for the compiled
 * row walk (_rowwalk.c): integers as text, and a row's JSON object in Plan's buffer.
 * tests/test_invalidator_fastrows.py holds them to the Python path's bytes. */
#include "_rowwalk.h"

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
int rw_int_text(const ColSpec *c, const unsigned char *v, char *out) {
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
        int n = rw_int_text(c, v, text);
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
PyObject *rw_row_value(Plan *p, const unsigned char *d, const Span *spans) {
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
