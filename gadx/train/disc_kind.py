"""What ``discriminator.kind`` makes of D: its model head and, for the implicit kind, its reward.

    head, implicit = disc_kind(cfg)        # ("score", None) or ("lm", ImplicitReward(beta, temperature))
    D = Player(build_model(..., head=head), lr=d_lrs(cfg)[0], ..., implicit=implicit)

One rule for the trainer (gadx.train.trainer) and ``gadx plan`` (gadx.plan.dryrun): the plan must
size and place the D the trainer will run, not a score head whatever the config says.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .player import ImplicitReward

if TYPE_CHECKING:
    from .config import TrainConfig


def disc_kind(cfg: TrainConfig) -> tuple[str, ImplicitReward | None]:
    """(model head, ImplicitReward or None) of the discriminator ``cfg.discriminator.kind`` asks for:
    the score head ("score", None), or a whole LM whose score is beta * (its reply log-likelihood at
    the sampling temperature - the reference's) ("lm", ImplicitReward)."""
    dc = cfg.discriminator
    if dc.kind == "score":
        return "score", None
    if dc.kind == "implicit":
        return "lm", ImplicitReward(beta=dc.beta, temperature=cfg.stages.temperature)
    raise ValueError(f"discriminator.kind must be score or implicit, got {dc.kind!r}")
