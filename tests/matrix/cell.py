#!/usr/bin/python3
"""One cell of the version matrix (scripts/matrix.sh), run inside a suite sandbox.

    /usr/bin/python3 cell.py [--reader NAME] [--atr HEX] [--expect-lib PATH | --expect-native]
                             [--no-events] [--cancel] [--timeout SECONDS]
    /usr/bin/python3 cell.py --repl [--reader NAME]

Uses pyscard's low-level smartcard.scard API so that the PC/SC return codes are visible.
Checks, in this order:
  (a) SCardEstablishContext, SCardListReaders lists the reader (first reader if --reader is absent)
  (b) the ATR: SCardGetStatusChange (UNAWARE) reports PRESENT and the ATR, SCardStatus agrees
  (c) an APDU round trip: SCardTransmit of SELECT of the AID ends with 90 00 (after GET
      RESPONSE when a T=0 card answers 61xx)
  (d) events: the harness removes then inserts the card; SCardGetStatusChange returns with
      EMPTY, then with PRESENT.
  (e) with --cancel: while SCardGetStatusChange waits with an INFINITE timeout, a second
      thread calls SCardCancel on the context (again every 0.5 s, in case the first call came
      before the wait began); the wait must return SCARD_E_CANCELLED (0x80100002) and the
      context must still work (SCardListReaders).
It also checks that the library the route should have loaded is really mapped in the process
(--expect-lib), or that no /app library is (--expect-native).

Protocol with the harness, on stdout, one line each, flushed:
  "@remove"        please remove the card now (the cell is waiting for EMPTY)
  "@insert"        please insert the card now (the cell is waiting for PRESENT)
  "@PASS"          all checks passed
  "@FAIL <why>"    the first failed check, e.g. "SCardEstablishContext: 0x8010001E"
Diagnostics go to stderr. Exit status 0 on PASS, 1 on FAIL.

--repl: a scripted client for harnesses that drive one process through several steps (the
proxy sharing check of matrix.sh, scripts/proxy-restart-test.sh). It reads commands from stdin,
one per line, and answers each with one line "@= VERB RV [DETAIL]" (RV as 0x%08X):
  establish C            SCardEstablishContext into slot C
  list C                 SCardListReaders; DETAIL: the readers joined by "|"
  connect C H MODE       SCardConnect to --reader (else the first reader) with MODE shared or
                         exclusive, card handle into slot H
  transmit H             SCardTransmit of SELECT of the AID; DETAIL: SW1SW2
  disconnect H           SCardDisconnect(LEAVE)
  release C              SCardReleaseContext
  cancel C               the --cancel check (e) on context C; RV: what the wait returned
  pid                    RV 0, DETAIL: this process's pid and the id() of the scard module
  quit                   exit 0 (no answer; so does the end of stdin)
Errors of the harness's own making (unknown slot or verb) answer "@= VERB ERR why".
"""

import sys
import time

AID = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01]
SELECT = [0x00, 0xA4, 0x04, 0x00, len(AID)] + AID


class Fail(Exception):
    pass


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(msg):
    sys.stderr.write("cell: %s\n" % msg)
    sys.stderr.flush()


def code(hr):
    return "0x%08X" % (hr & 0xFFFFFFFF)


def mapped_libs():
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/"):
                    libs.add(parts[5])
    except OSError:
        pass
    return libs


def check_route(args):
    libs = mapped_libs()
    pcsc = sorted(p for p in libs if "pcsc" in p or p.startswith("/app/"))
    log("mapped pcsc libraries: %s" % (", ".join(pcsc) or "none"))
    if args.expect_lib and args.expect_lib not in libs:
        raise Fail("route not in effect: %s not loaded (mapped: %s)"
                   % (args.expect_lib, ", ".join(pcsc) or "none"))
    if args.expect_native:
        app = [p for p in libs if p.startswith("/app/")]
        if app:
            raise Fail("native cell loaded %s" % ", ".join(app))


def parse(argv):
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--reader")
    p.add_argument("--atr")
    p.add_argument("--expect-lib")
    p.add_argument("--expect-native", action="store_true")
    p.add_argument("--no-events", action="store_true")
    p.add_argument("--cancel", action="store_true")
    p.add_argument("--repl", action="store_true")
    p.add_argument("--timeout", type=float, default=10.0)
    return p.parse_args(argv)


def run(args):
    try:
        from smartcard import scard
    except Exception as e:  # noqa: BLE001 - the reason is the result
        raise Fail("import smartcard.scard: %s" % str(e).splitlines()[0])
    S = scard

    hr, ctx = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
    # the 2.1.0+ dispatcher loads its delegate during the first SCardEstablishContext
    check_route(args)
    if hr != S.SCARD_S_SUCCESS:
        raise Fail("SCardEstablishContext: %s" % code(hr))
    try:
        run_ctx(S, ctx, args)
    finally:
        S.SCardReleaseContext(ctx)


def wait_state(S, ctx, reader, state, flag, name, timeout):
    """GetStatusChange until the reader's event state has FLAG; returns the last event state."""
    deadline = time.monotonic() + timeout
    while True:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0:
            raise Fail("no %s event within %.0f s (last state 0x%X)" % (name, timeout, state & 0xFFFF))
        hr, st = S.SCardGetStatusChange(ctx, left, [(reader, state)])
        if hr == S.SCARD_E_TIMEOUT:
            raise Fail("no %s event within %.0f s (last state 0x%X)" % (name, timeout, state & 0xFFFF))
        if hr != S.SCARD_S_SUCCESS:
            raise Fail("SCardGetStatusChange(wait %s): %s" % (name, code(hr)))
        ev = st[0][1]
        log("event state 0x%X" % (ev & 0xFFFF))
        if ev & flag:
            return ev
        state = ev & ~S.SCARD_STATE_CHANGED


def run_ctx(S, ctx, args):
    # (a) readers
    hr, readers = S.SCardListReaders(ctx, [])
    if hr != S.SCARD_S_SUCCESS:
        raise Fail("SCardListReaders: %s" % code(hr))
    log("readers: %r" % (readers,))
    if not readers:
        raise Fail("SCardListReaders: no readers")
    reader = args.reader or readers[0]
    if reader not in readers:
        raise Fail("reader %r not listed (got %r)" % (reader, readers))

    # (b) ATR, from the reader state and from SCardStatus
    hr, st = S.SCardGetStatusChange(ctx, 0, [(reader, S.SCARD_STATE_UNAWARE)])
    if hr != S.SCARD_S_SUCCESS:
        raise Fail("SCardGetStatusChange(unaware): %s" % code(hr))
    ev, atr = st[0][1], bytes(st[0][2])
    if not ev & S.SCARD_STATE_PRESENT:
        raise Fail("no card present (state 0x%X)" % (ev & 0xFFFF))
    if args.atr and atr.hex().upper() != args.atr.replace(" ", "").upper():
        raise Fail("ATR %s, expected %s" % (atr.hex().upper() or "-", args.atr))

    hr, card, proto = S.SCardConnect(ctx, reader, S.SCARD_SHARE_SHARED,
                                     S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1)
    if hr != S.SCARD_S_SUCCESS:
        raise Fail("SCardConnect: %s" % code(hr))
    try:
        hr, name, state, p, atr2 = S.SCardStatus(card)
        if hr != S.SCARD_S_SUCCESS:
            raise Fail("SCardStatus: %s" % code(hr))
        if bytes(atr2) != atr:
            raise Fail("SCardStatus ATR %s differs from %s" % (bytes(atr2).hex(), atr.hex()))
        # (c) APDU round trip
        pci = S.SCARD_PCI_T1 if proto == S.SCARD_PROTOCOL_T1 else S.SCARD_PCI_T0
        hr, resp = S.SCardTransmit(card, pci, SELECT)
        if hr != S.SCARD_S_SUCCESS:
            raise Fail("SCardTransmit: %s" % code(hr))
        resp = list(resp)
        if len(resp) == 2 and resp[0] == 0x61:
            # A T=0 card keeps the answer for GET RESPONSE, which the app sends (as OpenSC does).
            hr, resp = S.SCardTransmit(card, pci, [0x00, 0xC0, 0x00, 0x00, resp[1]])
            if hr != S.SCARD_S_SUCCESS:
                raise Fail("SCardTransmit(GET RESPONSE): %s" % code(hr))
            resp = list(resp)
        if resp[-2:] != [0x90, 0x00]:
            raise Fail("SELECT answered %s" % bytes(resp).hex().upper())
    finally:
        S.SCardDisconnect(card, S.SCARD_LEAVE_CARD)

    # (d) removal and insertion events
    if not args.no_events:
        cur = ev & ~S.SCARD_STATE_CHANGED
        say("@remove")
        ev = wait_state(S, ctx, reader, cur, S.SCARD_STATE_EMPTY, "EMPTY", args.timeout)
        say("@insert")
        wait_state(S, ctx, reader, ev & ~S.SCARD_STATE_CHANGED, S.SCARD_STATE_PRESENT, "PRESENT",
                   args.timeout)

    # (e) SCardCancel of an INFINITE wait
    if args.cancel:
        hr = cancel_check(S, ctx, reader, args.timeout)
        if hr != S.SCARD_E_CANCELLED:
            raise Fail("SCardCancel: the INFINITE wait returned %s, expected 0x80100002" % code(hr))
        hr, readers = S.SCardListReaders(ctx, [])
        if hr != S.SCARD_S_SUCCESS or reader not in readers:
            raise Fail("SCardListReaders after SCardCancel: %s %r" % (code(hr), readers))


def cancel_check(S, ctx, reader, timeout):
    """Waits INFINITE on READER's current state while another thread cancels; returns the
    wait's result (None if the wait did not end within TIMEOUT after the first cancel)."""
    import threading
    hr, st = S.SCardGetStatusChange(ctx, 0, [(reader, S.SCARD_STATE_UNAWARE)])
    if hr != S.SCARD_S_SUCCESS:
        raise Fail("SCardGetStatusChange(unaware, before cancel): %s" % code(hr))
    cur = st[0][1] & ~S.SCARD_STATE_CHANGED
    done = threading.Event()
    calls = []

    def canceller():
        # the first call after the wait has surely begun; again in case it came too early
        # (pcsc-lite ignores a cancel that finds no wait), until the wait ends
        time.sleep(0.3)
        while not done.is_set() and len(calls) < timeout * 2:
            calls.append(S.SCardCancel(ctx))
            done.wait(0.5)

    t = threading.Thread(target=canceller, daemon=True)
    t.start()
    result = []

    def waiter():
        result.append(S.SCardGetStatusChange(ctx, S.INFINITE, [(reader, cur)])[0])

    w = threading.Thread(target=waiter, daemon=True)
    w.start()
    w.join(timeout + 1)
    done.set()
    t.join(1)
    log("SCardCancel calls: %s" % ", ".join(code(c) for c in calls))
    if not result:
        raise Fail("SCardCancel: the INFINITE wait did not return (%d cancel calls: %s)"
                   % (len(calls), ", ".join(code(c) for c in calls[:3])))
    if calls and calls[0] != S.SCARD_S_SUCCESS:
        raise Fail("SCardCancel returned %s" % code(calls[0]))
    return result[0]


def repl(args):
    """The --repl mode (see the module doc)."""
    try:
        from smartcard import scard as S
    except Exception as e:  # noqa: BLE001
        say("@= import ERR %s" % str(e).splitlines()[0])
        return 1
    ctxs, cards = {}, {}
    for line in sys.stdin:
        w = line.split()
        if not w:
            continue
        verb = w[0]
        try:
            if verb == "quit":
                return 0
            if verb == "pid":
                import os
                say("@= pid 0x00000000 %d %x" % (os.getpid(), id(S)))
            elif verb == "establish":
                hr, c = S.SCardEstablishContext(S.SCARD_SCOPE_USER)
                if hr == S.SCARD_S_SUCCESS:
                    ctxs[w[1]] = c
                say("@= establish %s" % code(hr))
            elif verb == "list":
                hr, readers = S.SCardListReaders(ctxs[w[1]], [])
                say("@= list %s %s" % (code(hr), "|".join(readers or [])))
            elif verb == "connect":
                ctx = ctxs[w[1]]
                mode = {"shared": S.SCARD_SHARE_SHARED, "exclusive": S.SCARD_SHARE_EXCLUSIVE}[w[3]]
                reader = args.reader
                if not reader:
                    hr, readers = S.SCardListReaders(ctx, [])
                    if hr != S.SCARD_S_SUCCESS or not readers:
                        say("@= connect %s no reader" % code(hr))
                        continue
                    reader = readers[0]
                hr, card, proto = S.SCardConnect(ctx, reader, mode,
                                                 S.SCARD_PROTOCOL_T0 | S.SCARD_PROTOCOL_T1)
                if hr == S.SCARD_S_SUCCESS:
                    cards[w[2]] = (card, proto)
                say("@= connect %s" % code(hr))
            elif verb == "transmit":
                card, proto = cards[w[1]]
                pci = S.SCARD_PCI_T1 if proto == S.SCARD_PROTOCOL_T1 else S.SCARD_PCI_T0
                hr, resp = S.SCardTransmit(card, pci, SELECT)
                sw = bytes(list(resp)[-2:]).hex().upper() if hr == S.SCARD_S_SUCCESS else "-"
                say("@= transmit %s %s" % (code(hr), sw))
            elif verb == "disconnect":
                card, _ = cards.pop(w[1])
                say("@= disconnect %s" % code(S.SCardDisconnect(card, S.SCARD_LEAVE_CARD)))
            elif verb == "release":
                say("@= release %s" % code(S.SCardReleaseContext(ctxs.pop(w[1]))))
            elif verb == "cancel":
                ctx = ctxs[w[1]]
                reader = args.reader
                if not reader:
                    hr, readers = S.SCardListReaders(ctx, [])
                    reader = readers[0] if readers else ""
                say("@= cancel %s" % code(cancel_check(S, ctx, reader, args.timeout)))
            else:
                say("@= %s ERR unknown verb" % verb)
        except (KeyError, IndexError) as e:
            say("@= %s ERR bad slot or argument %s" % (verb, e))
        except Fail as e:
            say("@= %s ERR %s" % (verb, e))
    return 0


def main():
    args = parse(sys.argv[1:])
    if args.repl:
        return repl(args)
    try:
        run(args)
    except Fail as e:
        say("@FAIL %s" % e)
        return 1
    except Exception as e:  # noqa: BLE001 - any surprise is a failed cell, with its reason
        say("@FAIL %s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
        return 1
    say("@PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
