/*
 * backoff.c - retry policy: attempts from COFFER_RETRIES, exponential backoff with full jitter
 * drawn from a per-thread generator seeded by the kernel.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#include "storage/retry/backoff.h"

void cf_retry_policy_from_env(cf_retry_policy *out)
{
    out->attempts = CF_RETRY_ATTEMPTS_DEFAULT;
    out->base_ms = CF_RETRY_BASE_MS;
    out->cap_ms = CF_RETRY_CAP_MS;
    const char *s = getenv("COFFER_RETRIES");
    if (s && *s) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno == 0 && end && *end == '\0' && v >= 1 && v <= CF_RETRY_ATTEMPTS_MAX)
            out->attempts = (unsigned)v;
    }
}

/* xorshift64*, one state per thread, seeded from getrandom (or the clock if that fails). */
static uint64_t next_random(void)
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;
        }
        state = seed ? seed : 0x2545F4914F6CDD1Dull;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1Dull;
}

uint32_t cf_retry_delay_ms(const cf_retry_policy *p, unsigned retry, uint32_t retry_after_ms)
{
    uint64_t ceiling = p->base_ms;
    for (unsigned i = 1; i < retry && ceiling < p->cap_ms; i++)
        ceiling *= 2;
    if (ceiling > p->cap_ms)
        ceiling = p->cap_ms;
    uint64_t delay = next_random() % (ceiling + 1);
    if (retry_after_ms > delay)
        delay = retry_after_ms;
    if (delay > p->cap_ms)
        delay = p->cap_ms;
    return (uint32_t)delay;
}

void cf_retry_sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}
