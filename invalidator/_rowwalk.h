/* What invalidator/_rowwalk.c (the walk, Plan) and _rowwalk_values.c (integers and JSON
 * values as the Python path writes them) share: the Plan and its column specs. */
#ifndef CACHETAIL_ROWWALK_H
#define CACHETAIL_ROWWALK_H

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

/* Decimal text of an integer column into out (>= 21 bytes); returns the length. */
int rw_int_text(const ColSpec *c, const unsigned char *v, char *out);

/* The after image's value for ops: write_prefix + JSON object; NULL + no error: fall back. */
PyObject *rw_row_value(Plan *p, const unsigned char *d, const Span *spans);

#endif
