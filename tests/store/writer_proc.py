"""A real writer process for the kill/resume and concurrency tests (run as a script).

    python tests/store/writer_proc.py STORE SPEC_JSON [--rank R --world W]
        [--die-in-shard S --die-after data|partial] [--pause SECONDS]

Writes its shards (missing ones with ``shard % world == rank``) of a synthetic store created by the
parent, printing ``done <shard>`` after each. ``--die-in-shard`` makes the process SIGKILL
itself inside that shard's write: after all of its array data (``data``) or after half of
the arrays (``partial``), i.e. at the two worst moments for the completion flag.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import store.writer
from store import StoreWriter
from store.synthetic import synthetic_rows, synthetic_spec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("spec")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--die-in-shard", type=int, default=-1)
    parser.add_argument("--die-after", choices=["data", "partial"], default="data")
    parser.add_argument("--pause", type=float, default=0.0, help="Seconds between shards.")
    args = parser.parse_args()
    spec = synthetic_spec(**json.loads(args.spec))
    writer = StoreWriter.open(args.path, spec)
    real_gather = store.writer.gather
    current = {"shard": -1}

    def dying_gather(coroutines):
        if current["shard"] != args.die_in_shard:
            return real_gather(coroutines)
        keep = len(coroutines) if args.die_after == "data" else len(coroutines) // 2
        for coroutine in coroutines[keep:]:
            coroutine.close()
        real_gather(coroutines[:keep])
        os.kill(os.getpid(), signal.SIGKILL)

    store.writer.gather = dying_gather
    for shard in writer.missing_shards(args.rank, args.world):
        current["shard"] = shard
        start, stop = writer.shard_rows_range(shard)
        writer.write_shard(shard, synthetic_rows(spec, start, stop, seed=7))
        print(f"done {shard}", flush=True)
        time.sleep(args.pause)
    sys.exit(0)


if __name__ == "__main__":
    main()
