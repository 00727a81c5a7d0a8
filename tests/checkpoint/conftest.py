import importlib.util

# the synthetic checkpoints are written with ml_dtypes' bfloat16 and float8 types
collect_ignore_glob = [] if importlib.util.find_spec("ml_dtypes") else ["test_*.py"]
