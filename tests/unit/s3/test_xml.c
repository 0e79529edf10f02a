/*
 * test_xml.c - the bounded XML reader used for S3 (and later Azure) responses: listings,
 * error bodies, entity decoding, and refusal of malformed or hostile documents.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "storage/http/xml.h"
#include "util/util.h"

static int text(char **out, const char *doc, const char *path)
{
    return cf_xml_text(out, doc, strlen(doc), path, 4096);
}

static void expect_text(const char *doc, const char *path, const char *want)
{
    char *t = NULL;
    int rc = text(&t, doc, path);
    if (rc != 0)
        fail_msg("path '%s': rc %d", path, rc);
    assert_string_equal(t, want);
    free(t);
}

static void expect_rc(const char *doc, const char *path, int want)
{
    char *t = NULL;
    int rc = text(&t, doc, path);
    if (rc != want)
        fail_msg("path '%s' in '%.60s': rc %d, expected %d", path, doc, rc, want);
    assert_null(t);
}

static const char *LIST =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
    "<Name>bucket</Name><Prefix>p/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>"
    "<IsTruncated>true</IsTruncated>"
    "<Contents><Key>p/data/ab/abcd</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
    "<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag><Size>10</Size>"
    "<StorageClass>STANDARD</StorageClass></Contents>"
    "<Contents><Key>p/a&amp;b &lt;c&gt; &#233;&#x4E2D;</Key><Size>0</Size></Contents>"
    "<Contents>\n  <Key><![CDATA[p/raw<&>]]></Key>\n  <Size>123456789012</Size>\n</Contents>"
    "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
    "</ListBucketResult>";

typedef struct {
    char keys[8][64];
    char sizes[8][32];
    size_t n;
} coll;

static int collect(const char *inner, size_t len, void *payload)
{
    coll *c = payload;
    char *k = NULL, *s = NULL;
    assert_int_equal(cf_xml_text(&k, inner, len, "Key", 1024), 0);
    assert_int_equal(cf_xml_text(&s, inner, len, "Size", 32), 0);
    assert_true(c->n < 8);
    snprintf(c->keys[c->n], sizeof(c->keys[0]), "%s", k);
    snprintf(c->sizes[c->n], sizeof(c->sizes[0]), "%s", s);
    c->n++;
    free(k);
    free(s);
    return 0;
}

static void test_listing(void **state)
{
    (void)state;
    coll c = {0};
    assert_int_equal(cf_xml_each(LIST, strlen(LIST), "ListBucketResult/Contents", collect, &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.keys[0], "p/data/ab/abcd");
    assert_string_equal(c.sizes[0], "10");
    assert_string_equal(c.keys[1], "p/a&b <c> \xc3\xa9\xe4\xb8\xad");
    assert_string_equal(c.sizes[1], "0");
    assert_string_equal(c.keys[2], "p/raw<&>");
    assert_string_equal(c.sizes[2], "123456789012");
    expect_text(LIST, "ListBucketResult/IsTruncated", "true");
    expect_text(LIST, "ListBucketResult/NextContinuationToken",
                "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    expect_text(LIST, "*/Name", "bucket");
    expect_text(LIST, "ListBucketResult/Contents/ETag", "\"9b2cf535f27731c974343645a3985328\"");
    expect_rc(LIST, "ListBucketResult/ContinuationToken", CF_ENOTFOUND);
    expect_rc(LIST, "Contents", CF_ENOTFOUND); /* paths start at the top */
}

static int stop_cb(const char *inner, size_t len, void *payload)
{
    (void)inner;
    (void)len;
    int *n = payload;
    return ++*n == 2 ? 42 : 0;
}

static void test_stop(void **state)
{
    (void)state;
    int n = 0;
    assert_int_equal(cf_xml_each(LIST, strlen(LIST), "ListBucketResult/Contents", stop_cb, &n), 42);
    assert_int_equal(n, 2);
}

static void test_error_body(void **state)
{
    (void)state;
    const char *err = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code>"
                      "<Message>The request signature we calculated does not match.</Message>"
                      "<StringToSign>AWS4-HMAC-SHA256\n...</StringToSign><RequestId>1</RequestId>"
                      "</Error>";
    expect_text(err, "Error/Code", "SignatureDoesNotMatch");
    expect_text(err, "Error/Message", "The request signature we calculated does not match.");
    /* Namespace prefixes and attributes (with '>' inside quotes) are ignored. */
    const char *ns = "<s3:Error xmlns:s3=\"x\" a='1>2'><s3:Code>SlowDown</s3:Code></s3:Error>";
    expect_text(ns, "Error/Code", "SlowDown");
    /* Self-closing and empty elements have empty text. */
    expect_text("<A><B/><C></C></A>", "A/B", "");
    expect_text("<A><B/><C></C></A>", "A/C", "");
    /* Comments are skipped, child elements' text is kept. */
    expect_text("<A><!-- <B>no</B> --><B>x<i>y</i>z</B></A>", "A/B", "xyz");
}

static int count_cb(const char *inner, size_t len, void *payload)
{
    (void)inner;
    (void)len;
    ++*(int *)payload;
    return 0;
}

static void test_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "<A><B>x</A></B>",          /* crossed */
        "<A><B>x</B>",              /* truncated */
        "<A><B>x</C></A>",          /* wrong end tag */
        "</A>",                     /* end without start */
        "<A><B x=\"1></B></A>",     /* unterminated attribute */
        "<!DOCTYPE a [<!ENTITY e 'x'>]><A>&e;</A>",
        "<A><?pi</A>",              /* unterminated processing instruction */
        "<A><!-- x </A>",           /* unterminated comment */
        "<A><![CDATA[x</A>",        /* unterminated CDATA */
        "<>x</>",
        "<A><:B>x</:B></A>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n = 0;
        int rc = cf_xml_each(bad[i], strlen(bad[i]), "A/B", count_cb, &n);
        if (rc != CF_ECORRUPT)
            fail_msg("'%s': rc %d, expected CF_ECORRUPT", bad[i], rc);
    }
    /* Bad entities. */
    const char *ents[] = {"<A><B>&bogus;</B></A>", "<A><B>&amp</B></A>", "<A><B>&#0;</B></A>",
                          "<A><B>&#xD800;</B></A>", "<A><B>&#x110000;</B></A>",
                          "<A><B>&#;</B></A>", "<A><B>&#x;</B></A>", "<A><B>&#12a;</B></A>"};
    for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++)
        expect_rc(ents[i], "A/B", CF_ECORRUPT);
    /* Bounded output: text longer than max is refused, exactly max is fine. */
    char *t = NULL;
    assert_int_equal(cf_xml_text(&t, "<A>abcdef</A>", 13, "A", 5), CF_ECORRUPT);
    assert_null(t);
    assert_int_equal(cf_xml_text(&t, "<A>abcdef</A>", 13, "A", 6), 0);
    assert_string_equal(t, "abcdef");
    free(t);
    assert_int_equal(cf_xml_text(&t, "<A>a&amp;b</A>", 14, "A", 2), CF_ECORRUPT);
    assert_int_equal(cf_xml_text(&t, "<A><![CDATA[abc]]></A>", 22, "A", 2), CF_ECORRUPT);
    /* Depth is bounded. */
    char deep[512];
    size_t k = 0;
    for (int i = 0; i < 40; i++, k += 3)
        memcpy(deep + k, "<a>", 3);
    for (int i = 0; i < 40; i++, k += 4)
        memcpy(deep + k, "</a>", 4);
    deep[k] = '\0';
    expect_rc(deep, "a", CF_ECORRUPT);
    int cnt = 0;
    assert_int_equal(cf_xml_each(deep, k, "a", count_cb, &cnt), CF_ECORRUPT);
    /* Bad paths. */
    assert_int_equal(cf_xml_text(&t, "<A/>", 4, "", 10), CF_EINVAL);
    assert_int_equal(cf_xml_text(&t, "<A/>", 4, "A//B", 10), CF_EINVAL);
}

/* Arbitrary bytes never crash the reader (a poor man's fuzzer; the real one is libFuzzer). */
static void test_random_bytes(void **state)
{
    (void)state;
    uint32_t x = 12345;
    char buf[256];
    const char alphabet[] = "<>/!?-[]&#;x=\"' ABC\n";
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(round % 200) + 1;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf[i] = alphabet[x % (sizeof(alphabet) - 1)];
        }
        char *t = NULL;
        int rc = cf_xml_text(&t, buf, n, "A/B", 64);
        assert_true(rc == 0 || rc == CF_ECORRUPT || rc == CF_ENOTFOUND);
        free(t);
        int cnt = 0;
        rc = cf_xml_each(buf, n, "A/B", count_cb, &cnt);
        assert_true(rc == 0 || rc == CF_ECORRUPT);
    }
}

static void test_escape(void **state)
{
    (void)state;
    cf_buf b;
    cf_buf_init(&b, 0);
    assert_int_equal(cf_xml_escape(&b, "\"etag\"&<x>'"), 0);
    assert_string_equal((const char *)b.data, "&quot;etag&quot;&amp;&lt;x&gt;&apos;");
    char *t = NULL;
    char *doc = cf_asprintf("<E>%s</E>", (const char *)b.data);
    assert_int_equal(cf_xml_text(&t, doc, strlen(doc), "E", 100), 0);
    assert_string_equal(t, "\"etag\"&<x>'");
    free(t);
    free(doc);
    cf_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listing),     cmocka_unit_test(test_stop),
        cmocka_unit_test(test_error_body),  cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_random_bytes), cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
