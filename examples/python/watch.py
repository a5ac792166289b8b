#!/usr/bin/env python3
"""Watch canopy events from Python: subscribe, decode CBOR, check the chain.

    pip install nats-py cbor2
    python examples/python/watch.py tls://127.0.0.1:14000 'root.>' --count 20 \
        --identity /tmp/lab/keys/clients/viewer

Prints one JSON object per event (origin, seq, epoch, member, ts, kind, point,
value, quality; for a command also op, by, outcome and whether it was
signed by its client) and warns on stderr when an origin's hash chain does not link
(prev must be the SHA-256 of the previous event's exact bytes). See
docs/wire-format.md for the format.
"""
import argparse
import asyncio
import hashlib
import json
import sys

import cbor2
import nats


def describe(event: dict) -> dict:
    """Flattens an envelope into one JSON-friendly record."""
    (kind, body), = event["body"].items()
    record = {
        "origin": event["origin"],
        "seq": event["seq"],
        "epoch": event["epoch"],
        "member": event["member"],
        "ts": event["ts"],
        "kind": kind,
        "point": body.get("point"),
        "value": body.get("value"),
        "quality": body.get("quality"),
    }
    if kind == "command":
        # Who asked for a write / force / unforce, and what came of it; the
        # signature is checked by `canopy audit` (docs/wire-format.md, Command).
        record.update(op=body["op"], by=body["by"], outcome=body["outcome"],
                      signed=len(body["sig"]) == 64)
    return record


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("server", help="any NATS server of the tree")
    ap.add_argument("pattern", help="point pattern, e.g. 'root.south.>'")
    ap.add_argument("--count", type=int, default=0, help="stop after N events (0: run forever)")
    ap.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    ap.add_argument("--identity", help="client identity prefix (PATH.crt, PATH.key, CA two "
                    "directories up), needed for a tls:// server of the secured tree")
    args = ap.parse_args()

    options = {}
    if args.server.startswith("tls://"):
        if not args.identity:
            ap.error(f"{args.server} is a TLS server of a secured tree: give --identity")
        import pathlib
        import ssl
        prefix = pathlib.Path(args.identity)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(prefix.parent.parent / "ca.crt"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(f"{prefix}.crt", f"{prefix}.key")
        options = {"tls": ctx, "tls_handshake_first": True}
    nc = await nats.connect(args.server, **options)
    sub = await nc.subscribe(f"canopy.ev.{args.pattern}")
    last = {}  # origin -> (seq, sha256 of its bytes)
    seen = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    try:
        while args.count == 0 or seen < args.count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                print(f"timed out after {seen} events", file=sys.stderr)
                return 1
            try:
                msg = await sub.next_msg(timeout=remaining)
            except nats.errors.TimeoutError:
                continue
            try:
                event = cbor2.loads(msg.data)
            except Exception as e:  # garbage on the subject: report, keep going
                print(f"undecodable message on {msg.subject}: {e}", file=sys.stderr)
                continue
            prev = last.get(event["origin"])
            if prev and prev[0] + 1 == event["seq"] and prev[1] != event["prev"]:
                print(f"chain broken at {event['origin']} seq {event['seq']}", file=sys.stderr)
            last[event["origin"]] = (event["seq"], hashlib.sha256(msg.data).digest())
            print(json.dumps(describe(event)), flush=True)
            seen += 1
    finally:
        await nc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
