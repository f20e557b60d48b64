"""`python -m ivrserver ARGS` with a CPU-time cProfile that signals switch on and off (bench only).

    IVR_PROFILE_OUT=/tmp/ivr.prof python bench/profiled_run.py -c config.yaml run
    kill -USR1 <pid>   # start profiling the event-loop thread
    kill -USR2 <pid>   # stop and write the stats to $IVR_PROFILE_OUT (pstats format)

e2e_bench.py --cprofile FILE uses it around its last rate, so the stats hold the calls of that
rate only (no start-up, no import time). The timer is the thread's CPU clock, not the wall
clock: time spent waiting for a peer, or preempted by Asterisk on the same core, is not charged
to the function that was running. Profiling itself costs CPU per function call, so the absolute
figures are inflated; the call counts are exact.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivrserver.cli import main

profiler = cProfile.Profile(time.thread_time)


def _start(*_: object) -> None:
    profiler.enable()


def _stop(*_: object) -> None:
    profiler.disable()
    profiler.dump_stats(os.environ["IVR_PROFILE_OUT"])


signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _stop)
raise SystemExit(main())
