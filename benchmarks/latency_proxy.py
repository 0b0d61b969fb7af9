"""A TCP proxy that puts a network between a benchmark and its Redis (or any
TCP server): every chunk waits `--delay-ms` / 2 each way, on top of the
proxy's own hop (about 0.2 ms on this machine; `redis-cli -p PORT --latency`
shows the round trip it makes). For figures that depend on round trips, as a
deployment with Redis on another host has them.

    python benchmarks/latency_proxy.py --listen 6390 --target 127.0.0.1:6379 --delay-ms 0 &
    python benchmarks/stages.py --engine fused --redis-url redis://127.0.0.1:6390/9 --batch 10 --events 4000
"""

from __future__ import annotations

import argparse
import asyncio


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    try:
        while data := await reader.read(65536):
            if delay_s:
                await asyncio.sleep(delay_s)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(listen: int, host: str, port: int, delay_s: float) -> None:
    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(_pipe(client_reader, server_writer, delay_s), _pipe(server_reader, client_writer, delay_s))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, default=6390)
    parser.add_argument("--target", default="127.0.0.1:6379")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added to each round trip, half each way")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(serve(args.listen, host, int(port), args.delay_ms / 2000))


if __name__ == "__main__":
    main()
