"""Peak memory of one device by phase and by component, on top of torch's MemTracker.

    mem = PhaseMemory(device)
    with mem:                           # a MemTracker: every tensor made inside is counted
        mem.mark("weights/student")     # persistent components: the growth since the last mark
        ...
        mem.phase("rollout")            # transients: the peak above the phase's start
        mem.loss_enter(); ...; mem.loss_exit()   # activations held at the loss, the loss's own buffers

MemTracker counts each storage once, from the op that made it until it is freed, per
device. The subclass below keeps only the whole-device peak (MemTracker's per-module
peaks walk every module ever called on every op: minutes for a 7B model; its module hooks
also trip over megatron's DDP, whose ``buffers`` attribute is a list), and adds a
peak since the last phase start and one since the last loss entry.
"""
from __future__ import annotations

import contextlib

import torch
from torch.distributed._tools.mem_tracker import MemTracker

_TOTAL = "Total"


class _Tracker(MemTracker):
    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.phase_peak = 0
        self.loss_peak = 0

    def current(self) -> int:
        snap = self._curr_mem_snap.get(self.device)
        return snap[_TOTAL] if snap else 0

    # MemTracker's per-module hooks: not needed here, and they call ``module.buffers()``, which
    # megatron's DDP wrapper shadows with a list attribute
    def _pre_fw_hook(self, module, inputs) -> None:
        pass

    def _post_fw_hook(self, module, inputs, outputs) -> None:
        pass

    def _pre_bw_hook(self, module, args) -> None:
        pass

    def _post_bw_hook(self, module, args) -> None:
        pass

    def _update_peak_stats(self, peak_state) -> None:  # called after every op
        total = self.current()
        self.phase_peak = max(self.phase_peak, total)
        self.loss_peak = max(self.loss_peak, total)
        for dev, snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < snap[_TOTAL]:
                self._peak_mem[dev] = snap[_TOTAL]
                self._peak_mem_snap[dev] = dict(snap)


class PhaseMemory:
    def __init__(self, device: torch.device):
        self.device = device
        self.t = _Tracker(device)
        self.components: dict[str, int] = {}
        self.phases: dict[str, dict[str, int]] = {}
        self._last_mark = 0
        self._phase: str | None = None
        self._phase_start = 0
        self._loss_entry = 0
        self._act = 0
        self._loss = 0

    def __enter__(self):
        self.t.__enter__()
        return self

    def __exit__(self, *exc):
        self.end_phase()
        self.t.__exit__(*exc)

    def current(self) -> int:
        return self.t.current()

    @property
    def peak(self) -> int:
        return self.t._peak_mem.get(self.device, 0)

    def mark(self, component: str) -> int:
        """Attribute the growth of persistent memory since the last mark to ``component``."""
        now = self.current()
        grown = now - self._last_mark
        self.components[component] = self.components.get(component, 0) + grown
        self._last_mark = now
        return grown

    @contextlib.contextmanager
    def grows(self, component: str):
        """Attribute what the block leaves allocated to ``component`` (e.g. the sampler's weight copy)."""
        before = self.current()
        yield
        self.components[component] = self.components.get(component, 0) + self.current() - before

    def phase(self, name: str) -> None:
        """Close the running phase and start ``name``."""
        self.end_phase()
        self._phase = name
        self._phase_start = self.current()
        self.t.phase_peak = self._phase_start
        self._act = self._loss = 0

    def end_phase(self) -> None:
        if self._phase is None:
            return
        self.phases[self._phase] = {"start": self._phase_start, "peak": self.t.phase_peak,
                                    "transient": self.t.phase_peak - self._phase_start,
                                    "activations": self._act, "loss_buffers": self._loss}
        self._phase = None

    def loss_enter(self) -> None:
        self._loss_entry = self.current()
        self.t.loss_peak = self._loss_entry
        self._act = max(self._act, self._loss_entry - self._phase_start)

    def loss_exit(self) -> None:
        self._loss = max(self._loss, self.t.loss_peak - self._loss_entry)
