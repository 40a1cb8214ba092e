"""mdrag: multi-domain retrieval-augmented generation with LoRA-adapted generators.

Heavy libraries (torch, transformers, sentence-transformers) are imported lazily inside the modules
that need them, so `import mdrag` and the fast tests stay fast.
"""

import os
import sys

__version__ = "0.1.0"


def _one_blas_thread() -> None:
    """numpy's (and scipy's) OpenBLAS to one thread, unless the user chose (OPENBLAS_NUM_THREADS).

    Our numpy products are small (a query against <= 5k passage embeddings, 50 reranked rows), while torch runs
    the models on its own thread pool. After a numpy product OpenBLAS's idle threads keep spinning for a while
    and take the cores from torch's next forward: on a 2-core EPYC the dense retriever's MiniLM query
    encoding ran at ~70 ms after the index search instead of ~22 ms (encode + search p50 49-57 vs 21-27 ms with
    one BLAS thread). The variable is read when OpenBLAS loads (and inherited by child processes);
    threadpoolctl limits a copy that is already loaded."""
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if "numpy" in sys.modules or "scipy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")


_one_blas_thread()
