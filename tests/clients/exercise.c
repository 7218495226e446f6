/*
 * exercise.c - call every export of libpcsclite.so.1, including misuse, and
 * print one deterministic line per check:
 *
 *     name: rv=0x........ <results>
 *
 * The output is meant to be diffed between Debian's libpcsclite and
 * pcsc-bridge (scripts/compare-clients.sh), so nothing that changes from run
 * to run is printed: no handle values (only whether an out-handle was left
 * alone, zeroed or set), and the event counter in bits 16-31 of reader and
 * card states is masked off.  Out-parameters are pre-filled with sentinels so
 * that "the library did not touch it" is visible too.
 *
 * Build: gcc -O1 -Wall -pthread -I/usr/include/PCSC -o exercise exercise.c -lpcsclite
 * Run:   PCSCLITE_CSOCK_NAME=/path/pcscd.comm ./exercise ["Reader name"]
 *
 * The card reader is argv[1] or the first reader listed; the "other" reader
 * is the first other reader listed (an empty vpcd slot on the test host).
 * The card is the project's virtual card (AID A0 00 00 05 27 21 01, READ
 * BINARY pattern, echo 80 01, chained data 80 02, VERIFY PIN 123456).
 * Never sends a wrong PIN (that would be stateful).
 *
 * EXERCISE_GUARD=1 runs the NULL-pointer checks in a forked child so that a
 * crash there is reported as a line instead of ending the program.
 *
 * Exit status is 0 unless the program itself crashes.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <winscard.h>
#include <reader.h>

#define SENT_LEN ((DWORD)0xA5A5)          /* sentinel for length out-params */
#define SENT_HANDLE ((SCARDHANDLE)0x5EED) /* sentinel for handle out-params */
#define RANDOM_HANDLE ((SCARDHANDLE)0x2B4F1C37)
#define PNP_NAME "\\\\?PnP?\\Notification"

static SCARDCONTEXT g_ctx;        /* main context */
static SCARDHANDLE g_h1, g_h2;    /* two shared handles on the card reader */
static DWORD g_proto;             /* active protocol of g_h1 */
static char g_reader[256];        /* card reader */
static char g_other[256];         /* another reader, "" if none */
static int g_guard;

/* ---------------------------------------------------------------- output */

static void line(const char *name, LONG rv, const char *fmt, ...)
{
	printf("%s: rv=0x%08lx", name, (unsigned long)rv);
	if (fmt && *fmt) {
		va_list ap;
		va_start(ap, fmt);
		putchar(' ');
		vprintf(fmt, ap);
		va_end(ap);
	}
	putchar('\n');
	fflush(stdout);
}

/* Several static buffers so that a few can appear in one printf. */
static char *sbuf(void)
{
	static char bufs[8][512];
	static int i;
	i = (i + 1) % 8;
	bufs[i][0] = 0;
	return bufs[i];
}

static uint32_t fnv(const unsigned char *p, size_t n)
{
	uint32_t h = 2166136261u;
	while (n--) {
		h ^= *p++;
		h *= 16777619u;
	}
	return h;
}

/* hex of the first 16 bytes, with length and hash if longer */
static const char *hex(const unsigned char *p, unsigned long n)
{
	char *s = sbuf();
	size_t o = 0;
	unsigned long i, shown = n > 16 ? 16 : n;
	if (p == NULL)
		return "(null)";
	for (i = 0; i < shown; i++)
		o += snprintf(s + o, 512 - o, "%s%02X", i ? " " : "", p[i]);
	if (n > 16)
		snprintf(s + o, 512 - o, " ...(len=%lu fnv=%08x)", n, fnv(p, n));
	if (n == 0)
		snprintf(s, 512, "-");
	return s;
}

/* a multi-string shown with '|' for each NUL, limited to len bytes */
static const char *mstr(const char *p, unsigned long len)
{
	char *s = sbuf();
	unsigned long i, o = 0;
	if (p == NULL)
		return "(null)";
	if (len == SENT_LEN || len > 400)
		len = 0;
	s[o++] = '"';
	for (i = 0; i < len && o < 500; i++)
		s[o++] = p[i] ? p[i] : '|';
	s[o++] = '"';
	s[o] = 0;
	return s;
}

static const char *hstate(SCARDHANDLE h)
{
	if (h == SENT_HANDLE)
		return "unchanged";
	if (h == 0)
		return "zero";
	return "set";
}

static const char *lenstr(DWORD v)
{
	char *s = sbuf();
	if (v == SENT_LEN)
		return "unchanged";
	if (v == SCARD_AUTOALLOCATE)
		return "AUTOALLOCATE";
	snprintf(s, 512, "%lu", (unsigned long)v);
	return s;
}

/* run fn in a child when EXERCISE_GUARD=1, so that a crash is a line */
static void guarded(const char *name, void (*fn)(void))
{
	pid_t pid;
	int st;
	if (!g_guard) {
		fn();
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		fn();
		fflush(stdout);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0) {
		line(name, 0, "guard=fork-failed");
		return;
	}
	if (WIFSIGNALED(st))
		line(name, 0, "CRASH signal=%d", WTERMSIG(st));
}

static void msleep(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static const SCARD_IO_REQUEST *pci_for(DWORD proto)
{
	if (proto == SCARD_PROTOCOL_T1)
		return SCARD_PCI_T1;
	if (proto == SCARD_PROTOCOL_RAW)
		return SCARD_PCI_RAW;
	return SCARD_PCI_T0;
}

static const SCARD_IO_REQUEST *wrong_pci_for(DWORD proto)
{
	return proto == SCARD_PROTOCOL_T1 ? SCARD_PCI_T0 : SCARD_PCI_T1;
}

/* ------------------------------------------------------------- constants */

static void check_constants(void)
{
	unsigned long code;
	line("pci_T0", 0, "dwProtocol=%lu cbPciLength=%lu",
	     (unsigned long)g_rgSCardT0Pci.dwProtocol, (unsigned long)g_rgSCardT0Pci.cbPciLength);
	line("pci_T1", 0, "dwProtocol=%lu cbPciLength=%lu",
	     (unsigned long)g_rgSCardT1Pci.dwProtocol, (unsigned long)g_rgSCardT1Pci.cbPciLength);
	line("pci_Raw", 0, "dwProtocol=%lu cbPciLength=%lu",
	     (unsigned long)g_rgSCardRawPci.dwProtocol, (unsigned long)g_rgSCardRawPci.cbPciLength);

	line("stringify_0", 0, "\"%s\"", pcsc_stringify_error(0));
	for (code = 0x80100001UL; code <= 0x8010006FUL; code++) {
		char name[64];
		snprintf(name, sizeof name, "stringify_0x%08lx", code);
		line(name, (LONG)code, "\"%s\"", pcsc_stringify_error((LONG)code));
	}
	line("stringify_0x00012345", 0x12345, "\"%s\"", pcsc_stringify_error(0x12345));
	line("stringify_0xffffffff8010001e", (LONG)0xFFFFFFFF8010001EUL, "\"%s\"",
	     pcsc_stringify_error((LONG)0xFFFFFFFF8010001EUL));
	line("stringify_-1", -1, "\"%s\"", pcsc_stringify_error(-1));
}

/* --------------------------------------------------------------- context */

static void null_establish(void)
{
	line("establish_null_phContext", SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, NULL), "");
}

static void check_context(void)
{
	static const DWORD scopes[] = { SCARD_SCOPE_USER, SCARD_SCOPE_TERMINAL, SCARD_SCOPE_SYSTEM, 3 };
	SCARDCONTEXT c;
	LONG rv;
	unsigned i;

	guarded("establish_null_phContext", null_establish);

	for (i = 0; i < 4; i++) {
		char name[64];
		c = SENT_HANDLE;
		rv = SCardEstablishContext(scopes[i], NULL, NULL, &c);
		snprintf(name, sizeof name, "establish_scope_%lu", (unsigned long)scopes[i]);
		line(name, rv, "ctx=%s", hstate(c));
		if (rv == SCARD_S_SUCCESS)
			line("release_scope_ctx", SCardReleaseContext(c), "");
	}
	c = SENT_HANDLE;
	rv = SCardEstablishContext(0x1234, NULL, NULL, &c);
	line("establish_bad_scope_0x1234", rv, "ctx=%s", hstate(c));
	if (rv == SCARD_S_SUCCESS)
		SCardReleaseContext(c);
	c = SENT_HANDLE;
	rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, "x", "y", &c);
	line("establish_reserved_nonnull", rv, "ctx=%s", hstate(c));
	if (rv == SCARD_S_SUCCESS)
		SCardReleaseContext(c);

	g_ctx = SENT_HANDLE;
	rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &g_ctx);
	line("establish_main", rv, "ctx=%s", hstate(g_ctx));

	line("isvalid_main", SCardIsValidContext(g_ctx), "");
	line("isvalid_zero", SCardIsValidContext(0), "");
	line("isvalid_random", SCardIsValidContext(RANDOM_HANDLE), "");
	line("release_zero", SCardReleaseContext(0), "");
	line("release_random", SCardReleaseContext(RANDOM_HANDLE), "");

	c = SENT_HANDLE;
	rv = SCardEstablishContext(SCARD_SCOPE_USER, NULL, NULL, &c);
	line("establish_second", rv, "ctx=%s", hstate(c));
	line("release_second", SCardReleaseContext(c), "");
	line("isvalid_released", SCardIsValidContext(c), "");
	line("release_released", SCardReleaseContext(c), "");
	{
		DWORD n = SENT_LEN;
		line("listreaders_released_ctx", SCardListReaders(c, NULL, NULL, &n), "len=%s", lenstr(n));
	}
	line("cancel_released_ctx", SCardCancel(c), "");
	line("freememory_released_ctx_null", SCardFreeMemory(c, NULL), "");
}

/* ---------------------------------------------------------------- groups */

static void null_groups_len(void)
{
	char buf[64];
	line("listgroups_null_pcch", SCardListReaderGroups(g_ctx, buf, NULL), "");
}

static void check_groups(void)
{
	char buf[256];
	char *p = NULL;
	DWORD n;
	LONG rv;

	n = SENT_LEN;
	rv = SCardListReaderGroups(g_ctx, NULL, &n);
	line("listgroups_query", rv, "len=%s", lenstr(n));

	n = sizeof buf;
	memset(buf, 0x7E, sizeof buf);
	rv = SCardListReaderGroups(g_ctx, buf, &n);
	line("listgroups_big", rv, "len=%s groups=%s", lenstr(n), mstr(buf, rv ? 0 : n));

	n = 1;
	memset(buf, 0x7E, sizeof buf);
	rv = SCardListReaderGroups(g_ctx, buf, &n);
	line("listgroups_1byte", rv, "len=%s buf0=0x%02X", lenstr(n), (unsigned char)buf[0]);

	n = 21; /* one less than needed for "SCard$DefaultReaders\0\0" */
	memset(buf, 0x7E, sizeof buf);
	rv = SCardListReaderGroups(g_ctx, buf, &n);
	line("listgroups_21bytes", rv, "len=%s buf0=0x%02X", lenstr(n), (unsigned char)buf[0]);

	n = SCARD_AUTOALLOCATE;
	rv = SCardListReaderGroups(g_ctx, (LPSTR)&p, &n);
	line("listgroups_autoalloc", rv, "len=%s groups=%s", lenstr(n), mstr(rv ? NULL : p, rv ? 0 : n));
	if (rv == SCARD_S_SUCCESS)
		line("freememory_groups", SCardFreeMemory(g_ctx, p), "");

	/* Debian's libpcsclite 1.9.9 dereferences pcchGroups without a check
	   (SIGSEGV), so this one only runs under EXERCISE_GUARD=1 */
	if (g_guard)
		guarded("listgroups_null_pcch", null_groups_len);
	else
		line("listgroups_null_pcch", 0, "skipped (crashes natively; EXERCISE_GUARD=1 runs it)");

	n = sizeof buf;
	line("listgroups_ctx_zero", SCardListReaderGroups(0, buf, &n), "len=%s", lenstr(n));
	n = sizeof buf;
	line("listgroups_ctx_random", SCardListReaderGroups(RANDOM_HANDLE, buf, &n), "len=%s", lenstr(n));

	line("freememory_null", SCardFreeMemory(g_ctx, NULL), "");
	p = malloc(16);
	line("freememory_ctx_zero", SCardFreeMemory(0, p), ""); /* may leak: fine */
	line("freememory_ctx_random", SCardFreeMemory(RANDOM_HANDLE, p), "");
}

/* --------------------------------------------------------------- readers */

static void null_readers_len(void)
{
	char buf[64];
	line("listreaders_null_pcch", SCardListReaders(g_ctx, NULL, buf, NULL), "");
}

static void check_readers(const char *want)
{
	char buf[4096];
	char *p = NULL;
	DWORD n, need;
	LONG rv;

	n = SENT_LEN;
	rv = SCardListReaders(g_ctx, NULL, NULL, &n);
	need = n;
	line("listreaders_query", rv, "len=%s", lenstr(n));

	n = sizeof buf;
	memset(buf, 0x7E, sizeof buf);
	rv = SCardListReaders(g_ctx, NULL, buf, &n);
	line("listreaders_big", rv, "len=%s readers=%s", lenstr(n), mstr(buf, rv ? 0 : n));
	if (rv == SCARD_S_SUCCESS) {
		const char *r;
		for (r = buf; *r; r += strlen(r) + 1) {
			if (!g_reader[0] && (!want || strcmp(want, r) == 0))
				snprintf(g_reader, sizeof g_reader, "%.255s", r);
			else if (!g_other[0] && (!want || strcmp(want, r) != 0))
				snprintf(g_other, sizeof g_other, "%.255s", r);
		}
	}
	if (want && !g_reader[0])
		snprintf(g_reader, sizeof g_reader, "%s", want);

	n = 1;
	memset(buf, 0x7E, sizeof buf);
	rv = SCardListReaders(g_ctx, NULL, buf, &n);
	line("listreaders_1byte", rv, "len=%s buf0=0x%02X", lenstr(n), (unsigned char)buf[0]);

	if (need != SENT_LEN && need > 1 && need < sizeof buf) {
		n = need - 1;
		memset(buf, 0x7E, sizeof buf);
		rv = SCardListReaders(g_ctx, NULL, buf, &n);
		line("listreaders_needminus1", rv, "len=%s buf0=0x%02X", lenstr(n), (unsigned char)buf[0]);
		n = need;
		memset(buf, 0x7E, sizeof buf);
		rv = SCardListReaders(g_ctx, NULL, buf, &n);
		line("listreaders_exact", rv, "len=%s readers=%s", lenstr(n), mstr(buf, rv ? 0 : n));
	}

	n = 0;
	rv = SCardListReaders(g_ctx, NULL, buf, &n);
	line("listreaders_0byte", rv, "len=%s", lenstr(n));

	n = SCARD_AUTOALLOCATE;
	rv = SCardListReaders(g_ctx, NULL, (LPSTR)&p, &n);
	line("listreaders_autoalloc", rv, "len=%s readers=%s", lenstr(n), mstr(rv ? NULL : p, rv ? 0 : n));
	if (rv == SCARD_S_SUCCESS)
		line("freememory_readers", SCardFreeMemory(g_ctx, p), "");

	n = sizeof buf;
	rv = SCardListReaders(g_ctx, "SCard$DefaultReaders\0", buf, &n);
	line("listreaders_group_default", rv, "len=%s readers=%s", lenstr(n), mstr(buf, rv ? 0 : n));
	n = sizeof buf;
	rv = SCardListReaders(g_ctx, "NoSuchGroup\0", buf, &n);
	line("listreaders_group_bogus", rv, "len=%s readers=%s", lenstr(n), mstr(buf, rv ? 0 : n));

	guarded("listreaders_null_pcch", null_readers_len);

	n = SENT_LEN;
	line("listreaders_ctx_zero", SCardListReaders(0, NULL, NULL, &n), "len=%s", lenstr(n));
	n = SENT_LEN;
	line("listreaders_ctx_random", SCardListReaders(RANDOM_HANDLE, NULL, NULL, &n), "len=%s", lenstr(n));

	line("chosen_readers", 0, "card=\"%s\" other=\"%s\"", g_reader, g_other);
}

/* -------------------------------------------------------- status changes */

static void print_states(const char *name, LONG rv, SCARD_READERSTATE *rs, int n)
{
	char out[2048];
	size_t o = 0;
	int i;
	out[0] = 0;
	for (i = 0; i < n; i++)
		o += snprintf(out + o, sizeof out - o, "%s[%d] ev=0x%04lx atr=%s", i ? " " : "", i,
			      (unsigned long)(rs[i].dwEventState & 0xFFFF),
			      rs[i].cbAtr <= MAX_ATR_SIZE ? hex(rs[i].rgbAtr, rs[i].cbAtr) : "bad-cbAtr");
	line(name, rv, "%s", out);
}

static void null_gsc(void)
{
	line("gsc_null_states", SCardGetStatusChange(g_ctx, 0, NULL, 1), "");
}

struct waiter {
	SCARDCONTEXT ctx;
	SCARD_READERSTATE rs;
	LONG rv;
	volatile int done;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	w->rv = SCardGetStatusChange(w->ctx, INFINITE, &w->rs, 1);
	__atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void check_gsc(void)
{
	SCARD_READERSTATE rs[3];
	int n = 0, i;
	LONG rv;

	memset(rs, 0, sizeof rs);
	rs[n++].szReader = g_reader;
	if (g_other[0])
		rs[n++].szReader = g_other;
	for (i = 0; i < n; i++)
		rs[i].dwCurrentState = SCARD_STATE_UNAWARE;
	rv = SCardGetStatusChange(g_ctx, 0, rs, n);
	print_states("gsc_unaware_t0", rv, rs, n);

	for (i = 0; i < n; i++)
		rs[i].dwCurrentState = rs[i].dwEventState & ~SCARD_STATE_CHANGED;
	rv = SCardGetStatusChange(g_ctx, 0, rs, n);
	print_states("gsc_nochange_t0", rv, rs, n);

	rv = SCardGetStatusChange(g_ctx, 150, rs, n);
	print_states("gsc_nochange_t150", rv, rs, n);

	/* only the low word given: the counter is then not compared */
	for (i = 0; i < n; i++)
		rs[i].dwCurrentState &= 0xFFFF;
	rv = SCardGetStatusChange(g_ctx, 0, rs, n);
	print_states("gsc_nocounter_t0", rv, rs, n);

	/* wrong current state: reports a change at once */
	rs[0].dwCurrentState = SCARD_STATE_EMPTY;
	rv = SCardGetStatusChange(g_ctx, 0, rs, 1);
	print_states("gsc_wrongstate_t0", rv, rs, 1);

	memset(rs, 0, sizeof rs);
	rs[0].szReader = g_reader;
	rs[0].dwCurrentState = SCARD_STATE_IGNORE;
	rv = SCardGetStatusChange(g_ctx, 0, rs, 1);
	print_states("gsc_ignore_t0", rv, rs, 1);

	memset(rs, 0, sizeof rs);
	rs[0].szReader = "No Such Reader 00 00";
	rv = SCardGetStatusChange(g_ctx, 0, rs, 1);
	print_states("gsc_unknown_reader_t0", rv, rs, 1);

	memset(rs, 0, sizeof rs);
	rs[0].szReader = g_reader;
	rs[1].szReader = "No Such Reader 00 00";
	rv = SCardGetStatusChange(g_ctx, 100, rs, 2);
	print_states("gsc_known_and_unknown_t100", rv, rs, 2);

	rv = SCardGetStatusChange(g_ctx, 0, rs, 0);
	line("gsc_zero_readers_t0", rv, "");
	rv = SCardGetStatusChange(g_ctx, 100, NULL, 0);
	line("gsc_zero_readers_null_t100", rv, "");

	guarded("gsc_null_states", null_gsc);

	memset(rs, 0, sizeof rs);
	rs[0].szReader = g_reader;
	rv = SCardGetStatusChange(0, 0, rs, 1);
	print_states("gsc_ctx_zero", rv, rs, 1);
	rv = SCardGetStatusChange(RANDOM_HANDLE, 0, rs, 1);
	print_states("gsc_ctx_random", rv, rs, 1);

	/* PnP notification: high word of dwCurrentState/dwEventState is the
	   reader count, which is deterministic here, so printed in full */
	memset(rs, 0, sizeof rs);
	rs[0].szReader = PNP_NAME;
	rs[0].dwCurrentState = SCARD_STATE_UNAWARE;
	rv = SCardGetStatusChange(g_ctx, 100, rs, 1);
	line("gsc_pnp_unaware_t100", rv, "ev=0x%08lx", (unsigned long)rs[0].dwEventState);
	rs[0].dwCurrentState = rs[0].dwEventState & ~SCARD_STATE_CHANGED;
	rv = SCardGetStatusChange(g_ctx, 100, rs, 1);
	line("gsc_pnp_current_t100", rv, "ev=0x%08lx", (unsigned long)rs[0].dwEventState);
	rv = SCardGetStatusChange(g_ctx, 0, rs, 1);
	line("gsc_pnp_current_t0", rv, "ev=0x%08lx", (unsigned long)rs[0].dwEventState);

	memset(rs, 0, sizeof rs);
	rs[0].szReader = PNP_NAME;
	rs[1].szReader = g_reader;
	rs[1].dwCurrentState = SCARD_STATE_UNAWARE;
	rv = SCardGetStatusChange(g_ctx, 100, rs, 2);
	line("gsc_pnp_plus_reader_t100", rv, "pnp_ev=0x%08lx reader_ev=0x%04lx",
	     (unsigned long)rs[0].dwEventState, (unsigned long)(rs[1].dwEventState & 0xFFFF));

	/* SCardCancel when nothing is blocked */
	line("cancel_not_blocked", SCardCancel(g_ctx), "");
	line("cancel_ctx_zero", SCardCancel(0), "");
	line("cancel_ctx_random", SCardCancel(RANDOM_HANDLE), "");

	/* SCardCancel from this thread while another blocks with INFINITE */
	{
		struct waiter w;
		pthread_t th;
		LONG crv = SENT_LEN;
		int tries;
		memset(&w, 0, sizeof w);
		rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &w.ctx);
		line("cancel_thread_establish", rv, "");
		w.rs.szReader = g_reader;
		w.rs.dwCurrentState = SCARD_STATE_UNAWARE;
		rv = SCardGetStatusChange(w.ctx, 0, &w.rs, 1);
		line("cancel_thread_prime", rv, "ev=0x%04lx", (unsigned long)(w.rs.dwEventState & 0xFFFF));
		w.rs.dwCurrentState = w.rs.dwEventState & ~SCARD_STATE_CHANGED;
		if (pthread_create(&th, NULL, wait_thread, &w) != 0) {
			line("cancel_thread", 0, "pthread_create failed");
		} else {
			for (tries = 0; tries < 100 && !__atomic_load_n(&w.done, __ATOMIC_SEQ_CST); tries++) {
				msleep(tries == 0 ? 300 : 100);
				if (!__atomic_load_n(&w.done, __ATOMIC_SEQ_CST))
					crv = SCardCancel(w.ctx);
			}
			if (!__atomic_load_n(&w.done, __ATOMIC_SEQ_CST)) {
				/* still blocked after 10 s: report and leave it */
				line("cancel_thread", crv, "waiter=still-blocked");
			} else {
				pthread_join(th, NULL);
				line("cancel_thread", crv, "waiter_rv=0x%08lx ev=0x%04lx",
				     (unsigned long)w.rv, (unsigned long)(w.rs.dwEventState & 0xFFFF));
				/* the context remains usable after a cancel */
				w.rs.dwCurrentState = SCARD_STATE_UNAWARE;
				rv = SCardGetStatusChange(w.ctx, 0, &w.rs, 1);
				line("cancel_thread_after", rv, "ev=0x%04lx", (unsigned long)(w.rs.dwEventState & 0xFFFF));
				line("cancel_thread_release", SCardReleaseContext(w.ctx), "");
			}
		}
	}

	/* a cancel of a blocked PnP wait, same way */
	{
		struct waiter w;
		pthread_t th;
		LONG crv = SENT_LEN;
		int tries;
		memset(&w, 0, sizeof w);
		SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &w.ctx);
		w.rs.szReader = PNP_NAME;
		w.rs.dwCurrentState = SCARD_STATE_UNAWARE;
		SCardGetStatusChange(w.ctx, 0, &w.rs, 1);
		w.rs.dwCurrentState = w.rs.dwEventState & ~SCARD_STATE_CHANGED;
		if (pthread_create(&th, NULL, wait_thread, &w) == 0) {
			for (tries = 0; tries < 100 && !__atomic_load_n(&w.done, __ATOMIC_SEQ_CST); tries++) {
				msleep(tries == 0 ? 300 : 100);
				if (!__atomic_load_n(&w.done, __ATOMIC_SEQ_CST))
					crv = SCardCancel(w.ctx);
			}
			if (!__atomic_load_n(&w.done, __ATOMIC_SEQ_CST)) {
				line("cancel_pnp_thread", crv, "waiter=still-blocked");
			} else {
				pthread_join(th, NULL);
				line("cancel_pnp_thread", crv, "waiter_rv=0x%08lx", (unsigned long)w.rv);
				SCardReleaseContext(w.ctx);
			}
		}
	}
}

/* --------------------------------------------------------------- connect */

static void null_connect_phcard(void)
{
	DWORD p = SENT_LEN;
	line("connect_null_phCard",
	     SCardConnect(g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, NULL, &p),
	     "proto=%s", lenstr(p));
}

static void null_connect_proto(void)
{
	SCARDHANDLE h = SENT_HANDLE;
	LONG rv = SCardConnect(g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, &h, NULL);
	line("connect_null_pdwActiveProtocol", rv, "card=%s", hstate(h));
	if (rv == SCARD_S_SUCCESS)
		SCardDisconnect(h, SCARD_LEAVE_CARD);
}

static void null_connect_reader(void)
{
	SCARDHANDLE h = SENT_HANDLE;
	DWORD p = SENT_LEN;
	LONG rv = SCardConnect(g_ctx, NULL, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, &h, &p);
	line("connect_null_reader", rv, "card=%s proto=%s", hstate(h), lenstr(p));
	if (rv == SCARD_S_SUCCESS)
		SCardDisconnect(h, SCARD_LEAVE_CARD);
}

/* connect, print, and disconnect again on success */
static void try_connect(const char *name, SCARDCONTEXT ctx, const char *reader, DWORD share, DWORD proto)
{
	SCARDHANDLE h = SENT_HANDLE;
	DWORD p = SENT_LEN;
	LONG rv = SCardConnect(ctx, reader, share, proto, &h, &p);
	line(name, rv, "card=%s proto=%s", hstate(h), lenstr(p));
	if (rv == SCARD_S_SUCCESS)
		line("disconnect_after_connect", SCardDisconnect(h, SCARD_LEAVE_CARD), "");
}

static void check_connect(void)
{
	LONG rv;
	DWORD p;

	/* start from a known card state: negotiated afresh after a reset */
	{
		SCARDHANDLE h = SENT_HANDLE;
		DWORD p0 = SENT_LEN;
		rv = SCardConnect(g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, &h, &p0);
		if (rv == SCARD_E_PROTO_MISMATCH) /* left in RAW by an aborted run */
			rv = SCardConnect(g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_RAW, &h, &p0);
		if (rv == SCARD_S_SUCCESS)
			rv = SCardDisconnect(h, SCARD_RESET_CARD);
		line("prep_reset_card", rv, "");
	}

	guarded("connect_null_phCard", null_connect_phcard);
	guarded("connect_null_pdwActiveProtocol", null_connect_proto);
	guarded("connect_null_reader", null_connect_reader);

	try_connect("connect_unknown_reader", g_ctx, "No Such Reader 00 00", SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY);
	try_connect("connect_empty_name", g_ctx, "", SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY);
	try_connect("connect_ctx_zero", 0, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY);
	try_connect("connect_ctx_random", RANDOM_HANDLE, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY);
	try_connect("connect_share_0", g_ctx, g_reader, 0, SCARD_PROTOCOL_ANY);
	try_connect("connect_share_7", g_ctx, g_reader, 7, SCARD_PROTOCOL_ANY);
	try_connect("connect_proto_0_shared", g_ctx, g_reader, SCARD_SHARE_SHARED, 0);
	try_connect("connect_proto_0x80", g_ctx, g_reader, SCARD_SHARE_SHARED, 0x80);
	try_connect("connect_proto_legacy_any_0x1000", g_ctx, g_reader, SCARD_SHARE_SHARED, 0x1000);
	if (g_other[0]) {
		try_connect("connect_other_shared", g_ctx, g_other, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY);
		try_connect("connect_other_exclusive", g_ctx, g_other, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_ANY);
		try_connect("connect_other_direct", g_ctx, g_other, SCARD_SHARE_DIRECT, 0);
	}

	g_h1 = SENT_HANDLE;
	p = SENT_LEN;
	rv = SCardConnect(g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &g_h1, &p);
	g_proto = p;
	line("connect_h1", rv, "card=%s proto=%s", hstate(g_h1), lenstr(p));

	g_h2 = SENT_HANDLE;
	p = SENT_LEN;
	rv = SCardConnect(g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &g_h2, &p);
	line("connect_h2", rv, "card=%s proto=%s", hstate(g_h2), lenstr(p));

	try_connect("connect_exclusive_while_shared", g_ctx, g_reader, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_ANY);
	try_connect("connect_T0_only", g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0);
	try_connect("connect_T1_only", g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1);
	try_connect("connect_direct_while_shared", g_ctx, g_reader, SCARD_SHARE_DIRECT, 0);
}

/* ---------------------------------------------------------------- status */

static void check_status(void)
{
	char name[256];
	unsigned char atr[64];
	char *pname = NULL;
	unsigned char *patr = NULL;
	DWORD nl, al, st, pr;
	LONG rv;

	nl = sizeof name; al = sizeof atr; st = SENT_LEN; pr = SENT_LEN;
	memset(name, 0x7E, sizeof name);
	rv = SCardStatus(g_h1, name, &nl, &st, &pr, atr, &al);
	line("status_full", rv, "namelen=%s name=%s state=0x%04lx proto=%s atrlen=%s atr=%s",
	     lenstr(nl), mstr(name, rv ? 0 : nl), (unsigned long)(st & 0xFFFF), lenstr(pr), lenstr(al),
	     rv ? "-" : hex(atr, al));

	nl = sizeof name; al = 33;
	rv = SCardStatus(g_h1, name, &nl, NULL, NULL, atr, &al);
	line("status_atrlen_33", rv, "namelen=%s atrlen=%s", lenstr(nl), lenstr(al));

	rv = SCardStatus(g_h1, NULL, NULL, NULL, NULL, NULL, NULL);
	line("status_all_null", rv, "");

	nl = SENT_LEN; al = SENT_LEN;
	rv = SCardStatus(g_h1, NULL, &nl, NULL, NULL, NULL, &al);
	line("status_null_buffers_query", rv, "namelen=%s atrlen=%s", lenstr(nl), lenstr(al));

	nl = 1; al = sizeof atr;
	memset(name, 0x7E, sizeof name);
	rv = SCardStatus(g_h1, name, &nl, NULL, NULL, atr, &al);
	line("status_name_1byte", rv, "namelen=%s atrlen=%s name0=0x%02X", lenstr(nl), lenstr(al),
	     (unsigned char)name[0]);

	nl = sizeof name; al = 1;
	memset(atr, 0x7E, sizeof atr);
	rv = SCardStatus(g_h1, name, &nl, NULL, NULL, atr, &al);
	line("status_atr_1byte", rv, "namelen=%s atrlen=%s atr0=0x%02X", lenstr(nl), lenstr(al), atr[0]);

	nl = 0; al = 0;
	rv = SCardStatus(g_h1, name, &nl, NULL, NULL, atr, &al);
	line("status_both_0byte", rv, "namelen=%s atrlen=%s", lenstr(nl), lenstr(al));

	nl = SCARD_AUTOALLOCATE; al = SCARD_AUTOALLOCATE;
	rv = SCardStatus(g_h1, (LPSTR)&pname, &nl, NULL, NULL, (LPBYTE)&patr, &al);
	line("status_autoalloc", rv, "namelen=%s name=%s atrlen=%s atr=%s", lenstr(nl),
	     mstr(rv ? NULL : pname, rv ? 0 : nl), lenstr(al), rv ? "-" : hex(patr, al));
	if (rv == SCARD_S_SUCCESS) {
		line("freememory_status_name", SCardFreeMemory(g_ctx, pname), "");
		line("freememory_status_atr", SCardFreeMemory(g_ctx, patr), "");
	}

	nl = sizeof name; al = sizeof atr; st = SENT_LEN; pr = SENT_LEN;
	rv = SCardStatus(0, name, &nl, &st, &pr, atr, &al);
	line("status_card_zero", rv, "namelen=%s state=%s proto=%s atrlen=%s", lenstr(nl), lenstr(st),
	     lenstr(pr), lenstr(al));
	nl = sizeof name; al = sizeof atr; st = SENT_LEN; pr = SENT_LEN;
	rv = SCardStatus(RANDOM_HANDLE, name, &nl, &st, &pr, atr, &al);
	line("status_card_random", rv, "namelen=%s state=%s proto=%s atrlen=%s", lenstr(nl), lenstr(st),
	     lenstr(pr), lenstr(al));
}

/* -------------------------------------------------------------- transmit */

static unsigned char g_big[70000];

static LONG xmit(SCARDHANDLE h, const SCARD_IO_REQUEST *spci, const unsigned char *cmd, DWORD cl,
		 SCARD_IO_REQUEST *rpci, unsigned char *resp, DWORD *rl)
{
	return SCardTransmit(h, spci, cmd, cl, rpci, resp, rl);
}

static void show_xmit(const char *name, LONG rv, const unsigned char *r, DWORD rl)
{
	if (rv != SCARD_S_SUCCESS || rl == SENT_LEN || rl > sizeof g_big) {
		line(name, rv, "len=%s", lenstr(rl));
		return;
	}
	if (rl < 2) {
		line(name, rv, "len=%lu resp=%s", (unsigned long)rl, hex(r, rl));
		return;
	}
	line(name, rv, "len=%lu sw=%02X%02X data=%s", (unsigned long)rl, r[rl - 2], r[rl - 1], hex(r, rl - 2));
}

static void apdu(const char *name, SCARDHANDLE h, const unsigned char *cmd, DWORD cl)
{
	DWORD rl = sizeof g_big;
	LONG rv = xmit(h, pci_for(g_proto), cmd, cl, NULL, g_big, &rl);
	show_xmit(name, rv, g_big, rl);
}

static const unsigned char SELECT_AID[] = { 0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01 };
static const unsigned char SELECT_BAD[] = { 0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x7F };
static const unsigned char READ16[] = { 0x00, 0xB0, 0x00, 0x00, 0x10 };

static void null_xmit_rlen(void)
{
	line("transmit_null_pcbRecvLength",
	     SCardTransmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, NULL, g_big, NULL), "");
}

static void null_xmit_recvbuf(void)
{
	DWORD rl = 256;
	LONG rv = SCardTransmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, NULL, NULL, &rl);
	line("transmit_null_recvbuf", rv, "len=%s", lenstr(rl));
}

static void null_xmit_sendbuf(void)
{
	DWORD rl = 256;
	LONG rv = SCardTransmit(g_h1, pci_for(g_proto), NULL, 5, NULL, g_big, &rl);
	line("transmit_null_sendbuf", rv, "len=%s", lenstr(rl));
}

static void null_xmit_spci(void)
{
	DWORD rl = 256;
	LONG rv = SCardTransmit(g_h1, NULL, READ16, sizeof READ16, NULL, g_big, &rl);
	line("transmit_null_sendpci", rv, "len=%s", lenstr(rl));
}

static int pattern_ok(const unsigned char *d, unsigned long n, unsigned long off)
{
	unsigned long i;
	for (i = 0; i < n; i++)
		if (d[i] != (unsigned char)(((off + i) & 0xFF) ^ 0x5A))
			return 0;
	return 1;
}

static void check_transmit(void)
{
	unsigned char cmd[5000];
	unsigned char r[600];
	SCARD_IO_REQUEST rpci;
	DWORD rl;
	LONG rv;
	int i;

	apdu("transmit_select_aid", g_h1, SELECT_AID, sizeof SELECT_AID);

	rpci.dwProtocol = 0x77; rpci.cbPciLength = 0x77;
	rl = sizeof r;
	rv = xmit(g_h1, pci_for(g_proto), SELECT_AID, sizeof SELECT_AID, &rpci, r, &rl);
	show_xmit("transmit_select_aid_recvpci", rv, r, rl);
	line("transmit_recvpci_contents", rv, "dwProtocol=0x%lx cbPciLength=%lu",
	     (unsigned long)rpci.dwProtocol, (unsigned long)rpci.cbPciLength);

	rpci.dwProtocol = SCARD_PROTOCOL_T1; rpci.cbPciLength = sizeof rpci;
	rl = sizeof r;
	rv = xmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, &rpci, r, &rl);
	show_xmit("transmit_read_recvpci_preset_t1", rv, r, rl);
	line("transmit_recvpci_preset_contents", rv, "dwProtocol=0x%lx cbPciLength=%lu",
	     (unsigned long)rpci.dwProtocol, (unsigned long)rpci.cbPciLength);

	apdu("transmit_select_unknown_aid", g_h1, SELECT_BAD, sizeof SELECT_BAD);
	apdu("transmit_read_short_16", g_h1, READ16, sizeof READ16);
	{
		static const unsigned char c[] = { 0x00, 0xB0, 0x01, 0x23, 0x00 };
		rl = sizeof g_big;
		rv = xmit(g_h1, pci_for(g_proto), c, sizeof c, NULL, g_big, &rl);
		show_xmit("transmit_read_short_le00_off0x123", rv, g_big, rl);
		if (rv == 0 && rl >= 2)
			line("transmit_read_short_pattern", rv, "ok=%d", pattern_ok(g_big, rl - 2, 0x123));
	}
	{
		static const unsigned char c[] = { 0x00, 0xB0, 0x00, 0x10, 0x00, 0x10, 0x00 };
		rl = sizeof g_big;
		rv = xmit(g_h1, pci_for(g_proto), c, sizeof c, NULL, g_big, &rl);
		show_xmit("transmit_read_extended_le4096", rv, g_big, rl);
		if (rv == 0 && rl >= 2)
			line("transmit_read_extended_pattern", rv, "ok=%d", pattern_ok(g_big, rl - 2, 0x10));
	}
	{
		static const unsigned char c[] = { 0x80, 0x01, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0x00 };
		apdu("transmit_echo_short_5", g_h1, c, sizeof c);
	}
	{
		/* extended echo of 4096 bytes: 80 01 00 00 00 10 00 <4096> 00 00 */
		DWORD n = 0;
		cmd[n++] = 0x80; cmd[n++] = 0x01; cmd[n++] = 0; cmd[n++] = 0;
		cmd[n++] = 0; cmd[n++] = 0x10; cmd[n++] = 0x00;
		for (i = 0; i < 4096; i++)
			cmd[n++] = (unsigned char)(i * 7 + 3);
		cmd[n++] = 0; cmd[n++] = 0;
		rl = sizeof g_big;
		rv = xmit(g_h1, pci_for(g_proto), cmd, n, NULL, g_big, &rl);
		show_xmit("transmit_echo_extended_4096", rv, g_big, rl);
		if (rv == 0)
			line("transmit_echo_extended_match", rv, "match=%d",
			     rl == 4098 && memcmp(g_big, cmd + 7, 4096) == 0);
	}
	{
		/* 80 02 02 00 00: 512 bytes, short Le -> 61xx chaining + GET RESPONSE */
		static const unsigned char c[] = { 0x80, 0x02, 0x02, 0x00, 0x00 };
		unsigned long total = 0;
		char sws[256];
		size_t o = 0;
		rl = sizeof g_big;
		rv = xmit(g_h1, pci_for(g_proto), c, sizeof c, NULL, g_big, &rl);
		show_xmit("transmit_chain_first", rv, g_big, rl);
		sws[0] = 0;
		for (i = 0; i < 8 && rv == 0 && rl >= 2 && g_big[rl - 2] == 0x61; i++) {
			unsigned char gr[5] = { 0x00, 0xC0, 0x00, 0x00, 0x00 };
			total += rl - 2;
			gr[4] = g_big[rl - 1];
			rl = sizeof g_big;
			rv = xmit(g_h1, pci_for(g_proto), gr, sizeof gr, NULL, g_big, &rl);
			if (rv == 0 && rl >= 2)
				o += snprintf(sws + o, sizeof sws - o, "%s%02X%02X/%lu", o ? "," : "",
					      g_big[rl - 2], g_big[rl - 1], (unsigned long)rl - 2);
		}
		if (rv == 0 && rl >= 2)
			total += rl - 2;
		line("transmit_chain_get_response", rv, "rounds=%d sws=%s total=%lu", i, o ? sws : "-", total);
	}
	{
		static const unsigned char c[] = { 0x80, 0x02, 0x00, 0x20, 0x20 };
		apdu("transmit_80_02_0020", g_h1, c, sizeof c);
	}
	{
		static const unsigned char c[] = { 0x00, 0x20, 0x00, 0x81, 0x06, '1', '2', '3', '4', '5', '6' };
		apdu("transmit_verify_pin_ok", g_h1, c, sizeof c);
	}

	/* receive buffer too small for 16 data bytes + SW */
	rl = 4;
	memset(r, 0x7E, sizeof r);
	rv = xmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	line("transmit_recvbuf_4", rv, "len=%s r0=0x%02X", lenstr(rl), r[0]);
	rl = 17;
	rv = xmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	line("transmit_recvbuf_17", rv, "len=%s", lenstr(rl));
	rl = 18;
	rv = xmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	show_xmit("transmit_recvbuf_18_exact", rv, r, rl);
	rl = 0;
	rv = xmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	line("transmit_recvbuf_0", rv, "len=%s", lenstr(rl));
	rl = SCARD_AUTOALLOCATE;
	{
		/* a real buffer behind the pointer in case the library writes data */
		union { unsigned char *p; unsigned char pad[600]; } pr;
		memset(&pr, 0, sizeof pr);
		rv = SCardTransmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, NULL, (LPBYTE)&pr, &rl);
		/* not supported for transmit: only rv and length are shown */
		line("transmit_autoalloc", rv, "len=%s", lenstr(rl));
	}

	guarded("transmit_null_sendpci", null_xmit_spci);
	guarded("transmit_null_pcbRecvLength", null_xmit_rlen);
	guarded("transmit_null_recvbuf", null_xmit_recvbuf);
	guarded("transmit_null_sendbuf", null_xmit_sendbuf);

	rl = sizeof r;
	rv = xmit(g_h1, wrong_pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	show_xmit("transmit_wrong_proto_pci", rv, r, rl);
	rl = sizeof r;
	rv = xmit(g_h1, SCARD_PCI_RAW, READ16, sizeof READ16, NULL, r, &rl);
	show_xmit("transmit_raw_pci", rv, r, rl);
	{
		SCARD_IO_REQUEST any = { 0x1000, sizeof(SCARD_IO_REQUEST) };
		rl = sizeof r;
		rv = xmit(g_h1, &any, READ16, sizeof READ16, NULL, r, &rl);
		show_xmit("transmit_legacy_any_pci_0x1000", rv, r, rl);
	}
	{
		SCARD_IO_REQUEST odd = { g_proto, 0 };
		rl = sizeof r;
		rv = xmit(g_h1, &odd, READ16, sizeof READ16, NULL, r, &rl);
		show_xmit("transmit_pci_cbPciLength_0", rv, r, rl);
	}
	/* cbSendLength 0 and 1 are NOT checked by Debian's client or pcscd
	   1.9.9: they reach the driver, and vpcd turns a 1-byte APDU into a
	   power control code and wedges on an empty one.  Not exercised. */
	rl = sizeof g_big;
	memset(g_big, 0, sizeof g_big);
	rv = xmit(g_h1, pci_for(g_proto), g_big, 65549, NULL, g_big, &rl);
	show_xmit("transmit_sendlen_65549", rv, g_big, rl);
	rl = 70000;
	rv = xmit(g_h1, pci_for(g_proto), READ16, sizeof READ16, NULL, g_big, &rl);
	show_xmit("transmit_recvlen_70000", rv, g_big, rl);

	rl = sizeof r;
	rv = xmit(0, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	show_xmit("transmit_card_zero", rv, r, rl);
	rl = sizeof r;
	rv = xmit(RANDOM_HANDLE, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	show_xmit("transmit_card_random", rv, r, rl);

	/* the connection must still be in step after all that */
	apdu("transmit_after_errors", g_h1, READ16, sizeof READ16);
}

/* ----------------------------------------------------------- transaction */

static void check_transaction(void)
{
	line("end_without_begin", SCardEndTransaction(g_h1, SCARD_LEAVE_CARD), "");
	line("begin_h1", SCardBeginTransaction(g_h1), "");
	apdu("transmit_in_transaction", g_h1, READ16, sizeof READ16);
	line("end_bad_disposition_7", SCardEndTransaction(g_h1, 7), "");
	line("end_h1_leave", SCardEndTransaction(g_h1, SCARD_LEAVE_CARD), "");
	line("end_h1_again", SCardEndTransaction(g_h1, SCARD_LEAVE_CARD), "");
	line("begin_h1_twice_1", SCardBeginTransaction(g_h1), "");
	line("begin_h1_twice_2", SCardBeginTransaction(g_h1), "");
	line("end_h1_twice_1", SCardEndTransaction(g_h1, SCARD_LEAVE_CARD), "");
	line("end_h1_twice_2", SCardEndTransaction(g_h1, SCARD_LEAVE_CARD), "");
	line("begin_card_zero", SCardBeginTransaction(0), "");
	line("begin_card_random", SCardBeginTransaction(RANDOM_HANDLE), "");
	line("end_card_zero", SCardEndTransaction(0, SCARD_LEAVE_CARD), "");
	line("end_card_random", SCardEndTransaction(RANDOM_HANDLE, SCARD_LEAVE_CARD), "");
}

/* -------------------------------------------------------------- reconnect */

static void null_reconnect(void)
{
	line("reconnect_null_pdwActiveProtocol",
	     SCardReconnect(g_h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_LEAVE_CARD, NULL), "");
}

static void check_reconnect(void)
{
	DWORD p;
	LONG rv;
	unsigned char r[64];
	DWORD rl;

	p = SENT_LEN;
	rv = SCardReconnect(g_h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_LEAVE_CARD, &p);
	line("reconnect_h1_leave", rv, "proto=%s", lenstr(p));

	p = SENT_LEN;
	rv = SCardReconnect(g_h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_RESET_CARD, &p);
	line("reconnect_h1_reset", rv, "proto=%s", lenstr(p));

	/* h2 sees the reset once */
	rl = sizeof r;
	rv = xmit(g_h2, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	show_xmit("transmit_h2_after_reset", rv, r, rl);
	{
		DWORD st = SENT_LEN, pr = SENT_LEN;
		rv = SCardStatus(g_h2, NULL, NULL, &st, &pr, NULL, NULL);
		line("status_h2_after_reset", rv, "state=0x%04lx proto=%s", (unsigned long)(st & 0xFFFF), lenstr(pr));
	}
	rv = SCardBeginTransaction(g_h2);
	line("begin_h2_after_reset", rv, "");
	if (rv == SCARD_S_SUCCESS)
		SCardEndTransaction(g_h2, SCARD_LEAVE_CARD);
	p = SENT_LEN;
	rv = SCardReconnect(g_h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_LEAVE_CARD, &p);
	line("reconnect_h2_leave", rv, "proto=%s", lenstr(p));
	apdu("transmit_h2_after_reconnect", g_h2, READ16, sizeof READ16);
	apdu("transmit_h1_after_reset", g_h1, READ16, sizeof READ16);

	p = SENT_LEN;
	rv = SCardReconnect(g_h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_UNPOWER_CARD, &p);
	line("reconnect_h1_unpower", rv, "proto=%s", lenstr(p));
	rl = sizeof r;
	rv = xmit(g_h2, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	show_xmit("transmit_h2_after_unpower", rv, r, rl);
	p = SENT_LEN;
	rv = SCardReconnect(g_h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_LEAVE_CARD, &p);
	line("reconnect_h2_leave_2", rv, "proto=%s", lenstr(p));

	p = SENT_LEN;
	rv = SCardReconnect(g_h1, 0, SCARD_PROTOCOL_ANY, SCARD_LEAVE_CARD, &p);
	line("reconnect_share_0", rv, "proto=%s", lenstr(p));
	p = SENT_LEN;
	rv = SCardReconnect(g_h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, 7, &p);
	line("reconnect_init_7", rv, "proto=%s", lenstr(p));
	p = SENT_LEN;
	rv = SCardReconnect(g_h1, SCARD_SHARE_SHARED, 0, SCARD_LEAVE_CARD, &p);
	line("reconnect_proto_0", rv, "proto=%s", lenstr(p));
	/* SCardReconnect(EXCLUSIVE) while h2 is connected is not exercised:
	   Debian's client retries SHARING_VIOLATION every 100 ms forever
	   (unless PCSCLITE_NO_BLOCKING is set). */
	guarded("reconnect_null_pdwActiveProtocol", null_reconnect);
	p = SENT_LEN;
	rv = SCardReconnect(0, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_LEAVE_CARD, &p);
	line("reconnect_card_zero", rv, "proto=%s", lenstr(p));
	p = SENT_LEN;
	rv = SCardReconnect(RANDOM_HANDLE, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_LEAVE_CARD, &p);
	line("reconnect_card_random", rv, "proto=%s", lenstr(p));
	/* make sure h1 is usable again */
	p = SENT_LEN;
	rv = SCardReconnect(g_h1, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, SCARD_LEAVE_CARD, &p);
	line("reconnect_h1_leave_2", rv, "proto=%s", lenstr(p));
	apdu("transmit_select_after_reconnect", g_h1, SELECT_AID, sizeof SELECT_AID);
}

/* --------------------------------------------------------------- control */

static void null_control_ret(void)
{
	unsigned char r[256];
	line("control_null_lpBytesReturned",
	     SCardControl(g_h1, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, NULL), "");
}

static void null_control_recvbuf(void)
{
	DWORD n = SENT_LEN;
	LONG rv = SCardControl(g_h1, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, NULL, 256, &n);
	line("control_null_recvbuf", rv, "len=%s", lenstr(n));
}

static void show_control(const char *name, LONG rv, const unsigned char *r, DWORD n)
{
	line(name, rv, "len=%s data=%s", lenstr(n), rv == 0 && n <= 256 ? hex(r, n) : "-");
}

static void check_control(SCARDHANDLE hdirect)
{
	unsigned char r[256];
	DWORD n;
	LONG rv;

	n = SENT_LEN;
	rv = SCardControl(g_h1, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, &n);
	show_control("control_get_feature_request", rv, r, n);
	n = SENT_LEN;
	rv = SCardControl(g_h1, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, 0, &n);
	show_control("control_get_feature_request_recv0", rv, r, n);
	n = SENT_LEN;
	rv = SCardControl(g_h1, SCARD_CTL_CODE(1), "\x01\x02", 2, r, sizeof r, &n);
	show_control("control_code_1", rv, r, n);
	if (hdirect) {
		n = SENT_LEN;
		rv = SCardControl(hdirect, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, &n);
		show_control("control_direct_get_feature_request", rv, r, n);
	}
	guarded("control_null_lpBytesReturned", null_control_ret);
	guarded("control_null_recvbuf", null_control_recvbuf);
	n = SENT_LEN;
	rv = SCardControl(g_h1, CM_IOCTL_GET_FEATURE_REQUEST, g_big, 70000, r, sizeof r, &n);
	show_control("control_sendlen_70000", rv, r, n);
	n = SENT_LEN;
	rv = SCardControl(0, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, &n);
	show_control("control_card_zero", rv, r, n);
	n = SENT_LEN;
	rv = SCardControl(RANDOM_HANDLE, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, &n);
	show_control("control_card_random", rv, r, n);
}

/* --------------------------------------------------------------- attribs */

static void null_attr_len(void)
{
	unsigned char r[64];
	line("getattrib_null_pcbAttrLen", SCardGetAttrib(g_h1, SCARD_ATTR_ATR_STRING, r, NULL), "");
}

static void null_setattr(void)
{
	line("setattrib_null_buf", SCardSetAttrib(g_h1, 0x7FFF1234, NULL, 4), "");
}

static void getattr(const char *name, SCARDHANDLE h, DWORD id, DWORD len, int text)
{
	unsigned char r[400];
	DWORD n = len;
	LONG rv;
	memset(r, 0x7E, sizeof r);
	rv = SCardGetAttrib(h, id, r, &n);
	if (rv == 0 && text && n <= sizeof r)
		line(name, rv, "len=%s text=%s", lenstr(n), mstr((char *)r, n));
	else
		line(name, rv, "len=%s data=%s", lenstr(n), rv == 0 && n <= sizeof r ? hex(r, n) : "-");
}

static void check_attrib(SCARDHANDLE hdirect)
{
	unsigned char *p = NULL;
	DWORD n;
	LONG rv;

	getattr("getattrib_atr_string", g_h1, SCARD_ATTR_ATR_STRING, 264, 0);
	getattr("getattrib_atr_string_33", g_h1, SCARD_ATTR_ATR_STRING, 33, 0);
	getattr("getattrib_atr_string_2", g_h1, SCARD_ATTR_ATR_STRING, 2, 0);
	getattr("getattrib_atr_string_0", g_h1, SCARD_ATTR_ATR_STRING, 0, 0);
	n = SENT_LEN;
	rv = SCardGetAttrib(g_h1, SCARD_ATTR_ATR_STRING, NULL, &n);
	line("getattrib_atr_string_query", rv, "len=%s", lenstr(n));
	n = SCARD_AUTOALLOCATE;
	rv = SCardGetAttrib(g_h1, SCARD_ATTR_ATR_STRING, (LPBYTE)&p, &n);
	line("getattrib_atr_string_autoalloc", rv, "len=%s data=%s", lenstr(n), rv ? "-" : hex(p, n));
	if (rv == SCARD_S_SUCCESS)
		line("freememory_attrib", SCardFreeMemory(g_ctx, p), "");

	getattr("getattrib_friendly_name", g_h1, SCARD_ATTR_DEVICE_FRIENDLY_NAME, 264, 1);
	getattr("getattrib_friendly_name_3", g_h1, SCARD_ATTR_DEVICE_FRIENDLY_NAME, 3, 1);
	n = SENT_LEN;
	rv = SCardGetAttrib(g_h1, SCARD_ATTR_DEVICE_FRIENDLY_NAME, NULL, &n);
	line("getattrib_friendly_name_query", rv, "len=%s", lenstr(n));
	getattr("getattrib_system_name", g_h1, SCARD_ATTR_DEVICE_SYSTEM_NAME, 264, 1);
	getattr("getattrib_vendor_name", g_h1, SCARD_ATTR_VENDOR_NAME, 264, 1);
	getattr("getattrib_vendor_ifd_version", g_h1, SCARD_ATTR_VENDOR_IFD_VERSION, 264, 0);
	getattr("getattrib_channel_id", g_h1, SCARD_ATTR_CHANNEL_ID, 264, 0);
	getattr("getattrib_current_protocol", g_h1, SCARD_ATTR_CURRENT_PROTOCOL_TYPE, 264, 0);
	getattr("getattrib_maxinput", g_h1, SCARD_ATTR_MAXINPUT, 264, 0);
	getattr("getattrib_unknown_0x7fff1234", g_h1, 0x7FFF1234, 264, 0);
	getattr("getattrib_unknown_0", g_h1, 0, 264, 0);
	if (hdirect) {
		getattr("getattrib_direct_atr_string", hdirect, SCARD_ATTR_ATR_STRING, 264, 0);
		getattr("getattrib_direct_friendly_name", hdirect, SCARD_ATTR_DEVICE_FRIENDLY_NAME, 264, 1);
	}
	guarded("getattrib_null_pcbAttrLen", null_attr_len);
	getattr("getattrib_card_zero", 0, SCARD_ATTR_ATR_STRING, 264, 0);
	getattr("getattrib_card_random", RANDOM_HANDLE, SCARD_ATTR_ATR_STRING, 264, 0);

	line("setattrib_friendly_name",
	     SCardSetAttrib(g_h1, SCARD_ATTR_DEVICE_FRIENDLY_NAME, (LPCBYTE) "x", 2), "");
	line("setattrib_vendor_0x7fff1234", SCardSetAttrib(g_h1, 0x7FFF1234, (LPCBYTE) "\x01\x02\x03\x04", 4), "");
	line("setattrib_len_0", SCardSetAttrib(g_h1, 0x7FFF1234, (LPCBYTE) "\x01", 0), "");
	guarded("setattrib_null_buf", null_setattr);
	line("setattrib_len_300", SCardSetAttrib(g_h1, 0x7FFF1234, g_big, 300), "");
	line("setattrib_card_zero", SCardSetAttrib(0, 0x7FFF1234, (LPCBYTE) "\x01", 1), "");
	line("setattrib_card_random", SCardSetAttrib(RANDOM_HANDLE, 0x7FFF1234, (LPCBYTE) "\x01", 1), "");
}

/* ------------------------------------------------------------ disconnect */

static void check_disconnect(void)
{
	unsigned char r[64];
	DWORD rl;
	LONG rv;
	SCARDHANDLE old2 = g_h2;

	line("disconnect_bad_disposition_7", SCardDisconnect(g_h2, 7), "");
	line("disconnect_h2_leave", SCardDisconnect(g_h2, SCARD_LEAVE_CARD), "");
	line("disconnect_h2_again", SCardDisconnect(old2, SCARD_LEAVE_CARD), "");
	rl = sizeof r;
	rv = xmit(old2, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
	show_xmit("transmit_disconnected_handle", rv, r, rl);
	{
		DWORD st = SENT_LEN;
		rv = SCardStatus(old2, NULL, NULL, &st, NULL, NULL, NULL);
		line("status_disconnected_handle", rv, "state=%s", lenstr(st));
	}
	line("disconnect_card_zero", SCardDisconnect(0, SCARD_LEAVE_CARD), "");
	line("disconnect_card_random", SCardDisconnect(RANDOM_HANDLE, SCARD_LEAVE_CARD), "");
	line("disconnect_h1_reset", SCardDisconnect(g_h1, SCARD_RESET_CARD), "");

	/* RAW is always granted by pcscd and sticks to the card until it is
	   reset, so it comes last and is undone with a reset */
	{
		SCARDHANDLE h = SENT_HANDLE;
		DWORD p = SENT_LEN;
		rv = SCardConnect(g_ctx, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_RAW, &h, &p);
		line("connect_proto_raw", rv, "card=%s proto=%s", hstate(h), lenstr(p));
		if (rv == SCARD_S_SUCCESS) {
			DWORD st = SENT_LEN, pr = SENT_LEN;
			rv = SCardStatus(h, NULL, NULL, &st, &pr, NULL, NULL);
			line("status_raw", rv, "state=0x%04lx proto=%s", (unsigned long)(st & 0xFFFF), lenstr(pr));
			rl = sizeof r;
			rv = xmit(h, SCARD_PCI_RAW, READ16, sizeof READ16, NULL, r, &rl);
			show_xmit("transmit_raw_on_raw", rv, r, rl);
			line("disconnect_raw_reset", SCardDisconnect(h, SCARD_RESET_CARD), "");
		}
	}

	/* a handle whose context is released becomes invalid */
	{
		SCARDCONTEXT c;
		SCARDHANDLE h = SENT_HANDLE;
		DWORD p = SENT_LEN;
		SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c);
		rv = SCardConnect(c, g_reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, &h, &p);
		line("connect_h3", rv, "card=%s proto=%s", hstate(h), lenstr(p));
		line("release_ctx_with_h3", SCardReleaseContext(c), "");
		rl = sizeof r;
		rv = xmit(h, pci_for(g_proto), READ16, sizeof READ16, NULL, r, &rl);
		show_xmit("transmit_h3_after_release", rv, r, rl);
		line("disconnect_h3_after_release", SCardDisconnect(h, SCARD_LEAVE_CARD), "");
	}
}

/* ------------------------------------------------------------------ fork */

static void check_fork(void)
{
	pid_t pid;
	int st;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		SCARDCONTEXT c = SENT_HANDLE;
		char buf[2048];
		DWORD n = sizeof buf;
		LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c);
		line("fork_child_establish", rv, "ctx=%s", hstate(c));
		rv = SCardListReaders(c, NULL, buf, &n);
		line("fork_child_listreaders", rv, "len=%s readers=%s", lenstr(n), mstr(buf, rv ? 0 : n));
		line("fork_child_release", SCardReleaseContext(c), "");
		fflush(stdout);
		_exit(0);
	}
	if (pid < 0) {
		line("fork", 0, "fork failed");
		return;
	}
	waitpid(pid, &st, 0);
	line("fork_child_status", 0, "exited=%d code=%d signaled=%d", WIFEXITED(st), WIFEXITED(st) ? WEXITSTATUS(st) : -1,
	     WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	{
		char buf[2048];
		DWORD n = sizeof buf;
		LONG rv = SCardListReaders(g_ctx, NULL, buf, &n);
		line("fork_parent_listreaders", rv, "len=%s readers=%s", lenstr(n), mstr(buf, rv ? 0 : n));
	}
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	SCARDHANDLE hdirect = 0;
	const char *g = getenv("EXERCISE_GUARD");

	g_guard = g && *g == '1';
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);

	check_constants();
	check_context();
	check_groups();
	check_readers(argc > 1 ? argv[1] : NULL);
	if (!g_reader[0]) {
		line("no_reader", 0, "");
		return 0;
	}
	check_gsc();
	check_connect();
	check_status();
	check_transmit();
	check_transaction();
	check_reconnect();
	{
		DWORD p = SENT_LEN;
		LONG rv = SCardConnect(g_ctx, g_other[0] ? g_other : g_reader, SCARD_SHARE_DIRECT, 0, &hdirect, &p);
		line("connect_direct_for_control", rv, "proto=%s", lenstr(p));
		if (rv != SCARD_S_SUCCESS)
			hdirect = 0;
	}
	check_control(hdirect);
	check_attrib(hdirect);
	if (hdirect)
		line("disconnect_direct", SCardDisconnect(hdirect, SCARD_LEAVE_CARD), "");
	check_disconnect();
	check_fork();

	line("release_main", SCardReleaseContext(g_ctx), "");
	line("isvalid_main_after_release", SCardIsValidContext(g_ctx), "");
	line("release_main_again", SCardReleaseContext(g_ctx), "");
	{
		DWORD n = SENT_LEN;
		line("listreaders_main_after_release", SCardListReaders(g_ctx, NULL, NULL, &n), "len=%s", lenstr(n));
	}
	line("done", 0, "");
	return 0;
}
