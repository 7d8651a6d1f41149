import os

# Tests share two cores with each other's subprocesses: one thread per process keeps
# multi-process runs from oversubscribing, and makes CPU math deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "1")
