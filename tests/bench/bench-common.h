/*
 * What the two benchmark programs (bench.c, proxy-bench.c) share: the PC/SC
 * types they load from a client library by hand, the timing and statistics of
 * their rounds (so both measure and summarise the same way), the one operation
 * both time, and their --only filter.
 *
 * Included by both; each program defines its own `struct lib` (the loaded
 * library and its card), which the round timer only passes through.
 */
#ifndef PCSC_BRIDGE_BENCH_COMMON_H
#define PCSC_BRIDGE_BENCH_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ PC/SC types */

/* As pcsc-lite defines them on Linux (LP64: long is 64-bit); the programs
 * dlopen the libraries, so they carry no pcsc-lite headers. */
typedef long LONG;
typedef unsigned long DWORD;
typedef LONG SCARDCONTEXT;
typedef LONG SCARDHANDLE;

typedef struct {
    DWORD dwProtocol;
    DWORD cbPciLength;
} IO_REQ;

#define S_SCOPE_SYSTEM 2
#define S_SHARE_SHARED 2
#define S_PROTO_T0 1
#define S_PROTO_T1 2
#define S_LEAVE_CARD 0

typedef LONG (*fn_establish)(DWORD, const void *, const void *, SCARDCONTEXT *);
typedef LONG (*fn_release)(SCARDCONTEXT);
typedef LONG (*fn_list)(SCARDCONTEXT, const char *, char *, DWORD *);
typedef LONG (*fn_connect)(SCARDCONTEXT, const char *, DWORD, DWORD, SCARDHANDLE *, DWORD *);
typedef LONG (*fn_disconnect)(SCARDHANDLE, DWORD);
typedef LONG (*fn_transmit)(SCARDHANDLE, const IO_REQ *, const unsigned char *, DWORD,
                            IO_REQ *, unsigned char *, DWORD *);

/* ------------------------------------------------------ timing, statistics */

struct lib;

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* quantile of a copy of v (linear interpolation); q in [0,1] */
static inline double quantile(const double *v, int n, double q)
{
    if (n <= 0)
        return 0;
    double *t = malloc(sizeof(double) * (size_t)n);
    memcpy(t, v, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof(double), cmp_d);
    double pos = q * (n - 1);
    int i = (int)pos;
    double f = pos - i;
    double r = (i + 1 < n) ? t[i] * (1 - f) + t[i + 1] * f : t[i];
    free(t);
    return r;
}

/* One round: `iters` calls of op(l), each timed on its own (tmp holds at least
 * `iters`). Returns the median per call in ns, or -1 with the failing call's
 * code in *err. The median, not the mean, so a stray preemption does not count. */
static inline double time_round(LONG (*op)(struct lib *), struct lib *l, int iters, double *tmp,
                                LONG *err)
{
    for (int i = 0; i < iters; i++) {
        uint64_t t0 = now_ns();
        LONG rv = op(l);
        uint64_t t1 = now_ns();
        if (rv) {
            *err = rv;
            return -1;
        }
        tmp[i] = (double)(t1 - t0);
    }
    return quantile(tmp, iters, 0.5);
}

/* ------------------------------------------------------------- operations */

/* SCardEstablishContext + SCardListReaders + SCardReleaseContext: 0 or the
 * first failing call's code (Release runs whatever List answered). */
static inline LONG establish_list_release(fn_establish establish, fn_list list, fn_release release)
{
    SCARDCONTEXT c;
    char buf[4096];
    DWORD n = sizeof buf;
    LONG rv = establish(S_SCOPE_SYSTEM, NULL, NULL, &c);
    if (rv)
        return rv;
    rv = list(c, NULL, buf, &n);
    LONG rv2 = release(c);
    return rv ? rv : rv2;
}

/* ---------------------------------------------------------------- options */

/* whether `name` is one of the comma-separated names in `list` (--only);
 * no list means every name */
static inline int in_list(const char *list, const char *name)
{
    if (!list)
        return 1;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return 1;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

#endif
