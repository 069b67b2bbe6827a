"""The megatron-core CPU adapter: version pin, device redirection scope, RNG tracker."""
import pytest
import torch

from gadx.parallel import cpu_adapter

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the adapter is CPU-only")


def test_refuses_unpinned_megatron(monkeypatch):
    monkeypatch.setattr(cpu_adapter, "_active", False)
    monkeypatch.setattr(cpu_adapter, "megatron_version", lambda: (0, 18))
    with pytest.raises(RuntimeError, match="supports megatron-core 0.16.x only, found 0.18"):
        cpu_adapter.activate()


def test_device_mode_is_scoped():
    from gadx.parallel import init_parallel

    init_parallel()
    assert cpu_adapter.is_active()
    with cpu_adapter.cpu_device_mode():
        x = torch.zeros(3, device="cuda")
        assert x.device.type == "cpu"
        assert x.type() == "torch.cuda.FloatTensor"
        assert x.cuda() is x
    with pytest.raises((RuntimeError, AssertionError)):
        torch.zeros(3, device="cuda")
    assert torch.zeros(3).type() == "torch.FloatTensor"


def test_rng_tracker_forks_a_separate_stream():
    from megatron.core import tensor_parallel

    from gadx.parallel import init_parallel

    init_parallel()
    tensor_parallel.model_parallel_cuda_manual_seed(5)
    torch.manual_seed(0)
    plain = torch.rand(4)
    torch.manual_seed(0)
    with tensor_parallel.get_cuda_rng_tracker().fork():
        forked = torch.rand(4)
    after = torch.rand(4)
    assert not torch.equal(forked, plain)
    torch.testing.assert_close(after, plain)  # the default stream is untouched by the fork
