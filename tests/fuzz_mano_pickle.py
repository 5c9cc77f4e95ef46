"""Long fuzzing run of the MANO pickle reader (not a unit test; the tests run a short one).

    python tests/fuzz_mano_pickle.py --seconds 600 [--corpus DIR]

With atheris installed (``pip install atheris`` in a venv of your own) it runs libFuzzer's
coverage-guided search over :func:`core.model.mano_pickle.parse_mano_pickle`, seeded with
the valid and crafted pickles of ``tests/test_mano_pickle.py``; without it, the seeded
mutation fuzzer of those tests for the given time. Any exception other than ModelFileError,
any crash, hang (10 s) or memory use over 2 GB is a finding; the run prints the number of
inputs and the time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--corpus", type=Path, default=None, help="atheris corpus folder (kept)")
    parser.add_argument("--plain", action="store_true", help="the mutation fuzzer even if atheris is there")
    args = parser.parse_args()
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is None or args.plain:
        from tests.test_mano_pickle import run_fuzz

        start, total, seed = time.monotonic(), 0, 0
        while time.monotonic() - start < args.seconds:
            run_fuzz(2000, seed=1000 + seed)
            total, seed = total + 2000, seed + 1
        print(f"mutation fuzzer: {total} inputs in {time.monotonic() - start:.0f} s, no finding")
        return 0

    import core.model
    from core.errors import ModelFileError
    from tests.test_mano_pickle import fuzz_seeds  # imports torch & co. uninstrumented

    for name in ("pickletools", "core.model.mano_pickle"):
        sys.modules.pop(name, None)
    if hasattr(core.model, "mano_pickle"):
        delattr(core.model, "mano_pickle")
    with atheris.instrument_imports(include=["pickletools", "core.model.mano_pickle"]):
        mano_pickle = importlib.import_module("core.model.mano_pickle")

    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="mano-fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(fuzz_seeds()):
        (corpus / f"seed{i:02d}").write_bytes(seed)

    def target(data: bytes) -> None:
        try:
            mano_pickle.parse_mano_pickle(data)
        except ModelFileError:
            pass

    sys.argv = [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", "-timeout=10",
                "-rss_limit_mb=2048", "-max_len=8192", "-print_final_stats=1"]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
