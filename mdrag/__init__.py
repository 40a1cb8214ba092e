"""mdrag: multi-domain retrieval-augmented generation with LoRA-adapted generators.

Heavy libraries (torch, transformers, sentence-transformers) are imported lazily inside the modules
that need them, so `import mdrag` and the fast tests stay fast.
"""

__version__ = "0.1.0"
