"""The fast cache fuzz tier: seeded mutations of a populated cache (tests/fuzz/cache_mutator.py).
Asking for net A must give A's own result or refuse an unsafe folder or key, never B's result,
a wrong one or another exception. Replay a case with ``CacheFuzz(folder, SEED).case(index)``."""

from __future__ import annotations

import logging

from fuzz.cache_mutator import CacheFuzz

SEED = 20240611
CASES = 60


def test_a_mutated_cache_serves_only_the_right_result(tmp_path, caplog):
    fuzz = CacheFuzz(tmp_path, SEED)
    kinds: dict[str, int] = {}
    failures = []
    with caplog.at_level(logging.ERROR, logger="caffe_compat"):
        for index in range(CASES):
            outcome = fuzz.case(index)
            kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
            if outcome.kind in ("wrong", "internal"):
                failures.append(f"case {index} ({'; '.join(outcome.ops)}): {outcome.detail}")
    assert not failures, "\n\n".join(failures[:5])
    assert kinds.get("ok", 0) >= CASES // 2 and kinds.get("refused", 0) >= 1, kinds
