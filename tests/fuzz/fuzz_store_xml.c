/*
 * fuzz_store_xml.c - the XML object stores answer with, read from the network: listing pages
 * as the S3 and Azure drivers parse them (ListObjectsV2; List Blobs, with the Azure driver's
 * decoder of percent-encoded names), error bodies (Error/Code, Error/Message) and the raw
 * element walk. Nothing may crash or leak; every name a page accepts is a valid object name
 * with a size that came from the document.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/azure/azure.h"
#include "storage/http/listing.h"
#include "storage/http/xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int accept_item(const char *name, uint64_t size, void *payload)
{
    (void)size;
    size_t *n = payload;
    if (!cf_storage_name_valid(name))
        abort();
    (*n)++;
    return *n > 100000 ? 1 : 0;
}

static void page(const char *doc, size_t len, const char *prefix, const char *item, const char *name,
                 const char *sz, int (*fix)(char *, const char *, size_t))
{
    cf_list_page p = {.prefix = prefix, .name_path = name, .size_path = sz, .fix_name = fix};
    size_t n = 0;
    int rc = cf_list_page_parse(&p, doc, len, item);
    if (rc == 0)
        cf_list_page_emit(&p, accept_item, &n);
    else if (rc != CF_ENOMEM && rc != CF_EIO)
        abort();
    cf_list_page_free(&p);
}

static int count(const char *inner, size_t inner_len, void *payload)
{
    char *text = NULL;
    if (cf_xml_decode(&text, inner, inner_len, 4096) == 0 && strlen(text) > 4096)
        abort();
    free(text);
    (*(size_t *)payload)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *doc = (const char *)data;
    page(doc, size, "", "ListBucketResult/Contents", "Key", "Size", NULL);
    page(doc, size, "repo/", "ListBucketResult/Contents", "Key", "Size", NULL);
    page(doc, size, "", "EnumerationResults/Blobs/Blob", "Name", "Properties/Content-Length",
         cf_azure_list_name);
    static const char *const texts[] = {"Error/Code", "Error/Message", "ListBucketResult/IsTruncated",
                                        "ListBucketResult/NextContinuationToken",
                                        "EnumerationResults/NextMarker", "*/*"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char *t = NULL;
        int rc = cf_xml_text(&t, doc, size, texts[i], 4096);
        if (rc == 0 && (!t || strlen(t) > 4096))
            abort();
        free(t);
    }
    size_t n = 0;
    cf_xml_each(doc, size, "*/*/*", count, &n);
    cf_buf esc;
    cf_buf_init(&esc, 0);
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
        cf_xml_escape(&esc, s);
        free(s);
    }
    cf_buf_free(&esc);
    return 0;
}
