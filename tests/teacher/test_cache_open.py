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


def test_a_cancelled_waiter_does_not_kill_the_writer(tmp_path):
    """Stopping cancels tasks that wait for their 'send' row to commit; the single writer thread must
    survive their cancelled futures, or every later commit (paid replies included) hangs."""
    from gadx.teacher.cache import Cache

    cache = Cache(str(tmp_path / "c.sqlite"))
    try:
        futs = [cache.ledger("k", i, "send") for i in range(2000)]
        for f in futs:
            f.cancel()
        cache.put({"key": "k", "request": "{}", "status": "ok", "text": "paid", "attempts": 1}).result(timeout=10)
        assert cache.get("k")["text"] == "paid"
    finally:
        cache.close()
