import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=60)
# nightly: python -m pytest -m fuzz --hypothesis-profile=long (REFQUANT_FUZZ_EXAMPLES=n: n per target)
settings.register_profile("long", deadline=None,
                          max_examples=int(os.environ.get("REFQUANT_FUZZ_EXAMPLES", "5000")))
settings.load_profile("ci" if os.environ.get("CI") else "dev")
