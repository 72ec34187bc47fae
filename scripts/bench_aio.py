"""The asyncio client (issue 14): the event loop's worst lag while 1000 remote mutations run (sequential awaits,
then 1000 at once), and the async round trip against the sync one, against a daemon process (bench_transport's
``daemon`` mode: machine b0 on tcp 127.0.0.1). Called from scripts/bench.py (section ``aio``)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import bench_transport as bt


def measure(quick: bool) -> dict[str, Any]:
    from transport import connect
    from transport.aio import connect_async

    n = 200 if quick else 1000
    p, addr = bt._spawn("daemon")
    try:
        with connect(addr) as c:
            rm = c.machine("b0")
            sync_lat = bt._lat(lambda: rm.add("M"), n)

        async def run() -> dict[str, Any]:
            async with connect_async(addr) as ac:
                am = await ac.machine("b0")
                lags: list[float] = []
                stop = asyncio.Event()

                async def ticker() -> None:
                    while not stop.is_set():
                        t0 = time.perf_counter()
                        await asyncio.sleep(0.001)
                        lags.append(time.perf_counter() - t0 - 0.001)

                tick = asyncio.create_task(ticker())
                lat = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await am.add("M")
                    lat.append(time.perf_counter() - t0)
                seq_lag = max(lags)
                lags.clear()
                t0 = time.perf_counter()
                await asyncio.gather(*(am.add("M") for _ in range(n)))
                burst = time.perf_counter() - t0
                burst_lag = max(lags) if lags else 0.0
                stop.set()
                await tick
                return {"lat": lat, "seq_lag": seq_lag, "burst": burst, "burst_lag": burst_lag}

        r = asyncio.run(run())
    finally:
        bt._stop(p)
    return {"n": n, "sync_p50": statistics.median(sync_lat), "async_p50": statistics.median(r["lat"]),
            "async_p99": bt._pct(r["lat"], 0.99), "seq_lag": r["seq_lag"], "burst": r["burst"],
            "burst_lag": r["burst_lag"]}
