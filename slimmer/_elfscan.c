/* slimmer._elfscan: the loader facts of one ELF file, read as slimmer/elf.py reads them.

   scan(path) -> tuple | None

   A faster path for elf.read_elf, which calls it first: the ELF header, the program headers,
   PT_INTERP, PT_DYNAMIC and the dynamic strings, through bounded preads. It handles the files
   that elf.py reads without complaint and in the common way; for anything else (a file that
   cannot be opened or is not a regular file, not ELF, truncated, corrupt, PN_XNUM, a name longer
   than MAX_STRING...) it returns None and elf.py reads the file itself, so every error message
   and every unusual case stays with the Python reader. tests/test_elfscan.py checks that both
   give the same facts for every ELF file on the machine and for damaged copies of some.

   The tuple: (elf_class, little_endian, machine, osabi, abiversion, e_type, e_flags,
   interpreter, has_dynamic, needed, soname, rpath, runpath, flags_1), with rpath as written
   (elf.py drops it when there is a DT_RUNPATH).

   strings(buffer, start, end) -> (paths, libraries, locales)

   The whole NUL-terminated strings of buffer[start:end] that follow a NUL (the first string
   of the range, which none precedes, is left to the caller), as loader/strings.py's regular
   expressions find them: absolute paths (printable ASCII, '/' first, 2 to 1024 bytes) and
   library names (lib[A-Za-z0-9_+.-]*.so(.[0-9]+)*) and the locale names C.UTF-8 and C.utf8,
   each as bytes, in buffer order, repeats included. tests/test_elfscan.py holds it to the regular expressions.

   undefined(table, strings, count, entsize, wide, little) -> list | None

   The names of the undefined symbols (st_shndx 0, st_name not 0) of a dynamic symbol table,
   as elf.py's _imports reads them; None when an entry or a name lies outside the buffers or
   is not terminated, for elf.py to report. */

#define _GNU_SOURCE  /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEAD 16384          /* read at once, as elf.py's _HEAD */
#define MAX_LOADS 64
#define MAX_NEEDED 1024
#define MAX_DYNAMIC (1 << 20)
#define MAX_STRING 65536

#define PT_LOAD 1
#define PT_DYNAMIC 2
#define PT_INTERP 3
#define PN_XNUM 0xFFFF
#define DT_NULL 0
#define DT_NEEDED 1
#define DT_STRTAB 5
#define DT_STRSZ 10
#define DT_SONAME 14
#define DT_RPATH 15
#define DT_RUNPATH 29
#define DT_FLAGS_1 0x6FFFFFFBULL

typedef struct {
    int fd;
    uint64_t size;
    int big;                  /* big-endian */
    size_t head_len;
    unsigned char head[HEAD];
} Source;

/* Exactly n bytes at off into out; -1 when they are not all inside the file (as _Source.read). */
static int source_read(Source *s, uint64_t off, uint64_t n, unsigned char *out)
{
    if (off > s->size || n > s->size - off)
        return -1;
    if (off + n <= s->head_len) {
        memcpy(out, s->head + off, n);
        return 0;
    }
    uint64_t done = 0;
    while (done < n) {
        ssize_t got = pread(s->fd, out + done, n - done, (off_t)(off + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        done += (uint64_t)got;
    }
    return 0;
}

static uint64_t word(const unsigned char *p, int width, int big)
{
    uint64_t v = 0;
    for (int i = 0; i < width; i++)
        v |= (uint64_t)p[big ? width - 1 - i : i] << (8 * i);
    return v;
}

typedef struct {
    uint64_t vaddr, offset, filesz;
} Load;

/* The file offset of a virtual address, through the PT_LOADs in order (_vaddr_to_offset). */
static int vaddr_to_offset(const Load *loads, int count, uint64_t addr, uint64_t *out)
{
    for (int i = 0; i < count; i++) {
        if (loads[i].vaddr <= addr && addr - loads[i].vaddr < loads[i].filesz) {
            /* elf.py adds without wrapping: an offset past 2^64 lies outside any file */
            if (addr - loads[i].vaddr > UINT64_MAX - loads[i].offset)
                return -1;
            *out = loads[i].offset + (addr - loads[i].vaddr);
            return 0;
        }
    }
    return -1;
}

/* The dynamic string at strtab + offset, up to its NUL before limit, decoded as elf.py does. */
static PyObject *dynamic_string(Source *s, uint64_t strtab, uint64_t limit, uint64_t offset,
                                unsigned char *buf)
{
    if (strtab >= limit || offset >= limit - strtab)
        return NULL;
    uint64_t start = strtab + offset;
    uint64_t n = limit - start < MAX_STRING ? limit - start : MAX_STRING;
    if (start + n <= s->head_len) {
        const unsigned char *p = s->head + start;
        const unsigned char *end = memchr(p, 0, n);
        if (end == NULL)
            return NULL;
        return PyUnicode_DecodeUTF8((const char *)p, end - p, "surrogateescape");
    }
    if (source_read(s, start, n, buf) < 0)
        return NULL;
    const unsigned char *end = memchr(buf, 0, n);
    if (end == NULL)
        return NULL;
    return PyUnicode_DecodeUTF8((const char *)buf, end - buf, "surrogateescape");
}

typedef struct {
    uint64_t value;
    int present;
} Tag;

static PyObject *scan_source(Source *s)
{
    const unsigned char *h = s->head;
    if (s->head_len < 16 || memcmp(h, "\177ELF", 4) != 0)
        return NULL;
    int ei_class = h[4], ei_data = h[5], ei_version = h[6], osabi = h[7], abiversion = h[8];
    if ((ei_class != 1 && ei_class != 2) || (ei_data != 1 && ei_data != 2) || ei_version != 1)
        return NULL;
    int is64 = ei_class == 2, big = ei_data == 2, addr = is64 ? 8 : 4;
    s->big = big;
    unsigned char ehdr[48];
    uint64_t ehdr_size = is64 ? 48 : 36;
    if (source_read(s, 16, ehdr_size, ehdr) < 0)
        return NULL;
    /* offsets below are from byte 16 of the file */
    uint64_t etype = word(ehdr, 2, big), machine = word(ehdr + 2, 2, big);
    uint64_t phoff = word(ehdr + (is64 ? 16 : 12), addr, big);
    uint64_t eflags = word(ehdr + (is64 ? 32 : 20), 4, big);
    uint64_t phentsize = word(ehdr + (is64 ? 38 : 26), 2, big);
    uint64_t phnum = word(ehdr + (is64 ? 40 : 28), 2, big);
    if (etype != 2 && etype != 3)
        return NULL;
    uint64_t phsize = is64 ? 56 : 32;
    if (phnum == PN_XNUM || (phnum && phentsize < phsize))
        return NULL;
    uint64_t table_size = phnum * phentsize;
    unsigned char *table = malloc(table_size ? table_size : 1);
    unsigned char *dynamic = NULL, *strbuf = NULL;
    PyObject *interp = NULL, *needed = NULL, *names[3] = {NULL, NULL, NULL}, *result = NULL;
    uint64_t *needed_offsets = NULL;
    if (table == NULL || source_read(s, phoff, table_size, table) < 0)
        goto done;

    Load loads[MAX_LOADS];
    int nloads = 0;
    uint64_t dynamic_size = 0;
    int has_dynamic = 0;
    for (uint64_t i = 0; i < phnum; i++) {
        const unsigned char *ph = table + i * phentsize;
        uint64_t type = word(ph, 4, big);
        uint64_t offset = word(ph + (is64 ? 8 : 4), addr, big);
        uint64_t vaddr = word(ph + (is64 ? 16 : 8), addr, big);
        uint64_t filesz = word(ph + (is64 ? 32 : 16), addr, big);
        if (type == PT_LOAD) {
            if (nloads == MAX_LOADS)
                goto done;
            loads[nloads++] = (Load){vaddr, offset, filesz};
        } else if (type == PT_INTERP) {
            if (filesz == 0 || filesz > MAX_STRING)
                goto done;
            unsigned char *data = malloc(filesz);
            if (data == NULL || source_read(s, offset, filesz, data) < 0) {
                free(data);
                goto done;
            }
            const unsigned char *nul = memchr(data, 0, filesz);
            Py_XDECREF(interp);
            interp = PyUnicode_DecodeFSDefaultAndSize((const char *)data,
                                                      nul ? nul - data : (Py_ssize_t)filesz);
            free(data);
            if (interp == NULL)
                goto done;
        } else if (type == PT_DYNAMIC) {
            if (filesz > MAX_DYNAMIC)
                goto done;
            free(dynamic);
            dynamic = malloc(filesz ? filesz : 1);
            if (dynamic == NULL || source_read(s, offset, filesz, dynamic) < 0)
                goto done;
            dynamic_size = filesz;
            has_dynamic = 1;
        }
    }

    /* the dynamic entries up to the first DT_NULL; a repeated tag's last entry counts */
    Tag strtab_tag = {0, 0}, strsz = {0, 0}, soname = {0, 0}, rpath = {0, 0}, runpath = {0, 0},
        flags_1 = {0, 0};
    int nneeded = 0;
    needed_offsets = malloc(sizeof(uint64_t) * MAX_NEEDED);
    if (needed_offsets == NULL)
        goto done;
    if (has_dynamic) {
        uint64_t entsize = 2 * (uint64_t)addr, count = dynamic_size / entsize;
        for (uint64_t i = 0; i < count; i++) {
            uint64_t tag = word(dynamic + i * entsize, addr, big);
            uint64_t value = word(dynamic + i * entsize + addr, addr, big);
            if (tag == DT_NULL)
                break;
            Tag *t = tag == DT_STRTAB ? &strtab_tag : tag == DT_STRSZ ? &strsz
                     : tag == DT_SONAME ? &soname : tag == DT_RPATH ? &rpath
                     : tag == DT_RUNPATH ? &runpath : tag == DT_FLAGS_1 ? &flags_1 : NULL;
            if (t != NULL)
                *t = (Tag){value, 1};
            else if (tag == DT_NEEDED) {
                if (nneeded == MAX_NEEDED)
                    goto done;
                needed_offsets[nneeded++] = value;
            }
        }
    }

    needed = PyTuple_New(nneeded);
    if (needed == NULL)
        goto done;
    if (nneeded || soname.present || rpath.present || runpath.present) {
        uint64_t strtab, limit;
        if (!strtab_tag.present || vaddr_to_offset(loads, nloads, strtab_tag.value, &strtab) < 0)
            goto done;
        if (!strsz.present || strtab > s->size)
            limit = s->size;
        else
            limit = strsz.value > s->size - strtab ? s->size : strtab + strsz.value;
        strbuf = malloc(MAX_STRING);
        if (strbuf == NULL)
            goto done;
        for (int i = 0; i < nneeded; i++) {
            PyObject *name = dynamic_string(s, strtab, limit, needed_offsets[i], strbuf);
            if (name == NULL)
                goto done;
            PyTuple_SET_ITEM(needed, i, name);
        }
        Tag *named[3] = {&soname, &rpath, &runpath};
        for (int i = 0; i < 3; i++) {
            if (named[i]->present &&
                (names[i] = dynamic_string(s, strtab, limit, named[i]->value, strbuf)) == NULL)
                goto done;
        }
    }
    result = Py_BuildValue("(iOKiiKKOOOOOOK)", is64 ? 64 : 32, big ? Py_False : Py_True,
                           (unsigned long long)machine, osabi, abiversion,
                           (unsigned long long)etype, (unsigned long long)eflags,
                           interp ? interp : Py_None, has_dynamic ? Py_True : Py_False, needed,
                           names[0] ? names[0] : Py_None, names[1] ? names[1] : Py_None,
                           names[2] ? names[2] : Py_None, (unsigned long long)flags_1.value);

done:
    free(table);
    free(dynamic);
    free(strbuf);
    free(needed_offsets);
    Py_XDECREF(interp);
    Py_XDECREF(needed);
    for (int i = 0; i < 3; i++)
        Py_XDECREF(names[i]);
    if (result == NULL)
        PyErr_Clear();  /* a decoding error too: elf.py decides */
    return result;
}

static PyObject *scan(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(arg, &encoded))
        return NULL;
    Source *s = malloc(sizeof(Source));
    PyObject *result = NULL;
    if (s == NULL) {
        Py_DECREF(encoded);
        return PyErr_NoMemory();
    }
    s->fd = open(PyBytes_AS_STRING(encoded), O_RDONLY | O_CLOEXEC);
    Py_DECREF(encoded);
    struct stat st;
    if (s->fd >= 0 && fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode)) {
        s->size = (uint64_t)st.st_size;
        ssize_t got = pread(s->fd, s->head, HEAD, 0);
        if (got >= 0) {
            s->head_len = (size_t)got;
            result = scan_source(s);
        }
    }
    if (s->fd >= 0)
        close(s->fd);
    free(s);
    if (result == NULL)
        Py_RETURN_NONE;
    return result;
}

static int path_char(unsigned char c) { return c >= 0x21 && c <= 0x7e; }

static int soname_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || c == '_' || c == '+' || c == '.' || c == '-';
}

/* s[0:n] (no NUL in it) is lib[class]*\.so(\.[0-9]+)*: after dropping trailing .N groups
   one by one, the rest ends with ".so" and is at least "lib.so". */
static int is_soname(const unsigned char *s, size_t n)
{
    if (n < 6 || memcmp(s, "lib", 3) != 0)
        return 0;
    for (size_t i = 3; i < n; i++)
        if (!soname_char(s[i]))
            return 0;
    size_t end = n;
    for (;;) {
        if (end >= 6 && memcmp(s + end - 3, ".so", 3) == 0)
            return 1;
        size_t d = end;
        while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9')
            d--;
        if (d == end || d == 0 || s[d - 1] != '.')
            return 0;
        end = d - 1;
    }
}

static int append_bytes(PyObject *list, const unsigned char *s, size_t n)
{
    PyObject *item = PyBytes_FromStringAndSize((const char *)s, (Py_ssize_t)n);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *strings(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &end))
        return NULL;
    PyObject *paths = PyList_New(0), *libraries = PyList_New(0), *locales = PyList_New(0);
    PyObject *result = NULL;
    if (paths == NULL || libraries == NULL || locales == NULL)
        goto done;
    if (start < 0)
        start = 0;
    if (end > view.len)
        end = view.len;
    const unsigned char *base = view.buf;
    const unsigned char *first = base + start, *stop = base + (end > start ? end : start);
    int failed = 0;
    /* a path: "\0/" then printable bytes up to a NUL, 2 to 1024 of them; memchr finds the
       slashes far faster than memmem finds the pair */
    for (const unsigned char *p = first + 1; p < stop && !failed;) {
        const unsigned char *s = memchr(p, '/', (size_t)(stop - p));
        if (s == NULL)
            break;
        if (s[-1] != 0) {
            p = s + 1;
            continue;
        }
        const unsigned char *limit = s + 1025 < stop ? s + 1025 : stop;
        const unsigned char *z = s + 1;
        while (z < limit && path_char(*z))
            z++;
        size_t n = (size_t)(z - s);
        if (z < limit && *z == 0 && n >= 2 && append_bytes(paths, s, n) < 0)
            failed = 1;
        p = z + 1;  /* z is not a slash: past it */
    }
    /* a library: "\0lib" then a whole string of the name's bytes */
    for (const unsigned char *p = first; p < stop && !failed;) {
        const unsigned char *hit = memmem(p, (size_t)(stop - p), "\0lib", 4);
        if (hit == NULL)
            break;
        const unsigned char *s = hit + 1, *z = s + 3;
        while (z < stop && soname_char(*z))
            z++;
        if (z < stop && *z == 0 && is_soname(s, (size_t)(z - s))
                && append_bytes(libraries, s, (size_t)(z - s)) < 0)
            failed = 1;
        p = z;
    }
    /* a locale name: the whole string "C.UTF-8" or "C.utf8" (what setlocale is asked for) */
    for (const unsigned char *p = first; p < stop && !failed;) {
        const unsigned char *hit = memmem(p, (size_t)(stop - p), "\0C.", 3);
        if (hit == NULL)
            break;
        const unsigned char *s = hit + 1;
        size_t room = (size_t)(stop - s);
        if (room > 7 && memcmp(s, "C.UTF-8", 8) == 0)
            failed = append_bytes(locales, s, 7) < 0;
        else if (room > 6 && memcmp(s, "C.utf8", 7) == 0)
            failed = append_bytes(locales, s, 6) < 0;
        p = s;
    }
    if (!failed)
        result = PyTuple_Pack(3, paths, libraries, locales);
done:
    Py_XDECREF(paths);
    Py_XDECREF(libraries);
    Py_XDECREF(locales);
    PyBuffer_Release(&view);
    return result;
}

static uint64_t read_word(const unsigned char *p, int size, int little)
{
    uint64_t v = 0;
    for (int i = 0; i < size; i++)
        v |= (uint64_t)p[little ? i : size - 1 - i] << (8 * i);
    return v;
}

static PyObject *undefined(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer table, names;
    Py_ssize_t count, entsize;
    int wide, little;
    if (!PyArg_ParseTuple(args, "y*y*nnpp", &table, &names, &count, &entsize, &wide, &little))
        return NULL;
    PyObject *out = PyList_New(0);
    int bad = out == NULL;
    /* st_name at 0 (4 bytes); st_shndx at 6 (64-bit) or 14 (32-bit), 2 bytes */
    Py_ssize_t need = wide ? 8 : 16;
    const unsigned char *t = table.buf, *str = names.buf;
    if (!bad && (count < 0 || entsize < need || (count > 0 && table.len / entsize < count)))
        bad = 2;
    for (Py_ssize_t i = 0; !bad && i < count; i++) {
        const unsigned char *e = t + i * entsize;
        uint64_t name = read_word(e, 4, little);
        uint64_t shndx = read_word(e + (wide ? 6 : 14), 2, little);
        if (shndx != 0 || name == 0)
            continue;
        if (name >= (uint64_t)names.len) {
            bad = 2;
            break;
        }
        const unsigned char *s = str + name;
        const unsigned char *z = memchr(s, 0, (size_t)(names.len - (Py_ssize_t)name));
        if (z == NULL) {
            bad = 2;
            break;
        }
        if (append_bytes(out, s, (size_t)(z - s)) < 0)
            bad = 1;
    }
    PyBuffer_Release(&table);
    PyBuffer_Release(&names);
    if (bad == 1) {
        Py_XDECREF(out);
        return NULL;
    }
    if (bad == 2) {
        Py_XDECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"strings", strings, METH_VARARGS,
     "strings(buffer, start, end) -> (paths, libraries): see slimmer/loader/strings.py."},
    {"undefined", undefined, METH_VARARGS,
     "undefined(table, strings, count, entsize, wide, little) -> names or None."},
    {"scan", scan, METH_O,
     "scan(path) -> the loader facts of an ELF file, or None: then slimmer.elf reads it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "slimmer._elfscan",
    "The ELF reader's fast path (see slimmer/elf.py).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__elfscan(void)
{
    return PyModule_Create(&module);
}
