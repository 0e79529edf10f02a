/*
 * backoff.h - the retry policy shared by remote storage drivers: how many attempts, and how
 * long to wait before each retry (exponential backoff with full jitter).
 */
#ifndef CF_STORAGE_RETRY_BACKOFF_H
#define CF_STORAGE_RETRY_BACKOFF_H

#include <stdint.h>

#define CF_RETRY_BASE_MS 100u
#define CF_RETRY_CAP_MS 10000u
#define CF_RETRY_ATTEMPTS_DEFAULT 6u
#define CF_RETRY_ATTEMPTS_MAX 100u

typedef struct {
    unsigned attempts; /* total attempts, including the first (>= 1) */
    uint32_t base_ms;
    uint32_t cap_ms;
} cf_retry_policy;

/* The default policy, with attempts taken from the environment variable COFFER_RETRIES (a
 * number from 1 to 100; anything else is ignored). */
void cf_retry_policy_from_env(cf_retry_policy *out);

/*
 * The wait before retry number `retry` (1 for the first retry): a uniformly random time in
 * [0, min(cap, base * 2^(retry-1))] ("full jitter"). If the server asked for a delay
 * (retry_after_ms > 0, e.g. from Retry-After), the wait is at least that, capped at cap.
 */
uint32_t cf_retry_delay_ms(const cf_retry_policy *p, unsigned retry, uint32_t retry_after_ms);

/* Sleep for ms milliseconds (restarting after signals). */
void cf_retry_sleep_ms(uint32_t ms);

#endif
