"""The packaged encoders, through sentence-transformers, held by an `Encoders` object the engine owns.

SPLADE: the packaged 4.4M-parameter BertForMaskedLM; vector = max over tokens of log(1+relu(logits))
(SpladePooling "max"). MiniLM: all-MiniLM-L6-v2 with mean pooling (sentence-transformers layout).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from mdrag.config import MINILM, SPLADE
from mdrag.hashing import folder_fingerprint

# Encoding a batch materialises (batch, tokens, 30522) logits: 4 x 256 tokens is 125 MB, and batch 4
# was the fastest size on this 2-core CPU (37 ms/passage vs 75 ms at batch 32).
SPLADE_DOC_BATCH = 4
MAX_SEQ_LEN = 256


def load_splade(path: Path | None = None):
    """A new SPLADE encoder from `path` (default: the packaged one)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sentence_transformer.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    folder = str(path or SPLADE.path())
    return SparseEncoder(
        modules=[Transformer(folder, transformer_task="fill-mask", max_seq_length=MAX_SEQ_LEN),
                 SpladePooling(pooling_strategy="max")],
        device="cpu",
    )


def load_minilm(path: Path | None = None):
    """The dense encoder in `path` (default: the packaged MiniLM). A folder holding a LoRA adapter
    (adapted retriever) is loaded onto its base, after checking the adapter fits that base."""
    from sentence_transformers import SentenceTransformer

    folder = Path(path or MINILM.path())
    # float32 whatever the checkpoint holds (adapted encoders are saved in fp16 to stay small);
    # use_safetensors: a folder with pickle weights only is refused, never unpickled
    kwargs = {"dtype": "float32", "use_safetensors": True}
    if not (folder / "adapter_config.json").exists():
        return SentenceTransformer(str(folder), device="cpu", model_kwargs=kwargs)
    from mdrag.generation.adapters import AdapterError, check_adapter

    base_dir = _lora_base(folder)
    model = SentenceTransformer(str(base_dir), device="cpu", model_kwargs=kwargs)
    check_adapter(folder, model[0].auto_model, folder_fingerprint(base_dir))  # safetensors only, shapes, base
    try:
        model.load_adapter(str(folder), use_safetensors=True)
    except Exception as err:
        raise AdapterError(f"Loading the adapted encoder {folder} failed: {err}") from err
    from peft.tuners.lora import LoraLayer

    for module in model.modules():  # W + scaling * B A folded in once: encoding costs what the base costs
        if isinstance(module, LoraLayer):
            module.merge()
    return model.float().eval()


def _lora_base(folder: Path) -> Path:
    """The encoder a LoRA in `folder` was trained on: the packaged MiniLM (by fingerprint), or the local
    base its card names (never in a shipped checkpoint)."""
    from mdrag.generation.adapters import AdapterError, read_card

    card = read_card(folder)
    if card.get("base_path"):
        return Path(card["base_path"])
    if card.get("base_fingerprint") not in (None, folder_fingerprint(MINILM.path())):
        raise AdapterError(f"The adapted encoder {folder} was trained on another base ({card.get('base')}, "
                           f"{card['base_fingerprint']}), not the packaged MiniLM. Retrain it on this one.")
    return MINILM.path()


def _to_scipy(tensor) -> sp.csr_matrix:
    coo = tensor.coalesce().cpu()
    rows, cols = coo.indices().numpy()
    return sp.csr_matrix((coo.values().float().numpy(), (rows, cols)), shape=tuple(coo.shape))


class Encoders:
    """The encoders one owner (an engine, a benchmark, a test) has loaded, each once per (kind, folder).

    Not a module cache: which retrievers and rerankers share an encoder is visible from who holds this object
    (the engine hands its one to every retriever and reranker it builds). Loading happens under a lock, so two
    sessions asking at once load an encoder once; encoding itself needs no lock (sentence-transformers models
    are read-only at inference)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    def _get(self, kind: str, path: Path | None, load):
        key = (kind, str(path) if path else "")
        with self._lock:
            if key not in self._models:
                self._models[key] = load(path)
            return self._models[key]

    def loaded(self) -> list[tuple[str, str]]:
        """(kind, folder) of every encoder loaded so far ('' = the packaged one)."""
        with self._lock:
            return list(self._models)

    def splade(self, path: Path | None = None):
        return self._get("splade", path, load_splade)

    def minilm(self, path: Path | None = None):
        return self._get("minilm", path, load_minilm)

    def splade_queries(self, texts: list[str], path: Path | None = None) -> sp.csr_matrix:
        return _to_scipy(self.splade(path).encode_query(texts, convert_to_sparse_tensor=True))  # (n, vocab)

    def splade_documents(self, texts: list[str], path: Path | None = None,
                         desc: str = "SPLADE index") -> sp.csr_matrix:
        enc = self.splade(path)
        parts, step = [], 256
        with tqdm(total=len(texts), desc=desc, unit="passage") as bar:
            for start in range(0, len(texts), step):
                chunk = texts[start : start + step]
                parts.append(_to_scipy(enc.encode_document(chunk, batch_size=SPLADE_DOC_BATCH,
                                                           convert_to_sparse_tensor=True, show_progress_bar=False)))
                bar.update(len(chunk))
        return sp.vstack(parts).tocsr()  # (n, vocab)

    def minilm_embed(self, texts: list[str], path: Path | None = None, progress: bool = False) -> np.ndarray:
        emb = self.minilm(path).encode(texts, batch_size=32, normalize_embeddings=True,
                                       show_progress_bar=progress, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)  # (n, 384)
