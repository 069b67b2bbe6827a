import pytest
from tiny_hf import SPECS, build_hf


@pytest.fixture(scope="module", params=sorted(SPECS))
def hf_model(request):
    return build_hf(request.param)
