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
#include "_rowwalk.h"

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

/* The key of one image as a str (prefix + integer text + suffix); NULL + no error if NULL. */
static PyObject *key_of(Plan *p, const unsigned char *d, const Span *spans) {
    const Span *s = &spans[p->key];
    if (s->null)
        return NULL;
    char text[24];
    int n = rw_int_text(&p->cols[p->key], d + s->off, text);
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
            value = rw_row_value(p, d, p->after);
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
