/*
 * pcsc-bridge benchmark: two PC/SC client libraries in one process.
 *
 * Library A ("native") and library B ("bridge") are loaded side by side with
 * dlopen(RTLD_NOW | RTLD_LOCAL).  Both normally carry SONAME libpcsclite.so.1;
 * glibc keeps two objects apart as long as they are different files, so the
 * program checks that the resolved SCard* addresses differ and falls back to
 * dlmopen(LM_ID_NEWLM) for B when they do not (e.g. the same file twice).
 *
 * Both talk to the same pcscd (PCSCLITE_CSOCK_NAME, read by each library) and
 * the same card.  Scenarios run in interleaved rounds (A B B A A B ...), so slow
 * drift of the machine hits both libraries alike; the reported ratio is the
 * median of the per-round ratios B/A.
 *
 * Usage: bench [options] LIB_A LIB_B
 *   --reader NAME      reader to use (default: first reader with a card, via A)
 *   --ctl PATH         card control socket (Unix stream; "remove\n"/"insert\n",
 *                      one reply line).  Without it the event scenario is skipped.
 *   --iters N          operations per round          (env BENCH_ITERS, 2000)
 *   --rounds N         rounds per scenario           (env BENCH_ROUNDS, 15)
 *   --event-rounds N   removals and insertions each  (env BENCH_EVENT_ROUNDS, 6)
 *   --quick            iters 200, rounds 5, event rounds 2
 *   --only LIST        comma-separated scenarios: transmit-8, transmit-4096,
 *                      transaction, context, event
 *   --label-a S / --label-b S   names in the output (default native / bridge)
 *   --load dlopen|dlmopen       how to load B (default: dlopen, dlmopen fallback)
 *
 * Exit status: 0 when every scenario ran, 1 when any call failed, 2 on usage.
 * The ratios never affect the exit status.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"

typedef struct {
    const char *szReader;
    void *pvUserData;
    DWORD dwCurrentState;
    DWORD dwEventState;
    DWORD cbAtr;
    unsigned char rgbAtr[33];
} READERSTATE;

#define S_STATE_UNAWARE 0x0
#define S_STATE_CHANGED 0x2
#define S_STATE_EMPTY 0x10
#define S_STATE_PRESENT 0x20
#define S_E_TIMEOUT ((LONG)0x8010000A)

typedef LONG (*fn_begin)(SCARDHANDLE);
typedef LONG (*fn_end)(SCARDHANDLE, DWORD);
typedef LONG (*fn_gsc)(SCARDCONTEXT, DWORD, READERSTATE *, DWORD);
typedef LONG (*fn_cancel)(SCARDCONTEXT);

struct lib {
    const char *label;
    const char *path;
    void *h;
    int via_dlmopen;
    fn_establish Establish;
    fn_release Release;
    fn_list List;
    fn_connect Connect;
    fn_disconnect Disconnect;
    fn_begin Begin;
    fn_end End;
    fn_transmit Transmit;
    fn_gsc GetStatusChange;
    fn_cancel Cancel;
    SCARDCONTEXT ctx;
    SCARDHANDLE card;
    DWORD proto;
    long rss_kib; /* VmRSS growth from loading + first use */
};

static struct lib L[2];
static const char *g_reader;
static char g_reader_buf[4096];
static const char *g_ctl;
static int g_iters = 2000, g_rounds = 15, g_event_rounds = 6;
static const char *g_only;
static int g_failed;

/* ------------------------------------------------------------------ utils */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static long vmrss_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static int want(const char *name) { return in_list(g_only, name); }

/* ---------------------------------------------------------------- loading */

static void *sym(struct lib *l, const char *name)
{
    void *p = dlsym(l->h, name);
    if (!p)
        die("%s: dlsym(%s): %s", l->path, name, dlerror());
    return p;
}

static void resolve(struct lib *l)
{
    l->Establish = (fn_establish)sym(l, "SCardEstablishContext");
    l->Release = (fn_release)sym(l, "SCardReleaseContext");
    l->List = (fn_list)sym(l, "SCardListReaders");
    l->Connect = (fn_connect)sym(l, "SCardConnect");
    l->Disconnect = (fn_disconnect)sym(l, "SCardDisconnect");
    l->Begin = (fn_begin)sym(l, "SCardBeginTransaction");
    l->End = (fn_end)sym(l, "SCardEndTransaction");
    l->Transmit = (fn_transmit)sym(l, "SCardTransmit");
    l->GetStatusChange = (fn_gsc)sym(l, "SCardGetStatusChange");
    l->Cancel = (fn_cancel)sym(l, "SCardCancel");
}

static const char *obj_of(void *fn)
{
    Dl_info di;
    if (fn && dladdr(fn, &di) && di.dli_fname)
        return di.dli_fname;
    return "?";
}

static void load_a(void)
{
    struct lib *a = &L[0];
    a->h = dlopen(a->path, RTLD_NOW | RTLD_LOCAL);
    if (!a->h)
        die("dlopen(%s): %s", a->path, dlerror());
    resolve(a);
}

static void load_b(const char *mode)
{
    struct lib *a = &L[0], *b = &L[1];
    if (!(mode && !strcmp(mode, "dlmopen"))) {
        b->h = dlopen(b->path, RTLD_NOW | RTLD_LOCAL);
        if (!b->h)
            die("dlopen(%s): %s", b->path, dlerror());
        resolve(b);
        if (b->h == a->h || (void *)b->Transmit == (void *)a->Transmit) {
            printf("load: dlopen gave the same object for both paths "
                   "(SCardTransmit %p == %p); retrying B with dlmopen(LM_ID_NEWLM)\n",
                   (void *)a->Transmit, (void *)b->Transmit);
            dlclose(b->h);
            b->h = NULL;
        }
    }
    if (!b->h) {
        b->h = dlmopen(LM_ID_NEWLM, b->path, RTLD_NOW | RTLD_LOCAL);
        if (!b->h)
            die("dlmopen(%s): %s", b->path, dlerror());
        b->via_dlmopen = 1;
        resolve(b);
        if ((void *)b->Transmit == (void *)a->Transmit)
            die("dlmopen still gave the same SCardTransmit");
    }
    for (int i = 0; i < 2; i++)
        printf("load: %-7s %s via %s; SCardTransmit=%p in %s\n", L[i].label, L[i].path,
               L[i].via_dlmopen ? "dlmopen(LM_ID_NEWLM)" : "dlopen(RTLD_LOCAL)",
               (void *)L[i].Transmit, obj_of((void *)L[i].Transmit));
}

/* ------------------------------------------------------------- card setup */

static int connect_card(struct lib *l)
{
    LONG rv = l->Connect(l->ctx, g_reader, S_SHARE_SHARED, S_PROTO_T0 | S_PROTO_T1, &l->card,
                         &l->proto);
    if (rv) {
        fprintf(stderr, "bench: %s: SCardConnect(%s): 0x%08lX\n", l->label, g_reader,
                (unsigned long)rv);
        return -1;
    }
    static const unsigned char sel[] = {0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00,
                                        0x05, 0x27, 0x21, 0x01, 0x00};
    unsigned char rsp[300];
    DWORD rl = sizeof rsp;
    IO_REQ pci = {l->proto, sizeof(IO_REQ)};
    rv = l->Transmit(l->card, &pci, sel, sizeof sel, NULL, rsp, &rl);
    if (rv || rl < 2 || rsp[rl - 2] != 0x90 || rsp[rl - 1] != 0x00) {
        fprintf(stderr, "bench: %s: SELECT: rv 0x%08lX len %lu\n", l->label, (unsigned long)rv,
                (unsigned long)rl);
        return -1;
    }
    return 0;
}

static void pick_reader(struct lib *l)
{
    char buf[4096];
    DWORD n = sizeof buf;
    LONG rv = l->List(l->ctx, NULL, buf, &n);
    if (rv)
        die("%s: SCardListReaders: 0x%08lX", l->label, (unsigned long)rv);
    for (char *p = buf; *p; p += strlen(p) + 1) {
        READERSTATE rs = {p, NULL, S_STATE_UNAWARE, 0, 0, {0}};
        if (!l->GetStatusChange(l->ctx, 0, &rs, 1) && (rs.dwEventState & S_STATE_PRESENT)) {
            snprintf(g_reader_buf, sizeof g_reader_buf, "%s", p);
            g_reader = g_reader_buf;
            return;
        }
    }
    die("no reader with a card present");
}

/* -------------------------------------------------------- loop scenarios */

struct scen {
    const char *name;
    /* one operation; returns 0 or a PC/SC error code / -1 */
    LONG (*op)(struct lib *l);
};

static unsigned char echo8_cmd[5 + 8 + 1], echo8_exp[8 + 2];
static unsigned char echo4k_cmd[7 + 4096 + 2], echo4k_exp[4096 + 2];
static unsigned char rxbuf[8192];

static LONG op_transmit8(struct lib *l)
{
    IO_REQ pci = {l->proto, sizeof(IO_REQ)};
    DWORD rl = sizeof rxbuf;
    LONG rv = l->Transmit(l->card, &pci, echo8_cmd, sizeof echo8_cmd, NULL, rxbuf, &rl);
    if (rv)
        return rv;
    if (rl != sizeof echo8_exp || memcmp(rxbuf, echo8_exp, rl))
        return -1;
    return 0;
}

static LONG op_transmit4k(struct lib *l)
{
    IO_REQ pci = {l->proto, sizeof(IO_REQ)};
    DWORD rl = sizeof rxbuf;
    LONG rv = l->Transmit(l->card, &pci, echo4k_cmd, sizeof echo4k_cmd, NULL, rxbuf, &rl);
    if (rv)
        return rv;
    if (rl != sizeof echo4k_exp || memcmp(rxbuf, echo4k_exp, rl))
        return -1;
    return 0;
}

static LONG op_transaction(struct lib *l)
{
    LONG rv = l->Begin(l->card);
    if (rv)
        return rv;
    return l->End(l->card, S_LEAVE_CARD);
}

static LONG op_context(struct lib *l)
{
    return establish_list_release(l->Establish, l->List, l->Release);
}

/* result of one scenario */
struct result {
    const char *name;
    int ran, err;
    double med[2];   /* median over rounds of per-round median per op, ns */
    double lo[2], hi[2];
    double rsd[2];   /* relative spread: (p75-p25)/median of round values */
    double ratio, ratio_lo, ratio_hi, ratio_p25, ratio_p75;
    double delta_us; /* events only: median paired (B - A) latency */
    int n;
    const char *unit;
};

static struct result results[16];
static int nresults;

static void summarize(struct result *r, double *v0, double *v1, int n)
{
    double *rat = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++)
        rat[i] = v0[i] > 0 ? v1[i] / v0[i] : 0;
    double *v[2] = {v0, v1};
    for (int k = 0; k < 2; k++) {
        r->med[k] = quantile(v[k], n, 0.5);
        r->lo[k] = quantile(v[k], n, 0.0);
        r->hi[k] = quantile(v[k], n, 1.0);
        r->rsd[k] = r->med[k] > 0
                        ? (quantile(v[k], n, 0.75) - quantile(v[k], n, 0.25)) / r->med[k]
                        : 0;
    }
    r->ratio = quantile(rat, n, 0.5);
    r->ratio_lo = quantile(rat, n, 0.0);
    r->ratio_hi = quantile(rat, n, 1.0);
    r->ratio_p25 = quantile(rat, n, 0.25);
    r->ratio_p75 = quantile(rat, n, 0.75);
    r->n = n;
    r->ran = 1;
    free(rat);
}

static double fmt_val(double ns, const char **unit)
{
    if (ns >= 1e7) {
        *unit = "ms";
        return ns / 1e6;
    }
    *unit = "us";
    return ns / 1e3;
}

static void print_detail(const struct result *r)
{
    const char *u;
    double scale = fmt_val(r->med[0], &u) / (r->med[0] ? r->med[0] : 1);
    if (!r->med[0])
        scale = 1e-3;
    printf("  %-14s rounds=%d  %s %.1f [%.1f..%.1f] %s IQR %.1f%%  |  %s %.1f [%.1f..%.1f] %s IQR "
           "%.1f%%  |  ratio %.3f [%.3f..%.3f] IQR %.3f..%.3f\n",
           r->name, r->n, L[0].label, r->med[0] * scale, r->lo[0] * scale, r->hi[0] * scale, u,
           r->rsd[0] * 100, L[1].label, r->med[1] * scale, r->lo[1] * scale, r->hi[1] * scale, u,
           r->rsd[1] * 100, r->ratio, r->ratio_lo, r->ratio_hi, r->ratio_p25, r->ratio_p75);
    fflush(stdout);
}

static void run_loop_scenario(const struct scen *s)
{
    struct result *r = &results[nresults++];
    r->name = s->name;
    double *tmp = malloc(sizeof(double) * (size_t)g_iters);
    double *v[2];
    v[0] = calloc((size_t)g_rounds, sizeof(double));
    v[1] = calloc((size_t)g_rounds, sizeof(double));
    LONG err = 0;
    int warm = g_iters < 200 ? g_iters : 200;

    for (int k = 0; k < 2; k++)
        if (time_round(s->op, &L[k], warm, tmp, &err) < 0) {
            fprintf(stderr, "bench: %s: %s failed (warm-up): 0x%08lX\n", s->name, L[k].label,
                    (unsigned long)err);
            r->err = 1;
            goto out;
        }
    for (int i = 0; i < g_rounds; i++) {
        /* A B, B A, A B, ...: each library goes first in half the rounds */
        for (int j = 0; j < 2; j++) {
            int k = (i & 1) ? 1 - j : j;
            double m = time_round(s->op, &L[k], g_iters, tmp, &err);
            if (m < 0) {
                fprintf(stderr, "bench: %s: %s failed in round %d: 0x%08lX\n", s->name,
                        L[k].label, i, (unsigned long)err);
                r->err = 1;
                goto out;
            }
            v[k][i] = m;
        }
    }
    summarize(r, v[0], v[1], g_rounds);
    print_detail(r);
out:
    if (r->err)
        g_failed = 1;
    free(tmp);
    free(v[0]);
    free(v[1]);
}

/* ----------------------------------------------------- event scenario */

static int ctl_cmd(const char *cmd)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char line[256];
    size_t n = 0;
    if (fd < 0)
        return -1;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_ctl);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "bench: connect(%s): %s\n", g_ctl, strerror(errno));
        close(fd);
        return -1;
    }
    size_t len = strlen(cmd);
    if (write(fd, cmd, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        close(fd);
        return -1;
    }
    while (n + 1 < sizeof line) {
        ssize_t k = read(fd, line + n, 1);
        if (k <= 0)
            break;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = 0;
    close(fd);
    if (!n) {
        fprintf(stderr, "bench: card control: no reply to %s\n", cmd);
        return -1;
    }
    return 0;
}

struct waiter {
    struct lib *l;
    DWORD want;       /* S_STATE_EMPTY or S_STATE_PRESENT */
    sem_t ready;
    LONG rv;
    uint64_t t_end;
    pthread_t th;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    struct lib *l = w->l;
    READERSTATE rs = {g_reader, NULL, S_STATE_UNAWARE, 0, 0, {0}};
    LONG rv = l->GetStatusChange(l->ctx, 0, &rs, 1);
    int posted = 0;
    uint64_t deadline = now_ns() + 10000000000ull;
    if (rv && rv != S_E_TIMEOUT)
        goto done;
    rv = 0;
    for (;;) {
        if (rs.dwEventState & w->want)
            break; /* already there (should not happen on the first pass) */
        rs.dwCurrentState = rs.dwEventState & ~(DWORD)S_STATE_CHANGED;
        if (!posted) {
            sem_post(&w->ready);
            posted = 1;
        }
        uint64_t t = now_ns();
        if (t >= deadline) {
            rv = S_E_TIMEOUT;
            break;
        }
        rv = l->GetStatusChange(l->ctx, (DWORD)((deadline - t) / 1000000 + 1), &rs, 1);
        if (rv)
            break;
    }
done:
    w->t_end = now_ns();
    w->rv = rv;
    if (!posted)
        sem_post(&w->ready);
    return NULL;
}

/* join a waiter; a library that ignores its own timeout gets SCardCancel, then we give up */
static void join_waiter(struct waiter *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 15;
    if (!pthread_timedjoin_np(w->th, NULL, &ts))
        return;
    fprintf(stderr, "bench: %s: SCardGetStatusChange ignored its timeout; calling SCardCancel\n",
            w->l->label);
    w->l->Cancel(w->l->ctx);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    if (!pthread_timedjoin_np(w->th, NULL, &ts))
        return;
    die("%s: SCardGetStatusChange still blocked after SCardCancel", w->l->label);
}

static void run_event_scenario(void)
{
    struct result *rr = &results[nresults++];
    struct result *ri = &results[nresults++];
    rr->name = "event-remove";
    ri->name = "event-insert";
    int n = g_event_rounds;
    double *lat[2][2]; /* [event][lib] */
    double *dif[2];
    for (int e = 0; e < 2; e++) {
        dif[e] = calloc((size_t)n, sizeof(double));
        for (int k = 0; k < 2; k++)
            lat[e][k] = calloc((size_t)n, sizeof(double));
    }
    int card_out = 0;

    for (int i = 0; i < n && !g_failed; i++) {
        for (int e = 0; e < 2; e++) { /* 0 = remove, 1 = insert */
            struct waiter w[2];
            /* both libraries wait on the same event; who registers first alternates */
            int first = (i + e) & 1;
            for (int j = 0; j < 2; j++) {
                int k = j ? 1 - first : first;
                memset(&w[k], 0, sizeof w[k]);
                w[k].l = &L[k];
                w[k].want = e ? S_STATE_PRESENT : S_STATE_EMPTY;
                sem_init(&w[k].ready, 0, 0);
                pthread_create(&w[k].th, NULL, waiter_main, &w[k]);
                sem_wait(&w[k].ready);
            }
            usleep(50000); /* let both reach the blocking call in the daemon */
            uint64_t t0 = now_ns();
            if (ctl_cmd(e ? "insert" : "remove") < 0)
                g_failed = 1;
            else
                card_out = !e;
            for (int k = 0; k < 2; k++) {
                join_waiter(&w[k]);
                sem_destroy(&w[k].ready);
                if (w[k].rv) {
                    fprintf(stderr, "bench: %s: %s: SCardGetStatusChange: 0x%08lX\n",
                            e ? "event-insert" : "event-remove", L[k].label,
                            (unsigned long)w[k].rv);
                    g_failed = 1;
                }
                lat[e][k][i] = (double)(w[k].t_end - t0);
            }
            dif[e][i] = lat[e][1][i] - lat[e][0][i];
            if (g_failed)
                break;
            usleep(100000);
        }
    }
    if (card_out)
        ctl_cmd("insert");
    if (!g_failed) {
        summarize(rr, lat[0][0], lat[0][1], n);
        summarize(ri, lat[1][0], lat[1][1], n);
        rr->delta_us = quantile(dif[0], n, 0.5) / 1e3;
        ri->delta_us = quantile(dif[1], n, 0.5) / 1e3;
        print_detail(rr);
        printf("  %-14s paired %s-%s: median %+.1f us [%+.1f..%+.1f]\n", rr->name, L[1].label,
               L[0].label, rr->delta_us, quantile(dif[0], n, 0) / 1e3, quantile(dif[0], n, 1) / 1e3);
        print_detail(ri);
        printf("  %-14s paired %s-%s: median %+.1f us [%+.1f..%+.1f]\n", ri->name, L[1].label,
               L[0].label, ri->delta_us, quantile(dif[1], n, 0) / 1e3, quantile(dif[1], n, 1) / 1e3);
    } else {
        rr->err = ri->err = 1;
    }
    for (int e = 0; e < 2; e++) {
        free(dif[e]);
        for (int k = 0; k < 2; k++)
            free(lat[e][k]);
    }
}

/* ------------------------------------------------------------------ main */

static int env_int(const char *name, int def)
{
    const char *s = getenv(name);
    return s && *s ? atoi(s) : def;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench [--reader NAME] [--ctl PATH] [--iters N] [--rounds N] "
                    "[--event-rounds N] [--quick] [--only LIST] [--label-a S] [--label-b S] "
                    "[--load dlopen|dlmopen] LIB_A LIB_B\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *load_mode = NULL;
    const char *paths[2] = {NULL, NULL};
    int np = 0;
    L[0].label = "native";
    L[1].label = "bridge";
    g_iters = env_int("BENCH_ITERS", g_iters);
    g_rounds = env_int("BENCH_ROUNDS", g_rounds);
    g_event_rounds = env_int("BENCH_EVENT_ROUNDS", g_event_rounds);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define ARG() (i + 1 < argc ? argv[++i] : (usage(), (char *)NULL))
        if (!strcmp(a, "--reader"))
            g_reader = ARG();
        else if (!strcmp(a, "--ctl"))
            g_ctl = ARG();
        else if (!strcmp(a, "--iters"))
            g_iters = atoi(ARG());
        else if (!strcmp(a, "--rounds"))
            g_rounds = atoi(ARG());
        else if (!strcmp(a, "--event-rounds"))
            g_event_rounds = atoi(ARG());
        else if (!strcmp(a, "--quick")) {
            g_iters = 200;
            g_rounds = 5;
            g_event_rounds = 2;
        } else if (!strcmp(a, "--only"))
            g_only = ARG();
        else if (!strcmp(a, "--label-a"))
            L[0].label = ARG();
        else if (!strcmp(a, "--label-b"))
            L[1].label = ARG();
        else if (!strcmp(a, "--load"))
            load_mode = ARG();
        else if (a[0] == '-')
            usage();
        else if (np < 2)
            paths[np++] = a;
        else
            usage();
    }
    if (np != 2 || g_iters < 1 || g_rounds < 1 || g_event_rounds < 0)
        usage();
    L[0].path = paths[0];
    L[1].path = paths[1];
    setvbuf(stdout, NULL, _IOLBF, 0);

    printf("bench: socket %s, iters %d, rounds %d, event rounds %d\n",
           getenv("PCSCLITE_CSOCK_NAME") ? getenv("PCSCLITE_CSOCK_NAME") : "(default)", g_iters,
           g_rounds, g_event_rounds);
    /* A then B: load, context, connect; RSS growth of each step pair is reported */
    for (int k = 0; k < 2; k++) {
        long before = vmrss_kib("VmRSS");
        if (k == 0)
            load_a();
        else
            load_b(load_mode);
        LONG rv = L[k].Establish(S_SCOPE_SYSTEM, NULL, NULL, &L[k].ctx);
        if (rv)
            die("%s: SCardEstablishContext: 0x%08lX", L[k].label, (unsigned long)rv);
        if (k == 0) {
            if (!g_reader)
                pick_reader(&L[0]);
            printf("bench: reader \"%s\"\n", g_reader);
        }
        if (connect_card(&L[k]) < 0)
            die("%s: cannot use the card", L[k].label);
        L[k].rss_kib = vmrss_kib("VmRSS") - before;
    }

    /* echo APDUs: 80 01 00 00 Lc data Le */
    for (int i = 0; i < 8; i++)
        echo8_exp[i] = (unsigned char)(0x11 * (i + 1));
    echo8_exp[8] = 0x90;
    echo8_exp[9] = 0x00;
    memcpy(echo8_cmd, "\x80\x01\x00\x00\x08", 5);
    memcpy(echo8_cmd + 5, echo8_exp, 8);
    echo8_cmd[13] = 0x08;
    for (int i = 0; i < 4096; i++)
        echo4k_exp[i] = (unsigned char)(i * 7 + 3);
    echo4k_exp[4096] = 0x90;
    echo4k_exp[4097] = 0x00;
    memcpy(echo4k_cmd, "\x80\x01\x00\x00\x00\x10\x00", 7);
    memcpy(echo4k_cmd + 7, echo4k_exp, 4096);
    echo4k_cmd[7 + 4096] = 0x10;
    echo4k_cmd[7 + 4096 + 1] = 0x00;

    static const struct scen scens[] = {
        {"transmit-8", op_transmit8},
        {"transmit-4096", op_transmit4k},
        {"transaction", op_transaction},
        {"context", op_context},
    };
    uint64_t t_start = now_ns();
    for (size_t i = 0; i < sizeof scens / sizeof scens[0]; i++)
        if (want(scens[i].name))
            run_loop_scenario(&scens[i]);

    for (int k = 0; k < 2; k++)
        L[k].Disconnect(L[k].card, S_LEAVE_CARD);

    if (want("event") && g_event_rounds > 0) {
        if (g_ctl)
            run_event_scenario();
        else
            printf("bench event: skipped (no --ctl)\n");
    }
    double wall = (double)(now_ns() - t_start) / 1e9;

    for (int k = 0; k < 2; k++)
        L[k].Release(L[k].ctx);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\n");
    for (int i = 0; i < nresults; i++) {
        struct result *r = &results[i];
        if (!r->ran) {
            printf("bench %s: ERROR\n", r->name);
            continue;
        }
        const char *u;
        double scale = fmt_val(r->med[0], &u) / r->med[0];
        printf("bench %s: %s %.1f %s, %s %.1f %s, ratio %.2f (rounds %.2f..%.2f)", r->name,
               L[0].label, r->med[0] * scale, u, L[1].label, r->med[1] * scale, u, r->ratio,
               r->ratio_lo, r->ratio_hi);
        if (!strncmp(r->name, "event-", 6))
            printf(", paired %s-%s %+.0f us", L[1].label, L[0].label, r->delta_us);
        printf("\n");
    }
    printf("bench rss: %s +%ld KiB, %s +%ld KiB (load + context + connect); peak %ld KiB\n",
           L[0].label, L[0].rss_kib, L[1].label, L[1].rss_kib, vmrss_kib("VmHWM"));
    printf("bench cost: wall %.1f s, cpu user %.2f s sys %.2f s (this process)\n", wall,
           (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    return g_failed ? 1 : 0;
}
