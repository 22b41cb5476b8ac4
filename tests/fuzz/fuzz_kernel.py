"""Coverage-guided fuzzing (atheris) of the kernel against the Python rewriter: the fuzzer's bytes choose a
rule set and the COPY lines; both paths must write the same bytes or raise the same error. The kernel must
never crash the process. Run: `make fuzz` (5 minutes), or
  python tests/fuzz/fuzz_kernel.py -max_total_time=SECONDS   (any libFuzzer flag; -runs=N for a fixed count)"""

import os
import sys

import atheris

sys.path[:0] = [os.path.join(os.path.dirname(__file__), os.pardir, "..", "plugins"), os.path.join(os.path.dirname(__file__), os.pardir)]

with atheris.instrument_imports(include=["prodclone"]):
    from kernel_cases import RULES, maskers, outcome

_WARM = {}


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    n = fdp.ConsumeIntInRange(1, 4)
    rules = tuple(RULES[fdp.ConsumeIntInRange(0, len(RULES) - 1)] for _ in range(n))
    fast, slow = maskers(rules)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    lines = body.split(b"\n")
    block = b"".join(line + b"\n" for line in lines)
    want = outcome(lambda: b"".join(slow.mask_line(line) + b"\n" for line in lines))
    got = outcome(fast.mask_block, block)
    if got != want:
        raise AssertionError(f"kernel and Python differ for rules {rules}: {got!r} != {want!r}")


if __name__ == "__main__":
    from prodclone.masking import kernel

    if not kernel.enabled():
        print(f"nothing to fuzz: {kernel.status()}")
        sys.exit(0)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
