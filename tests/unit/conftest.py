"""The unit tier: pure functions and in-process objects (names, manifests, SQL builders, config, the lexer, the
codecs, local storage under tmp_path). No PostgreSQL server, no moto, no pgdr subprocess: a test that needs one
belongs to another tier.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgdr.redact import forget_secrets


@pytest.fixture
def no_registered_secrets() -> Iterator[None]:
    """An empty redaction registry before and after the test: what one test registers, no other one sees masked.
    Modules that register secrets ask for it with pytestmark = pytest.mark.usefixtures("no_registered_secrets")."""
    forget_secrets()
    yield
    forget_secrets()
