"""training/distributed.py under 2 gloo processes: waits for rank 0's lone work outlast the default timeout."""
from __future__ import annotations

from helpers import torchrun_script


def test_other_ranks_wait_for_rank_zeros_work_longer_than_the_default_timeout(tmp_path):
    """Rank 0 works 8 s alone in from_main while the process group's default timeout is 3 s: the other rank waits
    (in a group with wait_timeout_s) and both get the result."""
    proc = torchrun_script("ddp_wait_worker.py", [str(tmp_path), "3", "8"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["indexed", "indexed"]
