#!/usr/bin/env python3
"""A transparent Modbus TCP tap: forwards every connection to a real PLC
(here pymodbus) and logs each write request with the client's address.

    python tests/py/modbus_tap.py --listen 15600 --upstream 15601 --log writes.jsonl

Each write (function codes 5, 6, 15, 16) becomes one JSON line
{"ts_us", "peer", "fc", "address"} — the same shape as plc-sim's write log,
so the HA tests can check "one writer at a time" against a PLC that is not
canopy's own. Prints {"ready": true} once listening; runs until killed.
"""
import argparse
import asyncio
import json
import sys
import time


async def pipe_requests(reader, writer, peer, log):
    """Client -> PLC: parse MBAP frames, log writes, forward bytes as they are."""
    buf = b""
    while True:
        data = await reader.read(4096)
        if not data:
            break
        writer.write(data)
        await writer.drain()
        buf += data
        while len(buf) >= 8:
            length = int.from_bytes(buf[4:6], "big")  # unit id + PDU
            if len(buf) < 6 + length:
                break
            frame, buf = buf[: 6 + length], buf[6 + length :]
            fc = frame[7]
            if fc in (5, 6, 15, 16) and len(frame) >= 10:
                address = int.from_bytes(frame[8:10], "big")
                entry = {"ts_us": time.time_ns() // 1000, "peer": peer, "fc": fc, "address": address}
                log.write(json.dumps(entry) + "\n")
                log.flush()
    writer.close()


async def pipe_replies(reader, writer):
    while True:
        data = await reader.read(4096)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    log = open(args.log, "a")

    async def handle(client_reader, client_writer):
        host, port = client_writer.get_extra_info("peername")[:2]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", args.upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe_requests(client_reader, up_writer, f"{host}:{port}", log),
            pipe_replies(up_reader, client_writer),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", args.listen)
    print(json.dumps({"ready": True}), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
