"""Checks of Ferry's own, loaded by scripts/schemathesis.sh (SCHEMATHESIS_HOOKS).

A 503 is the host's documented "try again" answer — a version still loading (the fuzzer's own uploads
make some), a full queue, an unreachable store — so the run's config expects it rather than counting it
as a server error (schemathesis.toml written by the script); this check holds every such 503 to the
contract: it must say when to try again.
"""

import schemathesis


@schemathesis.check
def unavailable_says_when_to_retry(ctx, response, case):
    """Every 503 carries Retry-After."""
    if response.status_code == 503 and not response.headers.get("retry-after"):
        raise AssertionError(
            f"503 without Retry-After from {case.operation.label}: {response.text[:200]}"
        )
