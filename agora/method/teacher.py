"""The oracle S (the teacher) and its persistent cache of probabilities.

Method card
-----------
What: Agora labels generated inputs with an already trained model S of "loose accuracy"
(de Wynter 2020, arXiv 2010.07990). The paper appends S's hard labels; we keep S's full
probability vector so rows can also train on soft targets (Hinton et al. 2015).

- ``Teacher`` loads S with its own tokenizer, frozen, in eval mode, and scores inputs under
  ``torch.inference_mode()`` in length-sorted batches. Classification: probabilities with
  columns in the task's label order, matched by label NAME (case-insensitive) with an optional
  ``label_map`` (teacher label -> task label; several teacher labels mapped to one task label
  are summed, e.g. MNLI neutral + contradiction -> RTE not_entailment). Regression: the raw
  score, shape ``[n, 1]``. Multiple choice: input ``(context, question, opt_1..opt_k)`` is
  encoded as k pairs ``(context, question + " " + option)``; output is the softmax over options.
- ``TeacherCache`` (our choice): each distinct input is scored once ever. Raw teacher outputs
  are stored in Arrow IPC files ``<cache_dir>/<sha256(identity)[:16]>/part-*.arrow``
  (columns ``key`` string, ``probs`` list<float32>), keyed by
  ``sha256(json.dumps([identity, segments]))``. New entries go to a new part file, named uniquely
  per writer and written atomically (temporary file in the same directory, then ``os.replace``).
  Concurrent fits share the cache safely: a process scores its misses holding the directory's lock,
  after loading what others wrote, so an input is scored once even when fits label at the same
  time (:mod:`agora.method.teacher_cache`).

The cache identity covers the teacher's weights (``Teacher.teacher_id``: resolved path, sha256
of ``config.json``, size and mtime of the weight files; or hub id + commit) and everything
else that changes its raw output (task type, ``max_length``). Label reordering is applied after
the cache, so one cache serves any label order.

The teacher is a plain object, never an ``nn.Module`` attribute of the student: DDP never
wraps it and its weights never enter the student's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agora.errors import ModelError
from agora.method.teacher_cache import TeacherCache, bad_row, cache_key  # noqa: F401  (cache_key re-exported)

Segments = tuple[str, ...]
TASK_TYPES = ("classification", "regression", "multiple_choice")


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model was named by a local path that does not exist."""


def check_model_path(name: str, what: str = "model") -> None:
    """Raise ``ModelNotFoundError`` (a FileNotFoundError) if ``name`` looks like a missing local path.

    A name is a path when it starts with ``/ . ~``, has more than one separator, or its first
    component exists locally (``runs/teacher``); otherwise ``org/model`` is taken as a hub id.
    """
    name = str(name)
    if os.path.exists(os.path.expanduser(name)):
        return
    first = name.split(os.sep)[0]
    if name.startswith(("/", ".", "~")) or name.count(os.sep) > 1 or (os.sep in name and os.path.isdir(first)):
        raise ModelNotFoundError(f"{what}: no such file or directory: {name!r} (a local path was given)")


def check_teacher_dir(path: str) -> None:
    """ModelError for the two local teachers that cannot load: a run dir named instead of its export
    (``<run>/best``), and a weights file cut short (a copy or a save that did not finish); checked now
    from the files' headers, not after the student has trained an epoch."""
    root = Path(path)
    if not root.is_dir():
        return
    if not (root / "config.json").exists() and (root / "best" / "config.json").is_file():
        raise ModelError(f"teacher.path {path!r} is a run dir, not a model: its exported model is {root / 'best'}; "
                         f"write teacher.path: {root / 'best'}")
    from safetensors import safe_open

    for weights in sorted(root.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):
                pass
        except Exception as err:  # safetensors' own error type: a truncated or overwritten file
            raise ModelError(f"teacher.path {path!r}: the teacher's weights file {weights} is incomplete or corrupt "
                             f"({type(err).__name__}: {err}). It is the teacher that is broken, not the student: "
                             "export or copy the teacher again (save_pretrained)") from None


def teacher_identity(path_or_id: str) -> str:
    """Identity of the teacher weights: local path + config hash + weight files, or hub id + commit."""
    from transformers.utils import cached_file

    local = os.path.isdir(os.path.expanduser(path_or_id))
    root = Path(os.path.expanduser(path_or_id)).resolve() if local else None
    config = root / "config.json" if local else Path(cached_file(path_or_id, "config.json"))
    config_sha = hashlib.sha256(config.read_bytes()).hexdigest()
    if not local:
        # Hub cache layout: .../snapshots/<commit>/config.json
        return f"hub:{path_or_id}@{config.parent.name}|config:{config_sha}"
    weights = sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    stamps = ",".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)
    return f"{root}|config:{config_sha}|weights:{stamps}"


class Teacher:
    """A frozen, cached teacher that returns probabilities in the task's label order.

    Args:
        path_or_id: local directory (model + tokenizer saved with ``save_pretrained``), hub id, or
            ``pkg:<package>/<folder>`` (a folder inside an installed Python package).
        task_labels: the task's label names in order (classification); None keeps the
            teacher's own order.
        task_type: "classification", "regression" or "multiple_choice".
        cache_dir: where the ``TeacherCache`` lives; None caches in memory only.
        batch_size, max_length, device: how the teacher is run.
        label_map: optional ``{teacher label: task label}`` for teachers whose label names
            differ from the task's.
        lazy: load the tokenizer and weights on the first cache miss, not now (the config, the
            label check and the cache are always set up at once).

    Attributes:
        forward_calls: number of inputs passed through the model so far.
        teacher_id: identity of the weights; ``cache`` the ``TeacherCache``.

    Raises:
        ModelNotFoundError (a FileNotFoundError): ``path_or_id`` looks like a missing local path.
        ModelError (a ValueError): the teacher cannot be loaded, or its labels cannot be
            matched to ``task_labels``.

    Example::

        teacher = Teacher("runs/rte-teacher", ["entailment", "not_entailment"], cache_dir="cache")
        teacher.score([("A man sleeps.", "A person rests.")])  # array([[0.9, 0.1]], dtype=float32)
        teacher.forward_calls                                  # 1; scoring it again adds nothing
    """

    def __init__(
        self,
        path_or_id: str,
        task_labels: Sequence[str] | None = None,
        task_type: str = "classification",
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        device: str = "cpu",
        label_map: dict[str, str] | None = None,
        lazy: bool = False,
    ):
        from transformers import AutoConfig  # imported here: `import agora.method.teacher` stays light

        if task_type not in TASK_TYPES:
            raise ModelError(f"teacher task_type must be one of {TASK_TYPES}, got {task_type!r}")
        from agora.fit.model import resolve_location

        path_or_id = os.path.expanduser(resolve_location(str(path_or_id), "teacher.path"))
        check_model_path(path_or_id, "teacher")
        check_teacher_dir(path_or_id)
        self.path = path_or_id
        self.task_type = task_type
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.forward_calls = 0
        self.model = self.tokenizer = None
        try:
            self._config = AutoConfig.from_pretrained(path_or_id)
        except OSError as err:
            raise self._load_error(err) from err
        from agora.fit.model import check_max_length

        check_max_length(max_length, self._config, "teacher.max_length", self.path)
        self.teacher_labels = [str(self._config.id2label[i]) for i in range(self._config.num_labels)]
        self.columns = self._label_matrix(task_labels, label_map)  # fail fast, before loading weights
        self.teacher_id = teacher_identity(path_or_id)
        identity = json.dumps({"teacher": self.teacher_id, "task_type": task_type, "max_length": max_length})
        self.cache = TeacherCache(cache_dir, identity, probabilities=task_type != "regression")
        if not lazy:
            self.load()

    def load(self) -> None:
        """Load the tokenizer and the frozen weights (``lazy=True`` defers this to the first cache miss)."""
        if self.model is not None:
            return
        from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification, AutoTokenizer

        auto = AutoModelForMultipleChoice if self.task_type == "multiple_choice" else AutoModelForSequenceClassification
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            model = auto.from_pretrained(self.path, config=self._config)
        except Exception as err:  # OSError, and a weights file torch or safetensors cannot read
            raise self._load_error(err) from err
        from agora.fit.first_token import first_token_last_layer

        first_token_last_layer(model)  # exact: only the token the head reads is computed in the last layer
        self.model = model.to(self.device).eval().requires_grad_(False)

    def attach_cache(self, cache_dir: str | os.PathLike | None) -> None:
        """Persist the cache under ``cache_dir`` from now on (entries already in memory are kept in
        memory). Under DDP only rank 0 attaches a directory: the one writer."""
        old = self.cache
        self.cache = TeacherCache(cache_dir, old.teacher_id, probabilities=old.probabilities)
        self.cache.hits, self.cache.misses = old.hits, old.misses
        for key, row in old._rows.items():
            self.cache._rows.setdefault(key, row)

    def _load_error(self, err: Exception) -> ModelError:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        hint = ("Give a local directory saved with save_pretrained (model + tokenizer), or make sure the Hugging Face "
                "Hub is reachable." if isinstance(err, OSError) else "Its files look incomplete or corrupt: it is the "
                "teacher that is broken, not the student; export or copy it again (save_pretrained).")
        return ModelError(f"cannot load the teacher (teacher.path {self.path!r}): {type(err).__name__}: {first}. {hint}")

    # ------------------------------------------------------------------ labels

    def _label_matrix(self, task_labels, label_map) -> np.ndarray | None:
        """``[teacher labels, task labels]`` 0/1 matrix mapping raw columns to task columns."""
        if self.task_type == "regression":
            if len(self.teacher_labels) != 1:
                raise ModelError(
                    f"teacher {self.path!r} has {len(self.teacher_labels)} outputs {self.teacher_labels}; "
                    "a regression teacher needs exactly 1"
                )
            return None
        if self.task_type == "multiple_choice" or task_labels is None:
            return None
        task = [str(t) for t in task_labels]
        mapped = {str(k).casefold(): str(v) for k, v in (label_map or {}).items()}
        names = [mapped.get(name.casefold(), name).casefold() for name in self.teacher_labels]
        folded = [t.casefold() for t in task]
        missing = [t for t in task if t.casefold() not in names]
        extra = [self.teacher_labels[i] for i, n in enumerate(names) if n not in folded]
        if missing or extra:  # generic LABEL_i names match only a task whose labels are LABEL_i too
            generic = all(re.fullmatch(r"label_\d+", n) for n in names)
            raise ModelError(
                f"teacher {self.path!r} has labels {self.teacher_labels} but the task's labels are {task}"
                + (f"; no teacher label for {missing}" if missing else "")
                + (f"; teacher labels {extra} match no task label" if extra else "")
                + ("; the teacher's names are generic LABEL_i" if generic else "")
                + ". Labels are matched by name, case-insensitively. Fix: fine-tune the teacher on this task "
                "with label names in its config (id2label), or set `teacher.label_map` "
                "(teacher label -> task label)."
            )
        matrix = np.zeros((len(names), len(task)), dtype=np.float32)
        for i, n in enumerate(names):
            matrix[i, folded.index(n)] = 1.0
        return matrix

    # ------------------------------------------------------------------ scoring

    @property
    def num_outputs(self) -> int:
        """Columns of ``score``'s output for classification and regression (multiple choice: per call)."""
        return self.columns.shape[1] if self.columns is not None else len(self.teacher_labels)

    def score(self, inputs: Sequence[Sequence[str]]) -> np.ndarray:
        """Teacher outputs for each input, in input order, through the cache.

        Returns:
            float32 ``[n, num_labels]`` probabilities (task order); ``[n, 1]`` raw scores for
            regression; ``[n, k]`` option probabilities for multiple choice.
        """
        inputs = [tuple(str(s) for s in seg) for seg in inputs]
        if self.task_type == "multiple_choice" and len({len(seg) for seg in inputs}) > 1:
            raise ValueError("Teacher.score: multiple-choice inputs in one call must have the same number of options")
        if not inputs:
            return np.zeros((0, 0 if self.task_type == "multiple_choice" else self.num_outputs), dtype=np.float32)
        raw, miss = self.cache.lookup(inputs)
        if miss.any():
            missed = list(dict.fromkeys(seg for seg, m in zip(inputs, miss) if m))  # distinct, in order
            with self.cache.exclusive():  # a concurrent fit may be scoring the same inputs: wait, then read them
                todo = [seg for seg, m in zip(missed, self.cache.lookup(missed, count=False)[1]) if m]
                if todo:
                    self.cache.add(todo, self._checked(todo, self.forward(todo)))
            scored_here = set(todo)
            late = sum(1 for seg, m in zip(inputs, miss) if m and seg not in scored_here)  # scored by another process
            self.cache.hits, self.cache.misses = self.cache.hits + late, self.cache.misses - late
            raw = self.cache.lookup(inputs, count=False)[0]
        return raw @ self.columns if self.columns is not None else raw

    def _checked(self, inputs: list[Segments], outputs: np.ndarray) -> np.ndarray:
        """``outputs``, refused (ModelError naming the teacher and the input) where a row is not finite or, but
        for regression, not a probability vector: a broken teacher never enters the cache or the loss."""
        found = bad_row(outputs, self.task_type != "regression") if len(outputs) else None
        if found is not None:
            raise ModelError(f"teacher {self.path!r} gave an output that is {found[1]} for the input "
                             f"{list(inputs[found[0]])}: its weights are likely damaged (NaN or inf); check the "
                             "teacher's files, or fine-tune it again")
        return outputs

    def forward(self, inputs: list[Segments], run=None) -> np.ndarray:
        """Run the model on distinct inputs, past the cache; rows in input order. Inputs are tokenized once,
        sorted by token length and cut into batches padded to their longest row (length-bucketed). ``run``: a
        batch of encoded inputs -> one row each (default :meth:`_run`, the outputs; the pool's embedding pass
        adds the embeddings, :func:`agora.method.generators.nearest.teacher_pass`)."""
        import torch

        run = run or self._run
        self.load()
        out: list[np.ndarray | None] = [None] * len(inputs)
        for arity in sorted({len(seg) for seg in inputs}):
            positions = [i for i, seg in enumerate(inputs) if len(seg) == arity]
            features = self._encode([inputs[i] for i in positions])
            lengths = [max(len(f["input_ids"]) for f in row) for row in features]
            order = sorted(range(len(positions)), key=lambda j: -lengths[j])
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    rows = run([features[j] for j in batch])
                    for j, row in zip(batch, rows):
                        out[positions[j]] = row
                    self.forward_calls += len(batch)
        return np.stack(out).astype(np.float32)

    def _encode(self, inputs: list[Segments]) -> list[list[dict]]:
        """Token ids of every input, unpadded: one encoding per input (one per option for multiple choice)."""
        kw = dict(truncation=True, max_length=self.max_length)
        if self.task_type == "multiple_choice":
            k = len(inputs[0]) - 2
            if k < 1:
                raise ValueError("a multiple-choice input is (context, question, option_1, ..., option_k)")
            firsts = [seg[0] for seg in inputs for _ in range(k)]
            seconds = [f"{seg[1]} {opt}".strip() for seg in inputs for opt in seg[2:]]
            enc = self.tokenizer(firsts, seconds, **kw)
        else:
            if len(inputs[0]) > 2:
                raise ValueError(f"a {self.task_type} input has 1 or 2 segments, got {len(inputs[0])}")
            k = 1
            texts = [seg[0] for seg in inputs]
            enc = self.tokenizer(texts, [seg[1] for seg in inputs] if len(inputs[0]) == 2 else None, **kw)
        flat = [{name: enc[name][i] for name in enc} for i in range(len(enc["input_ids"]))]
        return [flat[i * k : (i + 1) * k] for i in range(len(inputs))]

    def _run(self, batch: list[list[dict]]) -> np.ndarray:
        """Teacher outputs of one batch of encoded inputs, padded to its longest row."""
        k = len(batch[0])
        enc = self.tokenizer.pad([f for row in batch for f in row], return_tensors="pt")
        if self.task_type == "multiple_choice":
            enc = {name: t.view(len(batch), k, -1) for name, t in enc.items()}
        return self.outputs(self.model(**{name: t.to(self.device) for name, t in enc.items()}).logits)

    def outputs(self, logits) -> np.ndarray:
        """What the cache keeps of a batch's logits: probabilities (raw scores for regression)."""
        logits = logits.float()
        return (logits if self.task_type == "regression" else logits.softmax(-1)).cpu().numpy()

    def keep(self, inputs: list[Segments], outputs: np.ndarray) -> int:
        """Store outputs computed outside :meth:`score` (the pool's embedding pass) in the cache, checked as
        :meth:`score` checks its own; returns how many entries were new."""
        with self.cache.exclusive():
            return self.cache.add(inputs, self._checked(inputs, outputs))


def teacher_task_type(card) -> str:
    return {"regression": "regression", "multiple_choice": "multiple_choice"}.get(card.format, "classification")


def build_teacher(cfg, card) -> Teacher:
    """The teacher of a recipe (``teacher:``), checked now (path, label names) and loaded on its first
    cache miss; its cache stays in memory until :func:`attach_teacher`. Raises ModelNotFoundError, ModelError."""
    tcfg = cfg.teacher
    labels = card.labels if teacher_task_type(card) == "classification" else None
    return Teacher(tcfg.path, labels, teacher_task_type(card), cache_dir=None, batch_size=tcfg.batch_size,
                   max_length=tcfg.max_length, device="cpu", label_map=tcfg.label_map, lazy=True)


def attach_teacher(teacher: Teacher, cfg, device: str | None = None) -> Teacher:
    """Persist the teacher's cache (``teacher.cache_dir``, default ``<data cache>/teacher``, shared by
    every fit and round) and place it: ``teacher.device``, or with ``auto`` the given device (the
    student's), else CUDA when there is one. Under DDP only rank 0 does this: the one writer."""
    from agora.paths import cache_dir

    tcfg = cfg.teacher
    teacher.attach_cache(tcfg.cache_dir or cache_dir(cfg.data.cache_dir) / "teacher")
    if tcfg.device != "auto":
        teacher.device = tcfg.device
    elif device is not None:
        teacher.device = device
    else:
        import torch

        teacher.device = "cuda" if torch.cuda.is_available() else "cpu"
    return teacher
