/*
 * test_tree.c - tree objects (repo/tree.c): encoding round trips of every node type with
 * xattrs and content, names made of arbitrary bytes, sort order and lookup, and decoding of
 * damaged or hostile trees.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "unit/repo/repo_helpers.h"

/* ------------------------------------------------------------------ building trees */

static char *dup_bytes(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* A node of the given type named name (len bytes) with every field set from seed. */
static cf_node mk_node(uint8_t type, const char *name, size_t len, uint64_t seed)
{
    cf_node n;
    uint64_t s = seed;
    memset(&n, 0, sizeof(n));
    n.type = type;
    n.name = dup_bytes(name, len);
    n.name_len = (uint16_t)len;
    n.mode = (uint32_t)(th_next(&s) & 07777);
    n.uid = (uint32_t)th_next(&s);
    n.gid = (uint32_t)th_next(&s);
    n.user = cf_strdup(seed & 1 ? "alice" : "");
    n.group = cf_strdup("staff");
    n.mtime = (int64_t)th_next(&s);
    n.atime = -(int64_t)(th_next(&s) >> 2); /* before 1970 */
    n.ctime = (int64_t)(th_next(&s) >> 1);
    n.size = th_next(&s);
    n.inode = th_next(&s);
    n.dev = th_next(&s);
    n.rdev = type == CF_NODE_CHARDEV || type == CF_NODE_BLOCKDEV ? th_next(&s) : 0;
    n.nlink = (uint32_t)th_next(&s);
    n.flags = (uint8_t)th_next(&s);
    if (type == CF_NODE_SYMLINK)
        n.target = cf_strdup("../some/where \xff\xfe else");
    /* xattrs: a text value, a binary value with NULs, an empty value */
    n.nxattrs = 3;
    n.xattrs = calloc(3, sizeof(cf_xattr));
    assert_non_null(n.xattrs);
    n.xattrs[0].name = cf_strdup("user.comment");
    n.xattrs[0].value = (uint8_t *)dup_bytes("hello", 5);
    n.xattrs[0].value_len = 5;
    n.xattrs[1].name = cf_strdup("security.selinux");
    n.xattrs[1].value = malloc(300);
    assert_non_null(n.xattrs[1].value);
    th_fill_random(n.xattrs[1].value, 300, seed);
    n.xattrs[1].value[7] = 0;
    n.xattrs[1].value_len = 300;
    n.xattrs[2].name = cf_strdup("user.empty");
    n.xattrs[2].value = malloc(1);
    n.xattrs[2].value_len = 0;
    if (type == CF_NODE_FILE) {
        n.ncontent = 4;
        n.content = calloc(4, sizeof(cf_content_item));
        assert_non_null(n.content);
        for (uint32_t k = 0; k < 4; k++) {
            n.content[k].kind = k == 1 ? 1 : 0; /* blob, hole, blob, blob */
            n.content[k].len = k == 1 ? (uint64_t)1 << 40 : th_next(&s) % (1u << 24);
            if (n.content[k].kind == 0)
                th_id(&n.content[k].id, seed + k);
        }
    }
    if (type == CF_NODE_DIR)
        th_id(&n.subtree, seed ^ 0xd1d1);
    return n;
}

static void add(cf_tree *t, cf_node n) { th_ok(cf_tree__add(t, &n)); }

static void assert_str_eq_opt(const char *got, const char *want)
{
    /* an empty string and NULL are the same thing in the encoding */
    assert_string_equal(got ? got : "", want ? want : "");
}

static void assert_node_eq(const cf_node *g, const cf_node *w)
{
    assert_int_equal(g->type, w->type);
    assert_int_equal(g->name_len, w->name_len);
    assert_memory_equal(g->name, w->name, w->name_len);
    assert_int_equal(g->mode, w->mode);
    assert_int_equal(g->uid, w->uid);
    assert_int_equal(g->gid, w->gid);
    assert_str_eq_opt(g->user, w->user);
    assert_str_eq_opt(g->group, w->group);
    assert_true(g->mtime == w->mtime);
    assert_true(g->atime == w->atime);
    assert_true(g->ctime == w->ctime);
    assert_true(g->size == w->size);
    assert_true(g->inode == w->inode);
    assert_true(g->dev == w->dev);
    assert_true(g->rdev == w->rdev);
    assert_int_equal(g->nlink, w->nlink);
    assert_int_equal(g->flags, w->flags);
    assert_str_eq_opt(g->target, w->target);
    assert_int_equal(g->nxattrs, w->nxattrs);
    for (uint16_t k = 0; k < w->nxattrs; k++) {
        assert_string_equal(g->xattrs[k].name, w->xattrs[k].name);
        assert_int_equal(g->xattrs[k].value_len, w->xattrs[k].value_len);
        if (w->xattrs[k].value_len)
            assert_memory_equal(g->xattrs[k].value, w->xattrs[k].value, w->xattrs[k].value_len);
    }
    if (w->type == CF_NODE_FILE) {
        assert_int_equal(g->ncontent, w->ncontent);
        for (uint32_t k = 0; k < w->ncontent; k++) {
            assert_int_equal(g->content[k].kind, w->content[k].kind);
            assert_true(g->content[k].len == w->content[k].len);
            if (w->content[k].kind == 0)
                assert_memory_equal(g->content[k].id.b, w->content[k].id.b, 32);
        }
    } else {
        assert_int_equal(g->ncontent, 0);
    }
    if (w->type == CF_NODE_DIR)
        assert_memory_equal(g->subtree.b, w->subtree.b, 32);
}

static void encode(cf_buf *b, const cf_tree *t)
{
    cf_buf_init(b, 0);
    th_ok(cf_tree__encode(b, t));
}

/* Decode a copy of exactly len bytes (so the sanitizers catch over-reads). */
static int decode_copy(cf_tree *t, const uint8_t *p, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    assert_non_null(c);
    if (len)
        memcpy(c, p, len);
    cf_tree__init(t);
    int rc = cf_tree__decode(t, c, len);
    free(c);
    if (rc) {
        /* a failed decode leaves an empty tree */
        assert_int_equal(t->count, 0);
        assert_null(t->nodes);
    }
    return rc;
}

/* A tree holding one node of every type, names sorted. */
static void every_type(cf_tree *t)
{
    static const char *names[] = {"a-file", "b-dir", "c-link", "d-fifo", "e-chr", "f-blk",
                                  "g-sock"};
    cf_tree__init(t);
    for (uint8_t ty = CF_NODE_FILE; ty <= CF_NODE_SOCKET; ty++)
        add(t, mk_node(ty, names[ty - 1], strlen(names[ty - 1]), 100u + ty));
}

/* ------------------------------------------------------------------ round trips */

static void roundtrip(const cf_tree *t)
{
    cf_buf b, b2;
    cf_tree back;
    encode(&b, t);
    th_ok(decode_copy(&back, b.data, b.len));
    assert_int_equal(back.count, t->count);
    for (size_t i = 0; i < t->count; i++)
        assert_node_eq(&back.nodes[i], &t->nodes[i]);
    encode(&b2, &back);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    cf_buf_free(&b);
    cf_buf_free(&b2);
    cf_tree__free(&back);
}

static void test_roundtrip_every_type(void **state)
{
    (void)state;
    cf_tree t;
    every_type(&t);
    roundtrip(&t);
    cf_tree__free(&t);
}

static void test_roundtrip_empty(void **state)
{
    (void)state;
    cf_tree t, back;
    cf_tree__init(&t);
    cf_buf b;
    encode(&b, &t);
    assert_int_equal(b.len, 9);
    th_ok(decode_copy(&back, b.data, b.len));
    assert_int_equal(back.count, 0);
    cf_tree__free(&back);
    cf_buf_free(&b);
}

static void test_roundtrip_content(void **state)
{
    (void)state;
    cf_tree t;
    cf_tree__init(&t);
    /* no content, one hole only, many items, the largest blob length */
    cf_node a = mk_node(CF_NODE_FILE, "empty", 5, 1);
    free(a.content);
    a.content = NULL;
    a.ncontent = 0;
    add(&t, a);
    cf_node h = mk_node(CF_NODE_FILE, "hole", 4, 2);
    h.ncontent = 1;
    h.content[0].kind = 1;
    h.content[0].len = UINT64_MAX;
    add(&t, h);
    cf_node m = mk_node(CF_NODE_FILE, "many", 4, 3);
    free(m.content);
    m.ncontent = 5000;
    m.content = calloc(5000, sizeof(cf_content_item));
    assert_non_null(m.content);
    for (uint32_t k = 0; k < 5000; k++) {
        m.content[k].kind = (uint8_t)(k % 7 == 3);
        m.content[k].len = k % 7 == 3 ? 4096u * k : UINT32_MAX - k;
        if (!m.content[k].kind)
            th_id(&m.content[k].id, k);
    }
    add(&t, m);
    roundtrip(&t);
    cf_tree__free(&t);
}

static void test_names_arbitrary_bytes(void **state)
{
    (void)state;
    uint8_t long_name[1000];
    for (size_t i = 0; i < sizeof(long_name); i++)
        long_name[i] = (uint8_t)(0x80 + i % 0x7f); /* no '/', no NUL, not UTF-8 */
    const struct {
        const char *p;
        size_t len;
    } names[] = {
        {"\x01", 1},
        {"\t\n\r", 3},
        {" ", 1},
        {"...", 3},
        {".hidden", 7},
        {"..x", 3},
        {"\\back\\slash", 11},
        {"\xc3\xa9t\xc3\xa9", 5},            /* valid UTF-8 */
        {"\xff\xfe\xfd", 3},                 /* invalid UTF-8 */
        {"\xc3", 1},                         /* truncated UTF-8 sequence */
        {(const char *)long_name, 255},      /* NAME_MAX */
        {(const char *)long_name, 256},      /* past NAME_MAX: the format allows it */
        {(const char *)long_name, 1000},
        {"\x7f", 1},
    };
    cf_tree t;
    cf_tree__init(&t);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        add(&t, mk_node((uint8_t)(CF_NODE_FILE + i % 7), names[i].p, names[i].len, i));
    cf_tree__sort(&t);
    roundtrip(&t);
    cf_tree__free(&t);
}

/* ------------------------------------------------------------------ sort and find */

static void test_sort_and_find(void **state)
{
    (void)state;
    const char *in[] = {"b", "a", "ab", "\xff", "Z", "a\x01", "aa", "B", "\x80", "0", "a b"};
    /* byte order, unsigned, a prefix before its extensions */
    const char *want[] = {"0", "B", "Z", "a", "a\x01", "a b", "aa", "ab", "b", "\x80", "\xff"};
    const size_t n = sizeof(in) / sizeof(in[0]);
    cf_tree t;
    cf_tree__init(&t);
    assert_null(cf_tree__find(&t, "a")); /* empty tree */
    for (size_t i = 0; i < n; i++)
        add(&t, mk_node(CF_NODE_FIFO, in[i], strlen(in[i]), i));
    cf_tree__sort(&t);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(t.nodes[i].name_len, strlen(want[i]));
        assert_memory_equal(t.nodes[i].name, want[i], strlen(want[i]));
    }
    for (size_t i = 0; i < n; i++) {
        const cf_node *f = cf_tree__find(&t, want[i]);
        assert_non_null(f);
        assert_ptr_equal(f, &t.nodes[i]);
    }
    const char *absent[] = {"", "c", "a\x02", "A", "\xfe", "aaa", "a ", "\xff\xff"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        assert_null(cf_tree__find(&t, absent[i]));
    roundtrip(&t);

    /* lookup in a large tree */
    cf_tree big;
    cf_tree__init(&big);
    char name[32];
    for (unsigned i = 0; i < 5000; i++) {
        int l = snprintf(name, sizeof(name), "file-%u", i * 7919u % 5000u);
        add(&big, mk_node(CF_NODE_SOCKET, name, (size_t)l, i));
    }
    cf_tree__sort(&big);
    for (unsigned i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "file-%u", i);
        const cf_node *f = cf_tree__find(&big, name);
        assert_non_null(f);
        assert_int_equal(f->name_len, strlen(name));
        assert_memory_equal(f->name, name, strlen(name));
    }
    assert_null(cf_tree__find(&big, "file-5000"));
    assert_null(cf_tree__find(&big, "file-"));
    cf_tree__free(&big);
    cf_tree__free(&t);
}

static void test_node_copy(void **state)
{
    (void)state;
    cf_tree t;
    every_type(&t);
    for (size_t i = 0; i < t.count; i++) {
        cf_node c;
        th_ok(cf_node__copy(&c, &t.nodes[i]));
        assert_node_eq(&c, &t.nodes[i]);
        assert_ptr_not_equal(c.name, t.nodes[i].name);
        cf_node__free(&c);
    }
    cf_tree__free(&t);
}

/* ------------------------------------------------------------------ rejected trees */

/* Encode a one-node (or two-node) tree without validation and expect decode to refuse it. */
static void expect_rejected(cf_tree *t, const char *needle)
{
    cf_buf b;
    cf_tree back;
    encode(&b, t);
    th_expect(decode_copy(&back, b.data, b.len), CF_ECORRUPT, needle);
    cf_buf_free(&b);
    cf_tree__free(t);
}

static void test_reject_bad_names(void **state)
{
    (void)state;
    const struct {
        const char *p;
        size_t len;
    } bad[] = {{"", 0},       {".", 1},    {"..", 2},  {"/", 1},       {"a/b", 3},
               {"trailing/", 9}, {"/lead", 5}, {"a\0b", 3}, {"\0", 1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (uint8_t ty = CF_NODE_FILE; ty <= CF_NODE_SOCKET; ty++) {
            cf_tree t;
            cf_tree__init(&t);
            add(&t, mk_node(ty, bad[i].p, bad[i].len, i));
            expect_rejected(&t, "entry 0");
        }
    }
    /* a bad name after good ones */
    cf_tree t;
    cf_tree__init(&t);
    add(&t, mk_node(CF_NODE_FILE, "..", 2, 1));
    add(&t, mk_node(CF_NODE_FILE, "a", 1, 2));
    add(&t, mk_node(CF_NODE_FILE, "b/c", 3, 3));
    cf_tree__sort(&t);
    expect_rejected(&t, NULL);
}

static void test_reject_order(void **state)
{
    (void)state;
    cf_tree t;
    cf_tree__init(&t);
    add(&t, mk_node(CF_NODE_FILE, "b", 1, 1));
    add(&t, mk_node(CF_NODE_FILE, "a", 1, 2));
    expect_rejected(&t, "out of order");
    /* duplicates are out of order too */
    cf_tree__init(&t);
    add(&t, mk_node(CF_NODE_FILE, "same", 4, 1));
    add(&t, mk_node(CF_NODE_DIR, "same", 4, 2));
    expect_rejected(&t, "out of order");
    /* a name before its own prefix */
    cf_tree__init(&t);
    add(&t, mk_node(CF_NODE_FILE, "ab", 2, 1));
    add(&t, mk_node(CF_NODE_FILE, "a", 1, 2));
    expect_rejected(&t, "out of order");
    /* signed-char order is wrong: 0x80 sorts after 'z' */
    cf_tree__init(&t);
    add(&t, mk_node(CF_NODE_FILE, "\x80", 1, 1));
    add(&t, mk_node(CF_NODE_FILE, "z", 1, 2));
    expect_rejected(&t, "out of order");
}

static void test_reject_bad_fields(void **state)
{
    (void)state;
    cf_tree t;
    /* unknown node types */
    const uint8_t bad_types[] = {0, 8, 200, 255};
    for (size_t i = 0; i < sizeof(bad_types); i++) {
        cf_tree__init(&t);
        add(&t, mk_node(CF_NODE_FIFO, "x", 1, i));
        t.nodes[0].type = bad_types[i];
        expect_rejected(&t, "entry 0");
    }
    /* unknown content kind */
    cf_tree__init(&t);
    add(&t, mk_node(CF_NODE_FILE, "x", 1, 1));
    t.nodes[0].content[2].kind = 2;
    expect_rejected(&t, "entry 0");
    /* a blob longer than any blob can be */
    cf_tree__init(&t);
    add(&t, mk_node(CF_NODE_FILE, "x", 1, 1));
    t.nodes[0].content[0].len = (uint64_t)UINT32_MAX + 1;
    expect_rejected(&t, "entry 0");
    /* an xattr with an empty name */
    cf_tree__init(&t);
    add(&t, mk_node(CF_NODE_FILE, "x", 1, 1));
    t.nodes[0].xattrs[1].name[0] = '\0';
    expect_rejected(&t, "entry 0");
}

static void test_reject_header(void **state)
{
    (void)state;
    cf_tree t, back;
    every_type(&t);
    cf_buf b;
    encode(&b, &t);
    uint8_t *c = malloc(b.len + 1);
    assert_non_null(c);
    memcpy(c, b.data, b.len);
    c[1] = 'X';
    th_expect(decode_copy(&back, c, b.len), CF_ECORRUPT, "bad header");
    memcpy(c, b.data, b.len);
    c[4] = 2; /* version */
    th_expect(decode_copy(&back, c, b.len), CF_ECORRUPT, NULL);
    const uint32_t counts[] = {0, 6, 8, 1000, 1u << 24, (1u << 24) + 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        memcpy(c, b.data, b.len);
        cf_le32_put(c + 5, counts[i]);
        th_expect(decode_copy(&back, c, b.len), CF_ECORRUPT, NULL);
    }
    /* trailing bytes */
    memcpy(c, b.data, b.len);
    c[b.len] = 0;
    th_expect(decode_copy(&back, c, b.len + 1), CF_ECORRUPT, "trailing");
    free(c);
    cf_buf_free(&b);
    cf_tree__free(&t);
}

static void test_truncated_every_length(void **state)
{
    (void)state;
    cf_tree t, back;
    every_type(&t);
    add(&t, mk_node(CF_NODE_SYMLINK, "zz-\xff-long-link", 14, 99));
    cf_buf b;
    encode(&b, &t);
    for (size_t len = 0; len < b.len; len++) {
        int rc = decode_copy(&back, b.data, len);
        if (rc != CF_ECORRUPT)
            fail_msg("a %zu-byte prefix of a %zu-byte tree decoded with %s", len, b.len,
                     cf_error_name(rc));
        assert_non_null(strstr(cf_error_last()->message, "tree is damaged"));
    }
    th_ok(decode_copy(&back, b.data, b.len));
    assert_int_equal(back.count, t.count);
    cf_tree__free(&back);
    cf_buf_free(&b);
    cf_tree__free(&t);
}

/* Random damage: decode fails with CF_ECORRUPT or succeeds; whatever decodes re-encodes to
 * the same bytes. */
static void test_garbled(void **state)
{
    (void)state;
    cf_tree t, back;
    every_type(&t);
    cf_buf b;
    encode(&b, &t);
    uint8_t *c = malloc(b.len);
    assert_non_null(c);
    uint64_t s = 77;
    size_t ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(c, b.data, b.len);
        int flips = 1 + (int)(th_next(&s) % 3);
        for (int f = 0; f < flips; f++)
            c[th_next(&s) % b.len] = (uint8_t)th_next(&s);
        int rc = decode_copy(&back, c, b.len);
        if (rc == 0) {
            cf_buf again;
            encode(&again, &back);
            assert_int_equal(again.len, b.len);
            assert_memory_equal(again.data, c, b.len);
            cf_buf_free(&again);
            cf_tree__free(&back);
            ok++;
        } else {
            assert_int_equal(rc, CF_ECORRUPT);
        }
    }
    assert_true(ok > 0); /* most single-byte changes of metadata are still valid trees */
    free(c);
    cf_buf_free(&b);
    cf_tree__free(&t);
}

/*
 * Encoding must never produce bytes that decode to something else. A symlink target longer
 * than 65535 bytes does not fit the u16 length prefix; it must be refused (or round trip),
 * not written with a wrapped length followed by the full target.
 */
static void test_encode_long_target(void **state)
{
    (void)state;
    cf_tree t, back;
    cf_tree__init(&t);
    cf_node n = mk_node(CF_NODE_SYMLINK, "link", 4, 1);
    free(n.target);
    n.target = malloc(70001);
    assert_non_null(n.target);
    memset(n.target, 'x', 70000);
    n.target[70000] = '\0';
    add(&t, n);
    cf_buf b;
    cf_buf_init(&b, 0);
    int rc = cf_tree__encode(&b, &t);
    if (rc == 0) {
        rc = decode_copy(&back, b.data, b.len);
        if (rc != 0)
            fail_msg("cf_tree__encode wrote a tree it cannot decode (%s): a 70000-byte symlink "
                     "target overflows the u16 length",
                     cf_error_last()->message);
        assert_int_equal(back.count, 1);
        assert_string_equal(back.nodes[0].target, t.nodes[0].target);
        cf_tree__free(&back);
    } else {
        assert_int_equal(rc, CF_EINVAL);
    }
    cf_buf_free(&b);
    cf_tree__free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_roundtrip_empty),
        cmocka_unit_test(test_roundtrip_content),
        cmocka_unit_test(test_names_arbitrary_bytes),
        cmocka_unit_test(test_sort_and_find),
        cmocka_unit_test(test_node_copy),
        cmocka_unit_test(test_reject_bad_names),
        cmocka_unit_test(test_reject_order),
        cmocka_unit_test(test_reject_bad_fields),
        cmocka_unit_test(test_reject_header),
        cmocka_unit_test(test_truncated_every_length),
        cmocka_unit_test(test_garbled),
        cmocka_unit_test(test_encode_long_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
