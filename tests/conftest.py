import sys
from pathlib import Path

import pytest

# Let test modules import the shared reference-case helpers.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def local_ray():
    """One local two-CPU Ray instance shared by every test that needs actors."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()
