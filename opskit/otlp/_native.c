/* opskit's compiled OTLP encoders: the two messages it writes most, a log record per line and a
 * span per request, in protobuf wire format.
 *
 * ``log_record(time_ns, line)`` writes one structured log line (a dict) as it sits in
 * ``ScopeLogs.log_records`` (field 2: tag, length, fields); ``span(span)`` writes an SDK
 * ``ReadableSpan`` as it sits in ``ScopeSpans.spans``. Each returns ``None`` for what it leaves to
 * the Python encoders (``opskit.logging.record``, ``opskit.tracing.otlp``), which are the
 * references these bytes must decode the same as.
 *
 * Field numbers are those of the logs, trace and common protos of opentelemetry-proto (v1).
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

/* 0 when ``obj`` was read into ``out``; 1 when it is of a kind this encoder leaves to Python.
 * ``json``: a non-finite float reads as None, as the rendered JSON line has it (null). */
static int read_value(PyObject *obj, Value *out, int json) {
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
        if (json && !isfinite(number)) {
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

/* The head of a KeyValue field of ``tag`` (``LogRecord.attributes`` 0x32, ``Span.attributes``
 * 0x4A) whose AnyValue holds ``value_size`` bytes: tag, length, key, the value's tag and length.
 * Makes room for the value's bytes too, which the caller writes next. */
static int put_pair_head(Buffer *b, unsigned char tag, const char *key, Py_ssize_t key_size, Py_ssize_t value_size) {
    Py_ssize_t pair = 1 + varint_size((uint64_t)key_size) + key_size + 1 + varint_size((uint64_t)value_size) + value_size;
    if (grow(b, 1 + 10 + pair) < 0) {
        return -1;
    }
    put_byte(b, tag);
    put_varint(b, (uint64_t)pair);
    put_byte(b, 0x0A);
    put_varint(b, (uint64_t)key_size);
    put_bytes(b, key, key_size);
    put_byte(b, 0x12);
    put_varint(b, (uint64_t)value_size);
    return 0;
}

/* A KeyValue field of ``tag`` holding one scalar value. */
static int put_attribute(Buffer *b, unsigned char tag, const char *key, Py_ssize_t key_size, const Value *v) {
    if (put_pair_head(b, tag, key, key_size, any_value_size(v)) < 0) {
        return -1;
    }
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
        if (read_value(value_obj, &value, 1) != 0) {
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
        } else if (!KEY_IS("timestamp") && put_attribute(b, 0x32, key, key_size, &value) < 0) {
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

/* ---- spans ---- */

/* Attribute names read from SDK objects, interned once (see the module's exec slot). */
static PyObject *s_context, *s_parent, *s_trace_id, *s_span_id, *s_trace_state, *s_is_remote, *s_name, *s_kind,
    *s_value_, *s_start_time, *s_end_time, *s_attributes, *s_private_attributes, *s_dict, *s_events, *s_status,
    *s_status_code, *s_description;
static PyObject *sixty_four;

static PyObject *attr(PyObject *obj, PyObject *name) { return PyObject_GetAttr(obj, name); }

/* An int attribute of ``obj`` as uint64 (its low 64 bits for a 128-bit ID's high half, see below). */
static int read_u64(PyObject *obj, PyObject *name, uint64_t *out) {
    PyObject *value = attr(obj, name);
    if (value == NULL) {
        return -1;
    }
    if (!PyLong_Check(value)) {
        Py_DECREF(value);
        return 1;
    }
    *out = PyLong_AsUnsignedLongLong(value);
    Py_DECREF(value);
    if (*out == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

static void put_be64(Buffer *b, uint64_t value) {
    for (int i = 7; i >= 0; i--) {
        b->data[b->len++] = (unsigned char)(value >> (8 * i));
    }
}

/* The fields of an AnyValue in a span: as read_value, plus arrays of such values (tuple or list). */
static int put_span_attribute(Buffer *b, PyObject *key_obj, PyObject *value_obj) {
    Py_ssize_t key_size;
    const char *key;
    Value value;
    if (!PyUnicode_CheckExact(key_obj) || (key = PyUnicode_AsUTF8AndSize(key_obj, &key_size)) == NULL) {
        PyErr_Clear();
        return 1;
    }
    if (!(PyTuple_CheckExact(value_obj) || PyList_CheckExact(value_obj))) {
        if (read_value(value_obj, &value, 0) != 0 || value.kind == NONE) {
            return 1;
        }
        return put_attribute(b, 0x4A, key, key_size, &value);
    }
    /* array_value (5) of ArrayValue.values (1): sizes first, then the bytes */
    Py_ssize_t count = PySequence_Fast_GET_SIZE(value_obj), array = 0;
    PyObject **items = PySequence_Fast_ITEMS(value_obj);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (read_value(items[i], &value, 0) != 0 || value.kind == NONE) {
            return 1;
        }
        Py_ssize_t size = any_value_size(&value);
        array += 1 + varint_size((uint64_t)size) + size;
    }
    if (put_pair_head(b, 0x4A, key, key_size, 1 + varint_size((uint64_t)array) + array) < 0) {
        return -1;
    }
    put_byte(b, 0x2A);
    put_varint(b, (uint64_t)array);
    for (Py_ssize_t i = 0; i < count; i++) {
        read_value(items[i], &value, 0);
        put_byte(b, 0x0A);
        put_varint(b, (uint64_t)any_value_size(&value));
        put_any_value(b, &value);
    }
    return 0;
}

/* Span.attributes: the SDK's attribute dict read directly when it is one (BoundedAttributes keeps
 * its pairs in ``_dict``), else through the public mapping. */
static int put_span_attributes(Buffer *b, PyObject *span) {
    int result = 0;
    PyObject *held = attr(span, s_private_attributes), *pairs = NULL;
    if (held == NULL) {
        PyErr_Clear();
    } else if (held != Py_None && !PyDict_Check(held)) {
        PyObject *inner = attr(held, s_dict);
        Py_DECREF(held);
        held = inner;
        if (held == NULL) {
            PyErr_Clear();
        }
    }
    if (held == Py_None) {
        Py_DECREF(held);
        return 0;
    }
    if (held != NULL && PyDict_Check(held)) {
        PyObject *key, *value;
        Py_ssize_t position = 0;
        while (result == 0 && PyDict_Next(held, &position, &key, &value)) {
            result = put_span_attribute(b, key, value);
        }
        Py_DECREF(held);
        return result;
    }
    Py_XDECREF(held);
    PyObject *mapping = attr(span, s_attributes);
    if (mapping == NULL) {
        return -1;
    }
    pairs = PyMapping_Items(mapping);
    Py_DECREF(mapping);
    if (pairs == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; result == 0 && i < PyList_GET_SIZE(pairs); i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        result = put_span_attribute(b, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1));
    }
    Py_DECREF(pairs);
    return result;
}

/* An enum member's value (``_value_``: a plain attribute, where ``.value`` is a descriptor call). */
static int read_enum(PyObject *obj, PyObject *name, long *out) {
    PyObject *member = attr(obj, name);
    if (member == NULL) {
        return -1;
    }
    PyObject *value = attr(member, s_value_);
    Py_DECREF(member);
    if (value == NULL) {
        PyErr_Clear();
        return 1;
    }
    *out = PyLong_Check(value) ? PyLong_AsLong(value) : -1;
    Py_DECREF(value);
    if (*out < 0 || *out > 100) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

static int put_time(Buffer *b, unsigned char tag, PyObject *span, PyObject *name) {
    PyObject *value = attr(span, name);
    uint64_t time = 0;
    if (value == NULL) {
        return -1;
    }
    if (value != Py_None) {
        time = PyLong_Check(value) ? PyLong_AsUnsignedLongLong(value) : (uint64_t)-1;
        if (time == (uint64_t)-1) {
            PyErr_Clear();
            Py_DECREF(value);
            return 1;
        }
    }
    Py_DECREF(value);
    put_byte(b, tag);
    put_fixed64(b, time);
    return 0;
}

/* The 128-bit trace ID, big-endian. */
static int put_trace_id(Buffer *b, PyObject *context) {
    PyObject *id = attr(context, s_trace_id), *high = NULL;
    int result = 1;
    if (id == NULL) {
        return -1;
    }
    if (PyLong_Check(id) && (high = PyNumber_Rshift(id, sixty_four)) != NULL) {
        uint64_t upper = PyLong_AsUnsignedLongLong(high), lower = PyLong_AsUnsignedLongLongMask(id);
        if (!PyErr_Occurred()) {
            put_byte(b, 0x0A);
            put_byte(b, 16);
            put_be64(b, upper);
            put_be64(b, lower);
            result = 0;
        }
    }
    PyErr_Clear();
    Py_XDECREF(high);
    Py_DECREF(id);
    return result;
}

#define TRY(call)                                                                                                  \
    do {                                                                                                           \
        if ((result = (call)) != 0) {                                                                              \
            goto done;                                                                                             \
        }                                                                                                          \
    } while (0)

/* The span's fields into ``b``: 0, 1 (left to Python) or -1 (an error is set). Spans with a trace
 * state or events are left to Python: rare on request spans, and many more shapes to cover. */
static int put_span(Buffer *b, PyObject *span) {
    int result = 0;
    long kind, code;
    uint64_t span_id, parent_id = 0;
    int parent_remote = -1; /* no parent */
    Py_ssize_t name_size, description_size = 0;
    const char *name_text, *description_text = NULL;
    PyObject *context = NULL, *parent = NULL, *state = NULL, *name = NULL, *events = NULL, *status = NULL,
             *description = NULL, *remote = NULL;

    if (grow(b, 2 + 16 + 2 + 8 + 2 + 8 + 11 + 9 + 9 + 2 + 6) < 0) {
        return -1;
    }
    TRY((context = attr(span, s_context)) == NULL ? -1 : 0);
    TRY((state = attr(context, s_trace_state)) == NULL ? -1 : 0);
    if (state != Py_None) {
        int present = PyObject_IsTrue(state);
        TRY(present < 0 ? -1 : present);
    }
    TRY((events = attr(span, s_events)) == NULL ? -1 : 0);
    {
        Py_ssize_t count = PyObject_Length(events);
        TRY(count < 0 ? -1 : count > 0);
    }
    TRY(put_trace_id(b, context));
    TRY(read_u64(context, s_span_id, &span_id));
    put_byte(b, 0x12);
    put_byte(b, 8);
    put_be64(b, span_id);
    TRY((parent = attr(span, s_parent)) == NULL ? -1 : 0);
    if (parent != Py_None) {
        TRY(read_u64(parent, s_span_id, &parent_id));
        TRY((remote = attr(parent, s_is_remote)) == NULL ? -1 : 0);
        parent_remote = PyObject_IsTrue(remote);
        TRY(parent_remote < 0 ? -1 : 0);
        put_byte(b, 0x22);
        put_byte(b, 8);
        put_be64(b, parent_id);
    }
    TRY((name = attr(span, s_name)) == NULL ? -1 : 0);
    TRY(!PyUnicode_CheckExact(name));
    name_text = PyUnicode_AsUTF8AndSize(name, &name_size);
    if (name_text == NULL) {
        PyErr_Clear();
        TRY(1);
    }
    TRY(grow(b, 1 + 10 + name_size + 2 + 9 + 9));
    put_byte(b, 0x2A);
    put_varint(b, (uint64_t)name_size);
    put_bytes(b, name_text, name_size);
    TRY(read_enum(span, s_kind, &kind));
    put_byte(b, 0x30);
    put_varint(b, (uint64_t)kind + 1);
    TRY(put_time(b, 0x39, span, s_start_time));
    TRY(put_time(b, 0x41, span, s_end_time));
    TRY(put_span_attributes(b, span));
    TRY((status = attr(span, s_status)) == NULL ? -1 : 0);
    TRY(read_enum(status, s_status_code, &code));
    TRY((description = attr(status, s_description)) == NULL ? -1 : 0);
    if (description != Py_None) {
        TRY(!PyUnicode_CheckExact(description));
        description_text = PyUnicode_AsUTF8AndSize(description, &description_size);
        if (description_text == NULL) {
            PyErr_Clear();
            TRY(1);
        }
    }
    {
        Py_ssize_t body = (description_size ? 1 + varint_size((uint64_t)description_size) + description_size : 0) +
                          (code ? 1 + varint_size((uint64_t)code) : 0);
        TRY(grow(b, 1 + 10 + body + 6));
        put_byte(b, 0x7A); /* status: present even when empty, as the SDK's encoder writes it */
        put_varint(b, (uint64_t)body);
        if (description_size) {
            put_byte(b, 0x12);
            put_varint(b, (uint64_t)description_size);
            put_bytes(b, description_text, description_size);
        }
        if (code) {
            put_byte(b, 0x18);
            put_varint(b, (uint64_t)code);
        }
    }
    put_byte(b, 0x85); /* flags (16): HAS_IS_REMOTE, and IS_REMOTE for a remote parent */
    put_byte(b, 0x01);
    put_byte(b, 0x00);
    put_byte(b, parent_remote == 1 ? 0x03 : 0x01);
    put_byte(b, 0x00);
    put_byte(b, 0x00);
done:
    Py_XDECREF(context);
    Py_XDECREF(parent);
    Py_XDECREF(state);
    Py_XDECREF(name);
    Py_XDECREF(events);
    Py_XDECREF(status);
    Py_XDECREF(description);
    Py_XDECREF(remote);
    return result;
}

/* ---- the module ---- */

#define HEAD 11 /* room for the enclosing field's tag and the message's length */

typedef int (*Writer)(Buffer *b, PyObject *const *args);

/* The message ``write`` makes, as field ``tag`` of its parent; None when it declined (returned 1). */
static PyObject *wrapped(unsigned char tag, Writer write, PyObject *const *args) {
    Buffer b;
    b.data = b.small;
    b.cap = sizeof(b.small);
    b.len = HEAD;
    PyObject *out = NULL;
    int result = write(&b, args);
    if (result == 0) {
        uint64_t size = (uint64_t)(b.len - HEAD);
        Py_ssize_t start = HEAD - 1 - varint_size(size);
        Py_ssize_t end = b.len;
        b.len = start;
        put_byte(&b, tag);
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

static int write_record(Buffer *b, PyObject *const *args) {
    uint64_t time_ns = PyLong_AsUnsignedLongLong(args[0]);
    if (time_ns == (uint64_t)-1 && PyErr_Occurred()) {
        return -1;
    }
    return put_record(b, time_ns, args[1]);
}

static PyObject *log_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "log_record(time_ns: int, line: dict)");
        return NULL;
    }
    return wrapped(0x12, write_record, args); /* ScopeLogs.log_records */
}

static int write_span(Buffer *b, PyObject *const *args) { return put_span(b, args[0]); }

static PyObject *span(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "span(span: ReadableSpan)");
        return NULL;
    }
    return wrapped(0x12, write_span, args); /* ScopeSpans.spans */
}

static PyMethodDef methods[] = {
    {"log_record", (PyCFunction)(void (*)(void))log_record, METH_FASTCALL,
     "log_record(time_ns, line) -> bytes | None: the line as a ScopeLogs.log_records field, or None "
     "when a key or value is of a kind left to the Python encoder."},
    {"span", (PyCFunction)(void (*)(void))span, METH_FASTCALL,
     "span(span) -> bytes | None: an SDK ReadableSpan as a ScopeSpans.spans field, or None when it "
     "holds what is left to the Python encoder (a trace state, events, values of other kinds)."},
    {NULL, NULL, 0, NULL},
};

static int intern(PyObject **slot, const char *text) {
    if (*slot == NULL) {
        *slot = PyUnicode_InternFromString(text);
    }
    return *slot == NULL ? -1 : 0;
}

static int exec_module(PyObject *module) {
    (void)module;
    if (intern(&s_context, "context") || intern(&s_parent, "parent") || intern(&s_trace_id, "trace_id") ||
        intern(&s_span_id, "span_id") || intern(&s_trace_state, "trace_state") || intern(&s_is_remote, "is_remote") ||
        intern(&s_name, "name") || intern(&s_kind, "kind") || intern(&s_value_, "_value_") ||
        intern(&s_start_time, "start_time") || intern(&s_end_time, "end_time") ||
        intern(&s_attributes, "attributes") || intern(&s_private_attributes, "_attributes") ||
        intern(&s_dict, "_dict") || intern(&s_events, "events") || intern(&s_status, "status") ||
        intern(&s_status_code, "status_code") || intern(&s_description, "description")) {
        return -1;
    }
    if (sixty_four == NULL && (sixty_four = PyLong_FromLong(64)) == NULL) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, (void *)exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_native", "opskit's compiled OTLP encoders.", 0, methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModuleDef_Init(&module_def); }
