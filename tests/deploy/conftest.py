"""The deployment tests reuse the service tests' checkpoint fixture (they skip the same way without one)."""
from tests.service.conftest import checkpoint, make_server  # noqa: F401
