"""Tooling for tests, benchmarks and demos, not the runtime: nothing a worker
needs to do its work imports from here.

- `generator`: synthetic source traffic, a deterministic stream of customer
  and consent events with its ground truth (`hub demo`, tests, benchmarks).
- `harness`: a whole hub on this machine (embedded broker and Redis, worker
  processes, feeder, watcher), for `hub demo`, the integration tests and the
  benchmarks.
- `fuzzing`: hostile raw events, the fuzz corpus of the tests and benchmarks.
- `memdebug`: memory reports of a worker for investigations, off by default
  (`HUB_DEBUG__MEMORY_REPORT`; the worker imports it only when that is set).
- `tls`: a certificate authority made on the spot and a TLS terminator in
  front of the embedded broker.

The runtime commands that use this tooling (`hub demo`, the worker's memory
report) import it lazily, when they run.
"""
