"""Hypothesis profiles of the fuzz suites (tests/test_fuzz_*.py).

`ci` (the default): derandomized, so every run tries the same examples, and small, so the
suites take seconds. `deep`: random and many more examples, for a long hunt:
`HYPOTHESIS_PROFILE=deep pytest tests/test_fuzz_ws.py tests/test_fuzz_http.py`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SCALE = {"ci": 1, "deep": 25}

_common = {
    "database": None,  # nothing written to .hypothesis/
    "deadline": None,  # a real server on a shared machine: timing is not the property
    # One server per test serves every example (function_scoped_fixture); examples are
    # sockets and requests, slow by hypothesis' measure.
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                              HealthCheck.data_too_large],
    "print_blob": True,
}
# ci does not shrink: a failing example of a real server shrinks slowly (minutes); it is
# printed as found, and `deep` shrinks.
settings.register_profile("ci", derandomize=True, phases=[Phase.explicit, Phase.generate],
                          **_common)  # type: ignore[arg-type]
settings.register_profile("deep", derandomize=False, **_common)  # type: ignore[arg-type]
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """`n` examples under the ci profile, SCALE times more under deep."""
    return n * SCALE.get(PROFILE, 1)
