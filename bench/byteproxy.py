#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that counts the bytes it forwards, for bench/refresh.sh.

    byteproxy.py --target 127.0.0.1:PORT --ready FILE [--listen-port 0] [--control-port 0]

Forwards every connection made to the listen port to the target and counts the payload
bytes read from each side: `up` (client -> target, the requests) and `down` (target ->
client, the responses), plus the connections accepted. TCP/IP headers are not counted.
Once both ports are bound it writes "LISTEN_PORT CONTROL_PORT" to FILE (atomically).

The control port answers HTTP GET:
    /        -> "UP DOWN CONNECTIONS\n", the counts since the start or the last reset;
    /reset   -> the same counts, then sets them to zero (one step: nothing is lost between).
"""

import argparse
import asyncio
import os

counts = {"up": 0, "down": 0, "conns": 0}


async def pump(reader, writer, key):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            counts[key] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        # Half-close: the other direction may still be carrying a response.
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            pass


async def handle(client_r, client_w, host, port):
    counts["conns"] += 1
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pump(client_r, up_w, "up"), pump(up_r, client_w, "down"))
    for w in (up_w, client_w):
        w.close()


async def control(reader, writer):
    try:
        line = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # the request headers
        parts = line.split()
        path = parts[1].decode() if len(parts) > 1 else "/"
        body = f"{counts['up']} {counts['down']} {counts['conns']}\n".encode()
        if path == "/reset":
            counts.update(up=0, down=0, conns=0)
        elif path != "/":
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--ready", required=True, help="file to write the two ports to")
    ap.add_argument("--listen-port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    proxy = await asyncio.start_server(
        lambda r, w: handle(r, w, host, int(port)), "127.0.0.1", a.listen_port)
    ctl = await asyncio.start_server(control, "127.0.0.1", a.control_port)
    ports = (proxy.sockets[0].getsockname()[1], ctl.sockets[0].getsockname()[1])
    with open(a.ready + ".tmp", "w") as f:
        f.write(f"{ports[0]} {ports[1]}\n")
    os.replace(a.ready + ".tmp", a.ready)
    async with proxy, ctl:
        await asyncio.gather(proxy.serve_forever(), ctl.serve_forever())


if __name__ == "__main__":
    asyncio.run(main())
