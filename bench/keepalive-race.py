#!/usr/bin/env python3
"""The keep-alive race, driven from outside (docs/proxy.md, "What is retried, exactly").

A member that closes every connection a moment (0 to DELAY seconds) after answering, without
saying so, so that its close races the next request; GETS GETs then POSTS POSTs through
`hastack proxy`, each on a new client connection, from CONC concurrent clients. Prints how
many got something else than 200. A GET must never fail (the proxy redoes it on a fresh
connection); a POST fails only when the close crossed it on the wire (it may have been
processed, so it is not sent again).

usage: bench/keepalive-race.py HASTACK [GETS [POSTS [DELAY [CONC [PORT]]]]]
  defaults: 2000 300 0.003 1; PORT 0 lets the kernel pick (the proxy prints the port);
  give a fixed PORT for builds that do not print their addresses.
"""
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile

BIN = sys.argv[1]
GETS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
POSTS = int(sys.argv[3]) if len(sys.argv) > 3 else 300
DELAY = float(sys.argv[4]) if len(sys.argv) > 4 else 0.003
CONC = int(sys.argv[5]) if len(sys.argv) > 5 else 1
PORT = int(sys.argv[6]) if len(sys.argv) > 6 else 0


async def member(reader, writer):
    try:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(4096)
            if not chunk:
                return
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        m = re.search(rb"content-length: *(\d+)", head, re.I)
        need = int(m.group(1)) if m else 0
        while len(rest) < need:
            chunk = await reader.read(4096)
            if not chunk:
                break
            rest += chunk
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # Close a moment later, like a keep-alive timeout expiring as the next request comes.
        await asyncio.sleep(random.uniform(0, DELAY))
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def one(port, req):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(req)
    await w.drain()
    data = await r.read()
    w.close()
    return data


async def main():
    srv = await asyncio.start_server(member, "127.0.0.1", 0)
    member_port = srv.sockets[0].getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as cfg:
        cfg.write(f"""
[proxy]
workers = 1
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:{PORT}"
pool = "m"
[proxy.pools.m]
members = ["127.0.0.1:{member_port}"]
""")
    proxy = subprocess.Popen([BIN, "proxy", "--config", cfg.name], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env={"HASTACK_LOG": "warn"})
    try:
        if PORT == 0:
            line = await asyncio.get_running_loop().run_in_executor(None, proxy.stdout.readline)
            port = int(line.decode().rsplit(":", 1)[1])
        else:
            port = PORT
            await asyncio.sleep(1.0)
        fails = {"GET": [], "POST": []}

        async def client():
            for method, n in (("GET", GETS // CONC), ("POST", POSTS // CONC)):
                body = b"hello" if method == "POST" else b""
                req = (f"{method} / HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
                       f"connection: close\r\n\r\n").encode() + body
                for _ in range(n):
                    data = await one(port, req)
                    if not data.startswith(b"HTTP/1.1 200"):
                        fails[method].append(data[:120])
                    await asyncio.sleep(random.uniform(0, 0.001))

        await asyncio.gather(*(client() for _ in range(CONC)))
    finally:
        proxy.kill()
        os.unlink(cfg.name)
    n_get, n_post = GETS // CONC * CONC, POSTS // CONC * CONC
    print(f"{BIN}: GET {len(fails['GET'])}/{n_get} failed, "
          f"POST {len(fails['POST'])}/{n_post} failed")
    for method, f in fails.items():
        for x in f[:3]:
            print("  ", method, x)


asyncio.run(main())
