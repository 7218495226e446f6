#!/usr/bin/python3
"""pyscard client check for pcsc-bridge.

Run with Debian's interpreter (python3-pyscard lives there):

    PCSCLITE_CSOCK_NAME=/path/pcscd.comm /usr/bin/python3 pyscard_check.py ["Reader"]

pyscard's _scard module dlopen()s "libpcsclite.so.1", so this exercises the
library the same way opensc does. Uses the low-level smartcard.scard API and
the high-level smartcard.System / CardConnection API. Prints one deterministic
line per check, `name: rv=0x........ <results>` (high-level checks print
rv=0x00000000 or the hresult of the exception). Handles, event counters
(bits 16-31) and anything else that changes between runs are not printed.
Exit status 0 unless Python itself fails.
"""

import sys
import threading
import time

from smartcard import scard
from smartcard.util import toHexString

AID = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01]
SELECT = [0x00, 0xA4, 0x04, 0x00, len(AID)] + AID
SELECT_BAD = [0x00, 0xA4, 0x04, 0x00, len(AID)] + AID[:-1] + [0x7F]
READ16 = [0x00, 0xB0, 0x00, 0x00, 0x10]
READ_EXT_4096 = [0x00, 0xB0, 0x00, 0x10, 0x00, 0x10, 0x00]
ECHO5 = [0x80, 0x01, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0x00]
CHAIN_512 = [0x80, 0x02, 0x02, 0x00, 0x00]
VERIFY_OK = [0x00, 0x20, 0x00, 0x81, 0x06] + list(b"123456")


def out(name, rv, text=""):
    try:
        rvs = "0x%08x" % rv
    except TypeError:
        rvs = repr(rv)
    print("%s: rv=%s%s" % (name, rvs, (" " + text) if text else ""), flush=True)


def fnv(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def hexs(data):
    data = list(data)
    if not data:
        return "-"
    s = toHexString(data[:16])
    if len(data) > 16:
        s += " ...(len=%d fnv=%08x)" % (len(data), fnv(data))
    return s


def resp(r):
    r = list(r)
    if len(r) < 2:
        return "len=%d resp=%s" % (len(r), hexs(r))
    return "len=%d sw=%02X%02X data=%s" % (len(r), r[-2], r[-1], hexs(r[:-2]))


def pattern_ok(data, off):
    return int(all(b == (((off + i) & 0xFF) ^ 0x5A) for i, b in enumerate(data)))


def pci(proto):
    return scard.SCARD_PCI_T1 if proto == scard.SCARD_PROTOCOL_T1 else scard.SCARD_PCI_T0


def lowlevel(want):
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    out("ll_establish", hr)
    if hr != scard.SCARD_S_SUCCESS:
        return None
    out("ll_isvalid", scard.SCardIsValidContext(ctx))
    hr, groups = scard.SCardListReaderGroups(ctx)
    out("ll_listgroups", hr, "groups=%r" % (groups,))
    hr, readers = scard.SCardListReaders(ctx, [])
    out("ll_listreaders", hr, "readers=%r" % (readers,))
    if hr != scard.SCARD_S_SUCCESS or not readers:
        scard.SCardReleaseContext(ctx)
        return None
    reader = want if want else readers[0]
    other = next((r for r in readers if r != reader), None)
    out("ll_chosen", 0, "card=%r other=%r" % (reader, other))

    # GetStatusChange: unaware, then unchanged with timeouts 0 and 150 ms
    states = [(reader, scard.SCARD_STATE_UNAWARE)]
    if other:
        states.append((other, scard.SCARD_STATE_UNAWARE))
    hr, st = scard.SCardGetStatusChange(ctx, 0, states)
    out("ll_gsc_unaware_t0", hr, " ".join("[%s] ev=0x%04x atr=%s" % (r, e & 0xFFFF, hexs(a)) for r, e, a in st))
    cur = [(r, e & ~scard.SCARD_STATE_CHANGED) for r, e, a in st]
    hr, st = scard.SCardGetStatusChange(ctx, 0, cur)
    out("ll_gsc_nochange_t0", hr, " ".join("ev=0x%04x" % (e & 0xFFFF) for r, e, a in st))
    hr, st = scard.SCardGetStatusChange(ctx, 150, cur)
    out("ll_gsc_nochange_t150", hr, " ".join("ev=0x%04x" % (e & 0xFFFF) for r, e, a in st))
    hr, st = scard.SCardGetStatusChange(ctx, 0, [("No Such Reader 00 00", scard.SCARD_STATE_UNAWARE)])
    out("ll_gsc_unknown_reader", hr)
    hr, st = scard.SCardGetStatusChange(ctx, 100, [("\\\\?PnP?\\Notification", scard.SCARD_STATE_UNAWARE)])
    out("ll_gsc_pnp_t100", hr, " ".join("ev=0x%08x" % e for r, e, a in st))

    # cancel from another thread while this one waits with INFINITE
    box = {}

    def waiter():
        box["rv"] = scard.SCardGetStatusChange(ctx, scard.INFINITE, cur[:1])[0]

    th = threading.Thread(target=waiter)
    th.start()
    crv = None
    for i in range(100):
        time.sleep(0.3 if i == 0 else 0.1)
        if not th.is_alive():
            break
        crv = scard.SCardCancel(ctx)
    th.join(10)
    out("ll_cancel_thread", crv if crv is not None else -1,
        "waiter_rv=0x%08x" % box["rv"] if "rv" in box else "waiter=still-blocked")

    # connect / status / transmit
    hr, h, proto = scard.SCardConnect(ctx, reader, scard.SCARD_SHARE_SHARED,
                                      scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
    out("ll_connect", hr, "proto=%d" % (proto if hr == 0 else -1))
    if hr != scard.SCARD_S_SUCCESS:
        scard.SCardReleaseContext(ctx)
        return None
    hr, name, state, p, atr = scard.SCardStatus(h)
    out("ll_status", hr, "name=%r state=0x%04x proto=%d atr=%s" % (name, state & 0xFFFF, p, hexs(atr)))

    def tx(label, apdu, use_pci=None):
        hr, r = scard.SCardTransmit(h, use_pci if use_pci is not None else pci(proto), apdu)
        out(label, hr, resp(r) if hr == 0 else "")
        return hr, list(r) if hr == 0 else []

    tx("ll_select_aid", SELECT)
    tx("ll_select_unknown_aid", SELECT_BAD)
    hr, r = tx("ll_read_short_16", READ16)
    if hr == 0 and len(r) >= 2:
        out("ll_read_short_pattern", 0, "ok=%d" % pattern_ok(r[:-2], 0))
    hr, r = tx("ll_read_extended_4096", READ_EXT_4096)
    if hr == 0 and len(r) >= 2:
        out("ll_read_extended_pattern", 0, "ok=%d" % pattern_ok(r[:-2], 0x10))
    tx("ll_echo_short_5", ECHO5)
    data = [(i * 7 + 3) & 0xFF for i in range(4096)]
    hr, r = tx("ll_echo_extended_4096", [0x80, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00] + data + [0x00, 0x00])
    if hr == 0:
        out("ll_echo_extended_match", 0, "match=%d" % int(r[:-2] == data))
    hr, r = tx("ll_chain_first", CHAIN_512)
    total, rounds, sws = 0, 0, []
    while hr == 0 and len(r) >= 2 and r[-2] == 0x61 and rounds < 8:
        total += len(r) - 2
        hr, r = scard.SCardTransmit(h, pci(proto), [0x00, 0xC0, 0x00, 0x00, r[-1]])
        r = list(r)
        rounds += 1
        if hr == 0 and len(r) >= 2:
            sws.append("%02X%02X/%d" % (r[-2], r[-1], len(r) - 2))
    if hr == 0 and len(r) >= 2:
        total += len(r) - 2
    out("ll_chain_get_response", hr, "rounds=%d sws=%s total=%d" % (rounds, ",".join(sws) or "-", total))
    tx("ll_verify_pin_ok", VERIFY_OK)
    tx("ll_wrong_proto_pci", READ16,
       scard.SCARD_PCI_T0 if proto == scard.SCARD_PROTOCOL_T1 else scard.SCARD_PCI_T1)

    # transaction
    out("ll_begin", scard.SCardBeginTransaction(h))
    tx("ll_read_in_transaction", READ16)
    out("ll_end", scard.SCardEndTransaction(h, scard.SCARD_LEAVE_CARD))
    out("ll_end_again", scard.SCardEndTransaction(h, scard.SCARD_LEAVE_CARD))

    # attributes and control (vpcd answers errors for most: rv is what counts)
    hr, a = scard.SCardGetAttrib(h, scard.SCARD_ATTR_ATR_STRING)
    out("ll_getattrib_atr", hr, "data=%s" % hexs(a) if hr == 0 else "")
    hr, a = scard.SCardGetAttrib(h, scard.SCARD_ATTR_DEVICE_FRIENDLY_NAME_A)
    out("ll_getattrib_friendly_name", hr, "data=%s" % hexs(a) if hr == 0 else "")
    hr, a = scard.SCardControl(h, scard.SCARD_CTL_CODE(3400), [])
    out("ll_control_get_feature_request", hr, "data=%s" % hexs(a) if hr == 0 else "")

    # reconnect and disconnect
    hr, p = scard.SCardReconnect(h, scard.SCARD_SHARE_SHARED,
                                 scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1, scard.SCARD_RESET_CARD)
    out("ll_reconnect_reset", hr, "proto=%d" % (p if hr == 0 else -1))
    tx("ll_read_after_reset", READ16)
    out("ll_disconnect", scard.SCardDisconnect(h, scard.SCARD_LEAVE_CARD))
    out("ll_disconnect_again", scard.SCardDisconnect(h, scard.SCARD_LEAVE_CARD))

    # misuse that pyscard passes through
    hr, h2, p = scard.SCardConnect(ctx, "No Such Reader 00 00", scard.SCARD_SHARE_SHARED,
                                   scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
    out("ll_connect_unknown_reader", hr)
    if other:
        hr, h2, p = scard.SCardConnect(ctx, other, scard.SCARD_SHARE_SHARED,
                                       scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        out("ll_connect_empty_reader", hr)
    out("ll_error_message", 0, "%r" % scard.SCardGetErrorMessage(scard.SCARD_E_NO_SMARTCARD))

    out("ll_release", scard.SCardReleaseContext(ctx))
    out("ll_isvalid_after_release", scard.SCardIsValidContext(ctx))
    return reader


def highlevel(want):
    from smartcard.System import readers
    from smartcard.Exceptions import CardConnectionException, NoCardException
    from smartcard.CardConnection import CardConnection

    try:
        rs = readers()
    except Exception as e:  # noqa: BLE001 - shown as a result
        out("hl_readers", getattr(e, "hresult", -1), "exception=%s" % type(e).__name__)
        return
    out("hl_readers", 0, "readers=%r" % [str(r) for r in rs])
    if not rs:
        return
    reader = next((r for r in rs if str(r) == want), rs[0]) if want else rs[0]
    conn = reader.createConnection()
    try:
        conn.connect()
    except (CardConnectionException, NoCardException) as e:
        out("hl_connect", getattr(e, "hresult", -1), "exception=%s" % type(e).__name__)
        return
    out("hl_connect", 0, "reader=%r protocol=%d" % (str(conn.getReader()), conn.getProtocol()))
    out("hl_atr", 0, "atr=%s" % toHexString(conn.getATR()))

    def tx(label, apdu):
        try:
            data, sw1, sw2 = conn.transmit(apdu)
        except CardConnectionException as e:
            out(label, getattr(e, "hresult", -1), "exception=%s" % type(e).__name__)
            return None
        out(label, 0, "len=%d sw=%02X%02X data=%s" % (len(data), sw1, sw2, hexs(data)))
        return data, sw1, sw2

    tx("hl_select_aid", SELECT)
    tx("hl_select_unknown_aid", SELECT_BAD)
    tx("hl_read_short_16", READ16)
    tx("hl_read_extended_4096", READ_EXT_4096)
    tx("hl_echo_short_5", ECHO5)
    r = tx("hl_chain_first", CHAIN_512)
    total = 0
    rounds = 0
    while r is not None and r[1] == 0x61 and rounds < 8:
        total += len(r[0])
        r = tx("hl_get_response_%d" % rounds, [0x00, 0xC0, 0x00, 0x00, r[2]])
        rounds += 1
    if r is not None:
        total += len(r[0])
    out("hl_chain_total", 0, "rounds=%d total=%d" % (rounds, total))
    tx("hl_verify_pin_ok", VERIFY_OK)
    try:
        conn.disconnect()
        out("hl_disconnect", 0)
    except Exception as e:  # noqa: BLE001
        out("hl_disconnect", getattr(e, "hresult", -1), "exception=%s" % type(e).__name__)

    # explicit T=1 connection, then T=0 (one of them fails on a T=1-only card)
    for label, proto in (("hl_connect_T1", CardConnection.T1_protocol),
                         ("hl_connect_T0", CardConnection.T0_protocol)):
        c = reader.createConnection()
        try:
            c.connect(proto)
            out(label, 0, "protocol=%d" % c.getProtocol())
            c.disconnect()
        except (CardConnectionException, NoCardException) as e:
            out(label, getattr(e, "hresult", -1), "exception=%s" % type(e).__name__)


def main():
    want = sys.argv[1] if len(sys.argv) > 1 else None
    reader = lowlevel(want)
    highlevel(reader or want)
    out("done", 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
