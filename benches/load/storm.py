#!/usr/bin/env python3
"""Helpers for benches/load/run that wrk and h2load cannot do.

  storm.py idle PORT COUNT TOKEN   open COUNT TLS keep-alive connections, one authenticated
                                   request on each, then hold them idle; prints "ready N" once
                                   all are open and keeps them until stdin closes.
  storm.py logins PORT CONC SECS   keep CONC password logins in flight for SECS seconds (each
                                   a fresh TLS connection and an argon2 verification: unknown
                                   user names, so no account locks); prints the count.
"""
import asyncio
import ssl
import sys
import time


def context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if length:
        await reader.readexactly(length)
    return head.split(b" ", 2)[1]


async def idle(port, count, token):
    ctx = context()
    gate = asyncio.Semaphore(200)
    conns = []

    async def one():
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            writer.write(
                b"GET /api/patients/1001/records HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
            )
            await writer.drain()
            status = await read_response(reader)
            conns.append((reader, writer, status))

    await asyncio.gather(*(one() for _ in range(count)))
    ok = sum(1 for c in conns if c[2] == b"200")
    print(f"ready {len(conns)} ok {ok}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def logins(port, concurrency, seconds):
    ctx = context()
    deadline = time.monotonic() + seconds
    done = 0
    counter = 0

    async def worker(n):
        nonlocal done, counter
        while time.monotonic() < deadline:
            counter += 1
            body = ('{"username":"storm-%d-%d","password":"not the password at all","totp":"000000"}'
                    % (n, counter)).encode()
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            writer.write(
                b"POST /.wardgate/api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
            await read_response(reader)
            writer.close()
            done += 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    print(f"logins {done}", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "idle":
        asyncio.run(idle(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(logins(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
