"""Run under torchrun by test_distributed.py: `ddp_wait_worker.py OUT DEFAULT_TIMEOUT_S WORK_S`. The process group
gets a short default timeout (standing in for the 10-30 minute one); rank 0 then works alone for WORK_S seconds in
`Distributed.from_main` while the other rank waits; each rank writes what it received to OUT/rank<r>.txt."""
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from audio_vqvae.training.distributed import Distributed


def slow_work(seconds: float) -> str:
    time.sleep(seconds)
    return "indexed"


if __name__ == "__main__":
    out, default_timeout, work = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    dist.init_process_group("gloo", timeout=timedelta(seconds=default_timeout))
    ddp = Distributed.from_env()
    ddp.wait_timeout_s = 10 * (default_timeout + work)
    result = ddp.from_main(lambda: slow_work(work))
    ddp.agree(torch.tensor(True), every=True)  # the default group still works afterwards
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{ddp.rank}.txt").write_text(result)
    dist.destroy_process_group()
