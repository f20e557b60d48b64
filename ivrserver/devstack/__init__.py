"""A local telephony stack for `make run`, `make call`, the integration tests and the benchmarks:
Asterisk 22, Redis, SIPp — everything on 127.0.0.1, stdlib + asyncio (no blocking call inside a
coroutine). One module per thing it runs:

| module        | what                                                                        |
|---------------|-----------------------------------------------------------------------------|
| `process`     | repository paths, `DevStackError`, running a program without blocking       |
| `ports`       | `StackPorts`: `.default()` (make run's fixed ports), `.free()` (tests)      |
| `asterisk`    | `render_asterisk()`, `LocalAsterisk` (host install or the Debian chroot)     |
| `redis`       | `LocalRedis`: throwaway for tests, persistent (AOF) for make run            |
| `sipp`        | `start_sipp()`, `SippProcess`/`SippResult`, `start_caller()`                |
| `rtp`         | `dtmf_pcaps()`: RFC 4733 DTMF captures renumbered for SIPp callers          |
| `pidfiles`    | what make run started, so the next one stops what a killed one left         |
| `stack`       | `stack()` (Redis + Asterisk), `stack_settings()`, `write_settings()`        |
| `demo`        | the demo data: seeding it, and what the demo VIP's call does                |
| `calls`       | `make call`: one call and what became of it (route, agent, outcome)         |
| `cli`         | `python -m ivrserver.devstack run | up | call`                              |

Import from the module that owns a name (`from ivrserver.devstack.asterisk import LocalAsterisk`).
"""
