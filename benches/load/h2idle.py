#!/usr/bin/env python3
"""Idle HTTP/2 connections, for measuring what they cost a proxy (`idle-h2` in benches/load/run).

  h2idle.py PORT COUNT TOKEN   open COUNT TLS connections with ALPN h2 on 127.0.0.1:PORT, send
                               one authenticated GET on each, then hold them idle; prints
                               "ready N ok M" once all are open and keeps them until stdin
                               closes (the same protocol as `storm.py idle`).

Needs the `h2` package (`pip install h2`; benches/load/run installs it into a throwaway venv).
Read the proxy's RSS (/proc/PID/status) before and a few seconds after "ready".
"""
import asyncio
import ssl
import sys

import h2.config
import h2.connection
import h2.events

PATH = "/api/patients/1001/records"


def context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def idle(port, count, token):
    ctx = context()
    gate = asyncio.Semaphore(200)
    conns = []
    ok = 0

    async def one():
        nonlocal ok
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "GET"), (":path", PATH), (":scheme", "https"),
                                  (":authority", "127.0.0.1"),
                                  ("authorization", "Bearer " + token)], end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
            ended = False
            while not ended:
                data = await reader.read(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        if dict(event.headers).get(b":status") == b"200":
                            ok += 1
                    if isinstance(event, h2.events.StreamEnded):
                        ended = True
                writer.write(conn.data_to_send())
            await writer.drain()
            conns.append((reader, writer, conn))

    await asyncio.gather(*(one() for _ in range(count)))
    print(f"ready {len(conns)} ok {ok}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(idle(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
