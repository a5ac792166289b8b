#!/usr/bin/env python3
"""A standard Modbus TCP server (pymodbus), to show canopy reads any PLC.

    python tests/py/modbus_server.py --port 15502 --holding 100=1234 --input 5=77

Prints {"ready": true, "port": N} once listening; runs until killed.
"""
import argparse
import asyncio
import json
import sys

from pymodbus.datastore import (ModbusDeviceContext, ModbusSequentialDataBlock,
                                ModbusServerContext)
from pymodbus.server import StartAsyncTcpServer


def pairs(specs):
    out = {}
    for s in specs:
        addr, value = s.split("=", 1)
        out[int(addr)] = int(value)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--holding", action="append", default=[], help="ADDR=VALUE")
    ap.add_argument("--input", action="append", default=[], help="ADDR=VALUE")
    args = ap.parse_args()
    hr = [0] * 1000
    ir = [0] * 1000
    for a, v in pairs(args.holding).items():
        hr[a] = v
    for a, v in pairs(args.input).items():
        ir[a] = v
    # pymodbus data blocks are 1-based on the wire side: address 0 in the
    # block is register 1, so start the block at 1 to keep addresses equal.
    device = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, hr),
        ir=ModbusSequentialDataBlock(1, ir),
        co=ModbusSequentialDataBlock(1, [0] * 1000),
        di=ModbusSequentialDataBlock(1, [0] * 1000),
    )
    context = ModbusServerContext(devices={1: device}, single=False)
    print(json.dumps({"ready": True, "port": args.port}), flush=True)
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", args.port))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
