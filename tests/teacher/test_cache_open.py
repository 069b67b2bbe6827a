"""Several processes opening one new cache file at once (a trainer's ranks share out_dir/teacher_cache.sqlite)."""
import multiprocessing as mp


def _open(path, barrier, q):
    from gadx.teacher.cache import Cache

    barrier.wait()
    try:
        Cache(path).close()
        q.put("ok")
    except Exception as e:  # reported to the parent, which fails the test
        q.put(repr(e))


def test_concurrent_first_open_of_one_cache_file(tmp_path):
    ctx = mp.get_context("spawn")
    for trial in range(6):  # the race does not show every time
        path = str(tmp_path / f"cache{trial}.sqlite")
        n = 4
        barrier, q = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, q)) for _ in range(n)]
        for p in procs:
            p.start()
        results = [q.get(timeout=120) for _ in range(n)]
        for p in procs:
            p.join(timeout=60)
        assert results == ["ok"] * n, results
