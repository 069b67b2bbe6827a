"""gadx: black-box on-policy distillation of LLMs with Generative Adversarial Distillation."""
import warnings as _warnings

__version__ = "0.1.0"

# megatron-core warns at import time, once per module (six lines on every command that loads a model),
# that Transformer Engine / Apex are missing and it falls back to its local implementations. gadx
# never uses the TE/Apex paths (its kernels and the CPU adapter replace them), so these say nothing
# actionable. The filter matches only these messages, only from megatron's own modules; every other
# warning, megatron's included, still shows. `python -W default::UserWarning` does not undo it; to
# see them, import megatron.core before gadx.
_warnings.filterwarnings("ignore", message=r"(Transformer Engine and Apex are|Apex is) not installed",
                         category=UserWarning, module=r"megatron")
