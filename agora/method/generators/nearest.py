"""``nearest``: the unlabelled pool's rows nearest to each source (a student's mistake, or any row).

Method card
-----------
What (our choice, after the retrieval side of AugSBERT, Thakur et al. 2021, and Agora's claim that
teacher labels spent near the student's mistakes are worth more than labels spent on random
inputs): for each source, the ``n`` rows of the pool (``data.unlabelled``) with the highest cosine
similarity of sentence embeddings, each pool row returned at most once per fit (a row already
returned is skipped; ties go to the earlier pool row). The rows are real inputs of the task, not
edits of the source, so they stay on the data's manifold; the teacher labels them afterwards.

Embeddings: an encoder's last hidden states, mean-pooled over the tokens and L2-normalised (the
sentence-transformers recipe); a pair is embedded as the pair (``tokenizer(a, b)``), a multiple
choice input as its context and its options. The encoder is ``generator_settings.model`` (a hub id,
a path or ``pkg:<package>/<folder>``), by default the teacher's own encoder. The embeddings of every
row of the pool's file are computed once per file and encoder and cached as
``<cache>/embeddings/<digest>.npy`` (runs with other D and E read the same file: one cache), with its sha256
beside it (``.npy.sha256``), checked on every read: a damaged file is set aside and the pool embedded again.

One teacher pass (our choice): where the encoder is the teacher's own (the default) and the task is not
multiple choice, the teacher's model embeds the pool, and the teacher's outputs for every pool row come
from the same forward (the head is one more small layer): they go into the teacher's cache as its
scoring would put them, so the pool's later labelling (``pool_rows``, ``select.by: disagreement``) is
cache hits. A row longer than ``max_length`` tokens, or cut at the teacher's own ``max_length``, is
embedded by the encoder apart (its tokens differ); its teacher output is kept all the same.

Search: exact, a matrix product of normalised embeddings with torch below ``faiss_from`` rows
(100,000); above it, faiss's exact inner-product index (``pip install faiss-cpu``) where faiss is
installed, else the same matrix product in chunks.

Settings (``agora.generator_settings``): ``model``, ``batch_size`` (64), ``max_length`` (128),
``device`` (cpu), ``faiss_from`` (100000).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from agora.data.integrity import damaged, put_aside
from agora.files import atomic_write
from agora.method.generators.base import BatchGenerator, GenerationResult
from agora.method.generators.common import Segments


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings of inputs (text segments) from a HF encoder."""

    def __init__(self, model: str, batch_size: int = 64, max_length: int = 128, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        from agora.fit.model import resolve_location

        self.location = resolve_location(model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.location)
        self.model = AutoModel.from_pretrained(self.location).to(device).eval().requires_grad_(False)
        self.batch_size, self.max_length, self.device = batch_size, max_length, device

    def identity(self) -> str:
        from agora.method.teacher import teacher_identity

        return f"{teacher_identity(self.location)}|max_length:{self.max_length}|mean-pooled"

    def __call__(self, inputs: list[Segments]) -> np.ndarray:
        import torch

        order = sorted(range(len(inputs)), key=lambda i: -sum(map(len, inputs[i])))  # similar lengths together
        out = np.zeros((len(inputs), self.model.config.hidden_size), np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = [inputs[i] for i in order[start : start + self.batch_size]]
                first = [seg[0] for seg in batch]
                second = [" ".join(s for s in seg[1:] if s) for seg in batch] if len(batch[0]) > 1 else None
                enc = self.tokenizer(first, second, truncation=True, max_length=self.max_length, padding=True,
                                     return_tensors="pt").to(self.device)
                vectors = mean_pooled(self.model(**enc).last_hidden_state, enc["attention_mask"])
                out[order[start : start + self.batch_size]] = vectors.cpu().numpy()
        return out

    def shares(self, teacher) -> bool:
        """Whether ``teacher`` (:class:`agora.method.teacher.Teacher`) is this encoder with its head, on inputs
        of one or two segments: then :func:`teacher_pass` embeds with it."""
        from agora.method.teacher import Teacher, teacher_identity

        return (isinstance(teacher, Teacher) and teacher.task_type != "multiple_choice"
                and teacher.teacher_id == teacher_identity(self.location))


def mean_pooled(hidden, mask):
    """``[B, L, H]`` hidden states averaged over the tokens where ``mask`` (``[B, L]``) is 1, L2-normalised."""
    import torch

    mask = mask.unsqueeze(-1).float()
    mean = (hidden.float() * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(mean, dim=-1)


def teacher_pass(teacher, inputs: list[Segments], max_length: int) -> np.ndarray:
    """One pass of ``teacher`` over ``inputs`` (each distinct input once): their embeddings, as :class:`Embedder`
    makes them from the teacher's encoder, and the teacher's outputs from the same forward, kept in its cache
    (:meth:`~agora.method.teacher.Teacher.keep`). A row of more than ``max_length`` tokens, or cut at the teacher's
    ``max_length``, is NaN: the embedder's tokens differ from the teacher's there."""
    from agora.fit.first_token import full_last_layer

    distinct = list(dict.fromkeys(inputs))
    width = len(teacher.teacher_labels)

    def run(batch: list[list[dict]]) -> np.ndarray:
        enc = teacher.tokenizer.pad([row[0] for row in batch], return_tensors="pt").to(teacher.device)
        with full_last_layer(teacher.model):  # the embeddings read every position of the last layer
            out = teacher.model(**enc, output_hidden_states=True)
        vectors = mean_pooled(out.hidden_states[-1], enc["attention_mask"])
        tokens = enc["attention_mask"].sum(1)
        vectors[(tokens > max_length) | (tokens >= teacher.max_length)] = float("nan")
        return np.concatenate([teacher.outputs(out.logits), vectors.cpu().numpy()], 1)

    both = teacher.forward(distinct, run)
    teacher.keep(distinct, both[:, :width])
    where = {x: i for i, x in enumerate(distinct)}
    return both[[where[x] for x in inputs], width:]


class NearestGenerator(BatchGenerator):
    """The ``nearest`` generator (see the module docstring): ``prepare(pool, ...)``, then ``generate``."""

    needs_pool = True
    name = "nearest"

    def __init__(self, model: str | None = None, batch_size: int = 64, max_length: int = 128, device: str = "cpu",
                 faiss_from: int = 100_000):
        self.model, self.batch_size, self.max_length, self.device = model, batch_size, max_length, device
        self.faiss_from = faiss_from
        self.pool = None
        self.embedder: Embedder | None = None
        self.vectors: np.ndarray | None = None
        self.used = np.zeros(0, bool)
        self._index = None

    def prepare(self, pool, default_model: str | None = None, cache_dir: str | Path | None = None,
                teacher=None) -> None:
        """Embed the pool once (or load its cached embeddings) with ``model`` (default ``default_model``,
        the teacher); ``cache_dir`` holds ``embeddings/<digest>.npy``. Where the encoder is ``teacher``'s,
        its pass gives the teacher's outputs too (:func:`teacher_pass`)."""
        from agora.errors import RecipeError

        if pool is None:
            raise RecipeError("agora.generator: nearest draws from unlabelled rows: set data.unlabelled "
                              "(a file in the task's format, or 'train')")
        model = self.model or default_model
        if model is None:
            raise RecipeError("agora.generator_settings.model: nearest needs an encoder to embed with "
                              "(default: the teacher's; set teacher.path or generator_settings.model)")
        self.pool = pool
        self.embedder = Embedder(model, self.batch_size, self.max_length, self.device)
        self.vectors = self._cached(pool, cache_dir, teacher)
        self.used = np.zeros(len(pool), bool)
        self._index = None

    def _cached(self, pool, cache_dir, teacher=None) -> np.ndarray:
        """The pool rows' embeddings: those of its whole file, cached, then its rows selected."""
        key = hashlib.sha256(f"{self.embedder.identity()}|{pool.file_identity()}".encode()).hexdigest()[:24]
        path = Path(cache_dir) / "embeddings" / f"{key}.npy" if cache_dir is not None else None
        vectors = self._read(path, len(pool.read_inputs)) if path is not None and path.is_file() else None
        if vectors is None:
            vectors = self._embed(pool.read_inputs, teacher)
            if path is not None:
                atomic_write(path, lambda handle: np.save(handle, vectors))
                damaged(path)  # its checksum, checked on every read
        return np.ascontiguousarray(vectors[pool.positions])

    def _embed(self, inputs: list[Segments], teacher) -> np.ndarray:
        """Embeddings of ``inputs``: from the teacher's one pass where it is the encoder, the rows that pass
        cannot embed exactly (too long) by the encoder apart."""
        if not self.embedder.shares(teacher):
            return self.embedder(inputs)
        vectors = teacher_pass(teacher, inputs, self.max_length)
        rest = np.flatnonzero(np.isnan(vectors).any(1))
        if len(rest):
            vectors[rest] = self.embedder([inputs[i] for i in rest])
        return vectors

    @staticmethod
    def _read(path: Path, rows: int) -> np.ndarray | None:
        """The cached embeddings, checked (sha256, shape, finite); a damaged file is set aside (None: embed again)."""
        why = damaged(path)
        if why is None:
            try:
                vectors = np.load(path, allow_pickle=False)
                if vectors.ndim != 2 or vectors.shape[0] != rows or not np.isfinite(vectors).all():
                    why = f"its shape {vectors.shape} or values do not fit {rows} finite embeddings"
            except (OSError, ValueError, EOFError) as err:
                why = f"it cannot be read ({err})"
        if why is None:
            return vectors
        put_aside(path, why, "generator nearest (the pool's embeddings)")
        return None

    def neighbours(self, queries: np.ndarray, k: int) -> np.ndarray:
        """``[m, k]`` pool positions of the ``k`` most similar rows to each query (exact; ties: lower position)."""
        k = min(k, len(self.vectors))
        if len(self.vectors) >= self.faiss_from and self._faiss() is not None:
            _, found = self._faiss().search(np.ascontiguousarray(queries, np.float32), k)
            return found
        import torch

        out = []
        v = torch.from_numpy(self.vectors)
        for start in range(0, len(queries), 256):
            sims = torch.from_numpy(queries[start : start + 256]) @ v.T
            # stable descending order: equal similarities keep the pool's order
            order = torch.sort(-sims, dim=1, stable=True).indices[:, :k]
            out.append(order.numpy())
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)

    def _faiss(self):
        if self._index is None:
            try:
                import faiss
            except ImportError:
                return None
            self._index = faiss.IndexFlatIP(self.vectors.shape[1])
            self._index.add(np.ascontiguousarray(self.vectors, np.float32))
        return self._index

    def generate(self, examples, n: int, seed: int, keys=None) -> GenerationResult:
        """The ``n`` nearest pool rows not yet used, for each example in order; they are used from now on."""
        if self.vectors is None:
            raise RuntimeError("NearestGenerator.generate before prepare(pool): the pool is not embedded")
        result = GenerationResult([], [], {"used": 0})
        if not len(examples) or n <= 0:
            return result
        queries = self.embedder([tuple(e) for e in examples])
        # enough candidates that every example finds n unused rows, whatever the earlier ones took
        k = n * (len(examples) + 1) + int(self.used.sum())
        for pos, found in enumerate(self.neighbours(queries, k)):
            taken = 0
            for j in found:
                if taken == n:
                    break
                if self.used[j]:
                    result.rejected["used"] += 1
                    continue
                self.used[j] = True
                result.variants.append(tuple(self.pool.inputs[int(j)]))
                result.sources.append(pos)
                taken += 1
        return result

    def state_dict(self) -> dict:
        """The pool rows already returned in this fit (a resumed fit does not return them again)."""
        return {"used": np.flatnonzero(self.used).tolist()}

    def load_state_dict(self, state: dict) -> None:
        if self.vectors is not None:
            self.used = np.zeros(len(self.vectors), bool)
            self.used[np.asarray(state.get("used", []), dtype=np.int64)] = True
