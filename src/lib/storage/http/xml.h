/*
 * xml.h - a small, bounded reader for the XML documents object stores answer with (S3 and
 * Azure listings and error bodies): find elements by path, decode their text. Not a general
 * XML parser: no DTDs (refused), no namespaces (prefixes are ignored), no attributes values.
 */
#ifndef CF_STORAGE_HTTP_XML_H
#define CF_STORAGE_HTTP_XML_H

#include <stddef.h>

#include "util/util.h"

/* Deepest nesting accepted; deeper documents are CF_ECORRUPT. */
#define CF_XML_MAX_DEPTH 32

/*
 * Paths are slash-separated element names from the top of the text given, compared without
 * namespace prefixes; "*" matches any one element: "Error/Code",
 * "ListBucketResult/Contents", or "Key" inside the content of a Contents element.
 */

/* Called with the raw content (between the start and end tags) of each matching element.
 * A non-zero return stops the walk and is returned. */
typedef int (*cf_xml_cb)(const char *inner, size_t inner_len, void *payload);

/* Call cb for every element matching path, in document order. Returns 0, cb's non-zero
 * return, or CF_ECORRUPT for malformed XML (checked up to where the walk stopped). */
int cf_xml_each(const char *doc, size_t len, const char *path, cf_xml_cb cb, void *payload);

/*
 * The decoded text of the first element matching path: entities (&amp; &lt; &gt; &quot;
 * &apos; &#N; &#xN;) decoded, CDATA copied, child elements skipped. *out is malloc'd and
 * NUL-terminated (the caller frees it). Returns 0, CF_ENOTFOUND if no element matches,
 * CF_ECORRUPT for malformed XML or text longer than max bytes, CF_ENOMEM.
 */
int cf_xml_text(char **out, const char *doc, size_t len, const char *path, size_t max);

/* Decode the text content of inner (as passed to a cf_xml_cb) into *out, as cf_xml_text. */
int cf_xml_decode(char **out, const char *inner, size_t inner_len, size_t max);

/* Append s to buf with &, <, >, " and ' escaped; returns 0 or CF_ENOMEM. */
int cf_xml_escape(cf_buf *buf, const char *s);

#endif
