"""Repository-wide collection rules: the torch adapter's doctests need torch."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["refquant_torch/*"]
