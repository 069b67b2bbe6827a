"""The embedded synthetic instruction world and its exact stochastic teacher.

    from gadx.world import World, SyntheticTeacher
    world = World(seed=0)
    world.split("train"), world.split("test_id"), world.split("test_ood")
    world.teacher.sample / .logprob / .is_correct / .phrasing_distance
    world.corpus()

See world.py (splits), families.py (the six task families), teacher.py (the
persona styles, the served ``reply``) and dist.py (exact string distributions).
"""
from gadx.world.teacher import SyntheticTeacher, count_tokens
from gadx.world.world import Example, World

__all__ = ["Example", "SyntheticTeacher", "World", "count_tokens"]
