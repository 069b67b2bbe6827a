import pytest
from tiny_models import SAMPLER, sampler_hf


@pytest.fixture(scope="module", params=sorted(SAMPLER))
def hf_model(request):
    return sampler_hf(request.param)
