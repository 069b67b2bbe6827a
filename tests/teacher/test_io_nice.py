"""The client's event-loop thread yields the CPU to the trainer's compute threads (io_nice)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gadx.teacher import TeacherClient


def _nice_of(native_id: int) -> int:
    # /proc/self/task/<tid>/stat: field 19 (1-based) is the nice value; split after the ")" of comm
    return int(Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature")
@pytest.mark.parametrize("io_nice", [10, 0])
def test_loop_thread_runs_at_io_nice_above_the_caller(fake, tmp_path, io_nice):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite", io_nice=io_nice) as t:
        assert t.submit([{"role": "user", "content": "a"}], max_tokens=4).result(timeout=10).text == "re: a"
        assert _nice_of(t._thread.native_id) == min(19, base + io_nice)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the caller's own thread is untouched


@pytest.mark.parametrize("bad", [-1, 20, 2.5, "10"])
def test_io_nice_out_of_range_is_a_value_error(fake, tmp_path, bad):
    with pytest.raises(ValueError, match=f"io_nice must be an integer in 0..19, got {bad!r}"):
        TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite", io_nice=bad)
