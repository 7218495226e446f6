/*
 * proxy-bench: one stock PC/SC client library, two daemons: the host pcscd
 * directly ("direct") and the same pcscd through `usbpass proxy` ("proxy").
 *
 * The library (Debian's libpcsclite.so.1) is loaded twice with dlopen, the
 * second time from a copy (LIB_B: glibc would hand back the same object for the
 * same file), so each copy has its own state. PCSCLITE_CSOCK_NAME is set to
 * DIRECT_SOCKET before every use of A and to PROXY_SOCKET before every use of B
 * (libpcsclite reads it when it opens a connection, or once and keeps it: right
 * either way). After the setup the program checks, with getpeername() on its
 * own sockets, that A's context talks to DIRECT_SOCKET and B's to PROXY_SOCKET.
 *
 * Scenarios (interleaved rounds A B, B A, ...; per round the median per
 * operation; reported: median over rounds, and the median of the per-round
 * ratios proxy/direct):
 *   transmit-8     SCardTransmit of the 8-byte echo APDU 80 01 00 00 08 <8 bytes> 00
 *   context        SCardEstablishContext + SCardReleaseContext
 *   context-list   SCardEstablishContext + SCardListReaders + SCardReleaseContext
 *
 * Usage: proxy-bench [--reader NAME] [--iters N] [--rounds N] [--quick] [--only LIST]
 *                    LIB_A LIB_B DIRECT_SOCKET PROXY_SOCKET
 * Exit status: 0 when everything ran, 1 when a call failed or a check did not
 * hold, 2 on usage. The ratios never affect it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"

struct lib {
    const char *label, *path, *socket;
    void *h;
    fn_establish Establish;
    fn_release Release;
    fn_list List;
    fn_connect Connect;
    fn_disconnect Disconnect;
    fn_transmit Transmit;
    SCARDCONTEXT ctx;
    SCARDHANDLE card;
    DWORD proto;
};

static struct lib L[2] = {{.label = "direct"}, {.label = "proxy"}};
static const char *g_reader;
static char g_reader_buf[2048];
static int g_iters = 2000, g_rounds = 11;
static const char *g_only;
static unsigned char echo_cmd[14], echo_exp[10], rx[300];

static void die(const char *m, const char *a, LONG rv)
{
    fprintf(stderr, "proxy-bench: %s%s%s: 0x%08lX\n", m, a ? " " : "", a ? a : "",
            (unsigned long)rv);
    exit(1);
}

static void *sym(struct lib *l, const char *name)
{
    void *p = dlsym(l->h, name);
    if (!p) {
        fprintf(stderr, "proxy-bench: %s: no %s\n", l->path, name);
        exit(1);
    }
    return p;
}

static void use(struct lib *l) { setenv("PCSCLITE_CSOCK_NAME", l->socket, 1); }

static void load(struct lib *l)
{
    use(l);
    l->h = dlopen(l->path, RTLD_NOW | RTLD_LOCAL);
    if (!l->h) {
        fprintf(stderr, "proxy-bench: dlopen(%s): %s\n", l->path, dlerror());
        exit(1);
    }
    l->Establish = (fn_establish)sym(l, "SCardEstablishContext");
    l->Release = (fn_release)sym(l, "SCardReleaseContext");
    l->List = (fn_list)sym(l, "SCardListReaders");
    l->Connect = (fn_connect)sym(l, "SCardConnect");
    l->Disconnect = (fn_disconnect)sym(l, "SCardDisconnect");
    l->Transmit = (fn_transmit)sym(l, "SCardTransmit");
    LONG rv = l->Establish(S_SCOPE_SYSTEM, NULL, NULL, &l->ctx);
    if (rv)
        die(l->label, "SCardEstablishContext", rv);
}

/* how many of our sockets are connected to a listener bound at PATH (*others: to
 * other named listeners, e.g. pcscd, whose socket in its own mount namespace is
 * /run/pcscd/pcscd.comm) */
static int sockets_to(const char *path, int *others)
{
    int n = 0;
    *others = 0;
    for (int fd = 3; fd < 1024; fd++) {
        struct sockaddr_un sa;
        socklen_t len = sizeof sa;
        memset(&sa, 0, sizeof sa);
        if (getpeername(fd, (struct sockaddr *)&sa, &len) || sa.sun_family != AF_UNIX ||
            !sa.sun_path[0])
            continue;
        if (!strncmp(sa.sun_path, path, sizeof sa.sun_path))
            n++;
        else
            (*others)++;
    }
    return n;
}

static LONG op_transmit8(struct lib *l)
{
    IO_REQ pci = {l->proto, sizeof(IO_REQ)};
    DWORD rl = sizeof rx;
    LONG rv = l->Transmit(l->card, &pci, echo_cmd, sizeof echo_cmd, NULL, rx, &rl);
    if (rv)
        return rv;
    return rl == sizeof echo_exp && !memcmp(rx, echo_exp, rl) ? 0 : -1;
}

static LONG op_context(struct lib *l)
{
    SCARDCONTEXT c;
    LONG rv = l->Establish(S_SCOPE_SYSTEM, NULL, NULL, &c);
    return rv ? rv : l->Release(c);
}

static LONG op_context_list(struct lib *l)
{
    return establish_list_release(l->Establish, l->List, l->Release);
}

struct scen {
    const char *name;
    LONG (*op)(struct lib *);
};

static int want(const char *name) { return in_list(g_only, name); }

/* time_round() with PCSCLITE_CSOCK_NAME set for l's daemon first */
static double round_of(struct lib *l, const struct scen *s, int iters, double *t, LONG *err)
{
    use(l);
    return time_round(s->op, l, iters, t, err);
}

static int run(const struct scen *s, double *ratio_out)
{
    double *t = malloc(sizeof(double) * (size_t)g_iters);
    double *v[2] = {malloc(sizeof(double) * (size_t)g_rounds),
                    malloc(sizeof(double) * (size_t)g_rounds)};
    double *rat = malloc(sizeof(double) * (size_t)g_rounds);
    LONG err = 0;
    int warm = g_iters < 100 ? g_iters : 100, ok = 1;
    for (int k = 0; k < 2 && ok; k++)
        if (round_of(&L[k], s, warm, t, &err) < 0)
            ok = 0;
    for (int i = 0; i < g_rounds && ok; i++)
        for (int j = 0; j < 2 && ok; j++) {
            int k = (i & 1) ? 1 - j : j;
            if ((v[k][i] = round_of(&L[k], s, g_iters, t, &err)) < 0)
                ok = 0;
        }
    if (ok) {
        for (int i = 0; i < g_rounds; i++)
            rat[i] = v[1][i] / v[0][i];
        double a = quantile(v[0], g_rounds, 0.5), b = quantile(v[1], g_rounds, 0.5);
        *ratio_out = quantile(rat, g_rounds, 0.5);
        printf("bench-proxy %s: direct %.1f us, proxy %.1f us (+%.1f us), ratio %.2f "
               "(rounds %.2f..%.2f)\n",
               s->name, a / 1e3, b / 1e3, (b - a) / 1e3, *ratio_out, quantile(rat, g_rounds, 0),
               quantile(rat, g_rounds, 1));
    } else {
        fprintf(stderr, "proxy-bench: %s failed: 0x%08lX\n", s->name, (unsigned long)err);
    }
    free(t);
    free(v[0]);
    free(v[1]);
    free(rat);
    return ok;
}

static void usage(void)
{
    fprintf(stderr, "usage: proxy-bench [--reader NAME] [--iters N] [--rounds N] [--quick] "
                    "[--only LIST] LIB_A LIB_B DIRECT_SOCKET PROXY_SOCKET\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *pos[4];
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define ARG() (i + 1 < argc ? argv[++i] : (usage(), (char *)NULL))
        if (!strcmp(a, "--reader"))
            g_reader = ARG();
        else if (!strcmp(a, "--iters"))
            g_iters = atoi(ARG());
        else if (!strcmp(a, "--rounds"))
            g_rounds = atoi(ARG());
        else if (!strcmp(a, "--only"))
            g_only = ARG();
        else if (!strcmp(a, "--quick")) {
            g_iters = 300;
            g_rounds = 5;
        } else if (a[0] == '-' || np == 4)
            usage();
        else
            pos[np++] = a;
    }
    if (np != 4 || g_iters < 1 || g_rounds < 1)
        usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    L[0].path = pos[0];
    L[1].path = pos[1];
    L[0].socket = pos[2];
    L[1].socket = pos[3];

    int to_proxy[2], others[2];
    for (int k = 0; k < 2; k++) {
        struct lib *l = &L[k];
        load(l);
        to_proxy[k] = sockets_to(L[1].socket, &others[k]);
        if (!g_reader) {
            char buf[2048];
            DWORD n = sizeof buf;
            LONG rv = l->List(l->ctx, NULL, buf, &n);
            if (rv)
                die(l->label, "SCardListReaders", rv);
            snprintf(g_reader_buf, sizeof g_reader_buf, "%s", buf);
            g_reader = g_reader_buf;
        }
        LONG rv = l->Connect(l->ctx, g_reader, S_SHARE_SHARED, S_PROTO_T0 | S_PROTO_T1, &l->card,
                             &l->proto);
        if (rv)
            die(l->label, "SCardConnect", rv);
    }
    /* both copies really talk to their own daemon: after A's first context, no
     * socket to the proxy and one to the daemon; after B's, one more to the proxy */
    printf("bench-proxy: reader \"%s\"; connections to the proxy / to the daemon: "
           "%d / %d after direct's first context, %d / %d after proxy's\n",
           g_reader, to_proxy[0], others[0], to_proxy[1], others[1]);
    if (to_proxy[0] != 0 || others[0] < 1 || to_proxy[1] < 1 || others[1] != others[0]) {
        fprintf(stderr, "proxy-bench: the two library copies do not use their own sockets\n");
        return 1;
    }
    for (int i = 0; i < 8; i++)
        echo_exp[i] = (unsigned char)(0x21 * (i + 1));
    echo_exp[8] = 0x90;
    echo_exp[9] = 0x00;
    memcpy(echo_cmd, "\x80\x01\x00\x00\x08", 5);
    memcpy(echo_cmd + 5, echo_exp, 8);
    echo_cmd[13] = 0x00;

    static const struct scen scens[] = {
        {"transmit-8", op_transmit8},
        {"context", op_context},
        {"context-list", op_context_list},
    };
    int failed = 0;
    double r;
    printf("bench-proxy: iters %d, rounds %d\n", g_iters, g_rounds);
    for (size_t i = 0; i < sizeof scens / sizeof scens[0]; i++)
        if (want(scens[i].name) && !run(&scens[i], &r))
            failed = 1;
    for (int k = 0; k < 2; k++) {
        use(&L[k]);
        L[k].Disconnect(L[k].card, S_LEAVE_CARD);
        L[k].Release(L[k].ctx);
    }
    return failed;
}
