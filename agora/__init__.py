"""agora-finetune: the Agora fine-tuning algorithm for BORT and any small Hugging Face encoder."""

__version__ = "0.1.0"

from agora.errors import AgoraError, DataError, ModelError, RecipeError, TaskError  # noqa: E402


def __getattr__(name):  # lazy: `import agora` stays fast and torch-free
    if name in ("AgoraTrainer", "RunResult"):
        from agora import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'agora' has no attribute {name!r}")


__all__ = ["AgoraTrainer", "RunResult", "AgoraError", "DataError", "ModelError", "RecipeError", "TaskError"]
