/* The compiled OTLP log record encoder: one structured log line (a dict) to one LogRecord.
 *
 * ``encode(time_ns, line)`` returns the record as it sits in ``ScopeLogs.log_records`` (field 2:
 * tag, length, fields), or ``None`` when the line holds anything but exact str keys and str, int
 * (int64), float, bool or None values: the caller then encodes the rendered JSON line in Python
 * (``opskit.logging.record``), which is the reference these bytes must decode the same as.
 *
 * Field numbers are those of opentelemetry/proto/logs/v1/logs.proto and common/v1/common.proto.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    unsigned char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    unsigned char small[1024];
} Buffer;

static int grow(Buffer *b, Py_ssize_t extra) {
    Py_ssize_t need = b->len + extra;
    if (need <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap * 2;
    while (cap < need) {
        cap *= 2;
    }
    unsigned char *data;
    if (b->data == b->small) {
        data = PyMem_Malloc(cap);
        if (data != NULL) {
            memcpy(data, b->small, b->len);
        }
    } else {
        data = PyMem_Realloc(b->data, cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static Py_ssize_t varint_size(uint64_t value) {
    Py_ssize_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

/* The writers below assume grow() made room for them. */
static void put_varint(Buffer *b, uint64_t value) {
    while (value >= 0x80) {
        b->data[b->len++] = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    b->data[b->len++] = (unsigned char)value;
}

static void put_byte(Buffer *b, unsigned char byte) { b->data[b->len++] = byte; }

static void put_bytes(Buffer *b, const void *data, Py_ssize_t size) {
    memcpy(b->data + b->len, data, size);
    b->len += size;
}

static void put_fixed64(Buffer *b, uint64_t value) {
    for (int i = 0; i < 8; i++) {
        b->data[b->len++] = (unsigned char)(value >> (8 * i));
    }
}

/* What an AnyValue holds, read once: its kind and payload. */
enum Kind { NONE, TEXT, BOOL, INT, DOUBLE };

typedef struct {
    enum Kind kind;
    const char *text;
    Py_ssize_t size; /* of text */
    uint64_t number; /* int (two's complement), bool, or the double's bits */
} Value;

/* 0 when ``obj`` was read into ``out``; 1 when it is of a kind this encoder leaves to Python. */
static int read_value(PyObject *obj, Value *out) {
    if (PyUnicode_CheckExact(obj)) {
        out->text = PyUnicode_AsUTF8AndSize(obj, &out->size);
        if (out->text == NULL) { /* lone surrogates */
            PyErr_Clear();
            return 1;
        }
        out->kind = TEXT;
    } else if (obj == Py_None) {
        out->kind = NONE;
    } else if (PyBool_Check(obj)) {
        out->kind = BOOL;
        out->number = obj == Py_True;
    } else if (PyLong_CheckExact(obj)) {
        int overflow = 0;
        long long number = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow != 0 || (number == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 1;
        }
        out->kind = INT;
        out->number = (uint64_t)number;
    } else if (PyFloat_CheckExact(obj)) {
        double number = PyFloat_AS_DOUBLE(obj);
        if (!isfinite(number)) { /* JSON has no such number: the rendered line holds null */
            out->kind = NONE;
            return 0;
        }
        out->kind = DOUBLE;
        memcpy(&out->number, &number, 8);
    } else {
        return 1;
    }
    return 0;
}

static Py_ssize_t any_value_size(const Value *v) {
    switch (v->kind) {
    case TEXT:
        return 1 + varint_size((uint64_t)v->size) + v->size;
    case BOOL:
        return 2;
    case INT:
        return 1 + varint_size(v->number);
    case DOUBLE:
        return 9;
    default:
        return 0;
    }
}

static void put_any_value(Buffer *b, const Value *v) {
    switch (v->kind) {
    case TEXT:
        put_byte(b, 0x0A);
        put_varint(b, (uint64_t)v->size);
        put_bytes(b, v->text, v->size);
        break;
    case BOOL:
        put_byte(b, 0x10);
        put_byte(b, (unsigned char)v->number);
        break;
    case INT:
        put_byte(b, 0x18);
        put_varint(b, v->number);
        break;
    case DOUBLE:
        put_byte(b, 0x21);
        put_fixed64(b, v->number);
        break;
    default:
        break;
    }
}

/* A length-delimited field of ``tag`` holding an AnyValue. */
static int put_value_field(Buffer *b, unsigned char tag, const Value *v) {
    Py_ssize_t size = any_value_size(v);
    if (grow(b, 1 + 10 + size) < 0) {
        return -1;
    }
    put_byte(b, tag);
    put_varint(b, (uint64_t)size);
    put_any_value(b, v);
    return 0;
}

/* ``LogRecord.attributes`` (field 6) holding one KeyValue. */
static int put_attribute(Buffer *b, const char *key, Py_ssize_t key_size, const Value *v) {
    Py_ssize_t value_size = any_value_size(v);
    Py_ssize_t pair = 1 + varint_size((uint64_t)key_size) + key_size + 1 + varint_size((uint64_t)value_size) + value_size;
    if (grow(b, 1 + 10 + pair) < 0) {
        return -1;
    }
    put_byte(b, 0x32);
    put_varint(b, (uint64_t)pair);
    put_byte(b, 0x0A);
    put_varint(b, (uint64_t)key_size);
    put_bytes(b, key, key_size);
    put_byte(b, 0x12);
    put_varint(b, (uint64_t)value_size);
    put_any_value(b, v);
    return 0;
}

static const struct {
    const char *name;
    int number;
} SEVERITY[] = {
    {"trace", 1}, {"debug", 5}, {"info", 9}, {"notice", 10}, {"warn", 13}, {"warning", 13},
    {"error", 17}, {"exception", 17}, {"critical", 21}, {"fatal", 21}, {NULL, 0},
};

#define LEVEL_MAX 64

static int severity_of(const char *lower, Py_ssize_t size) {
    for (int i = 0; SEVERITY[i].name != NULL; i++) {
        if ((Py_ssize_t)strlen(SEVERITY[i].name) == size && memcmp(SEVERITY[i].name, lower, size) == 0) {
            return SEVERITY[i].number;
        }
    }
    return 0;
}

static int put_severity(Buffer *b, int severity, const char *upper, Py_ssize_t size) {
    if (grow(b, 2 + 1 + 10 + size) < 0) {
        return -1;
    }
    if (severity) {
        put_byte(b, 0x10);
        put_byte(b, (unsigned char)severity);
    }
    put_byte(b, 0x1A);
    put_varint(b, (uint64_t)size);
    put_bytes(b, upper, size);
    return 0;
}

/* A level past ASCII or LEVEL_MAX: str.lower() and str.upper() decide, as in the Python encoder. */
static int put_unusual_level(Buffer *b, PyObject *level) {
    int result = 1;
    PyObject *lower = PyObject_CallMethod(level, "lower", NULL);
    PyObject *upper = lower == NULL ? NULL : PyObject_CallMethod(level, "upper", NULL);
    if (upper != NULL) {
        Py_ssize_t lower_size, upper_size;
        const char *lower_text = PyUnicode_AsUTF8AndSize(lower, &lower_size);
        const char *upper_text = lower_text == NULL ? NULL : PyUnicode_AsUTF8AndSize(upper, &upper_size);
        if (upper_text != NULL) {
            result = put_severity(b, severity_of(lower_text, lower_size), upper_text, upper_size);
        }
    }
    if (result == 1) { /* lone surrogates, or a failed call: left to Python */
        PyErr_Clear();
    }
    Py_XDECREF(lower);
    Py_XDECREF(upper);
    return result;
}

/* severity_number and severity_text. */
static int put_level(Buffer *b, PyObject *level, const char *text, Py_ssize_t size) {
    char lower[LEVEL_MAX], upper[LEVEL_MAX];
    if (!PyUnicode_IS_ASCII(level) || size >= LEVEL_MAX) {
        return put_unusual_level(b, level);
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = text[i];
        lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        upper[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
    }
    return put_severity(b, severity_of(lower, size), upper, size);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* ``length`` hex digits into ``out``; 0 when ``obj`` is no such ID (all zeros is none either). */
static int hex_id(PyObject *obj, Py_ssize_t length, unsigned char *out) {
    Py_ssize_t size;
    if (obj == NULL || !PyUnicode_CheckExact(obj) || !PyUnicode_IS_ASCII(obj)) {
        return 0;
    }
    const char *text = PyUnicode_AsUTF8AndSize(obj, &size);
    if (text == NULL || size != length) {
        PyErr_Clear();
        return 0;
    }
    unsigned char any = 0;
    for (Py_ssize_t i = 0; i < length / 2; i++) {
        int high = hex_digit(text[2 * i]), low = hex_digit(text[2 * i + 1]);
        if (high < 0 || low < 0) {
            return 0;
        }
        out[i] = (unsigned char)(high << 4 | low);
        any |= out[i];
    }
    return any != 0;
}

#define KEY_IS(literal) (key_size == sizeof(literal) - 1 && memcmp(key, literal, sizeof(literal) - 1) == 0)

/* The record's fields into ``b``: 0, 1 (left to Python) or -1 (an error is set). */
static int put_record(Buffer *b, uint64_t time_ns, PyObject *line) {
    PyObject *key_obj, *value_obj, *trace = NULL, *span = NULL;
    Py_ssize_t position = 0;
    int result;
    if (grow(b, 18) < 0) {
        return -1;
    }
    put_byte(b, 0x09); /* time_unix_nano */
    put_fixed64(b, time_ns);
    put_byte(b, 0x59); /* observed_time_unix_nano */
    put_fixed64(b, time_ns);
    while (PyDict_Next(line, &position, &key_obj, &value_obj)) {
        Py_ssize_t key_size;
        const char *key;
        Value value;
        if (!PyUnicode_CheckExact(key_obj)) {
            return 1;
        }
        key = PyUnicode_AsUTF8AndSize(key_obj, &key_size);
        if (key == NULL) {
            PyErr_Clear();
            return 1;
        }
        if (read_value(value_obj, &value) != 0) {
            return 1;
        }
        if (KEY_IS("level")) {
            if (value.kind == TEXT && (result = put_level(b, value_obj, value.text, value.size)) != 0) {
                return result;
            }
        } else if (KEY_IS("event")) {
            if (value.kind != NONE && put_value_field(b, 0x2A, &value) < 0) { /* body */
                return -1;
            }
        } else if (KEY_IS("trace_id")) {
            trace = value_obj;
        } else if (KEY_IS("span_id")) {
            span = value_obj;
        } else if (!KEY_IS("timestamp") && put_attribute(b, key, key_size, &value) < 0) {
            return -1;
        }
    }
    unsigned char id[16];
    if (hex_id(trace, 32, id)) {
        if (grow(b, 2 + 16 + 2 + 8) < 0) {
            return -1;
        }
        put_byte(b, 0x4A);
        put_byte(b, 16);
        put_bytes(b, id, 16);
        if (hex_id(span, 16, id)) {
            put_byte(b, 0x52);
            put_byte(b, 8);
            put_bytes(b, id, 8);
        }
    }
    return 0;
}

#define HEAD 11 /* room for the log_records tag and the record's length */

static PyObject *encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "encode(time_ns: int, line: dict)");
        return NULL;
    }
    uint64_t time_ns = PyLong_AsUnsignedLongLong(args[0]);
    if (time_ns == (uint64_t)-1 && PyErr_Occurred()) {
        return NULL;
    }
    Buffer b;
    b.data = b.small;
    b.cap = sizeof(b.small);
    b.len = HEAD;
    PyObject *out = NULL;
    int result = put_record(&b, time_ns, args[1]);
    if (result == 0) {
        uint64_t size = (uint64_t)(b.len - HEAD);
        Py_ssize_t start = HEAD - 1 - varint_size(size);
        Py_ssize_t end = b.len;
        b.len = start;
        put_byte(&b, 0x12); /* ScopeLogs.log_records */
        put_varint(&b, size);
        out = PyBytes_FromStringAndSize((const char *)b.data + start, end - start);
    } else if (result == 1) {
        out = Py_NewRef(Py_None);
    }
    if (b.data != b.small) {
        PyMem_Free(b.data);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(time_ns, line) -> bytes | None: the line as a ScopeLogs.log_records field, or None "
     "when a key or value is of a kind left to the Python encoder."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_record", "The compiled OTLP log record encoder.", 0, methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__record(void) { return PyModuleDef_Init(&module_def); }
