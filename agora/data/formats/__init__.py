"""The generic task formats (see :mod:`agora.data.formats.base` for the table): every task card names
one, and the core calls into it instead of branching on the task."""

from agora.data.cards import TaskCard
from agora.data.formats import base, choice, encoding, grouped
from agora.data.formats.base import Format, Regression, extra_features, find_mistakes, is_pair, log_likelihood
from agora.data.formats.choice import MultipleChoice
from agora.data.formats.encoding import PairTemplate, encode_pairs, pad_token_columns, softmax
from agora.data.formats.grouped import EntityCloze, Grouped

FORMATS: dict[str, Format] = {
    f.name: f for f in (Format(), Regression(), MultipleChoice(), Grouped(), EntityCloze())
}


CODE = (base, choice, encoding, grouped)
"""The modules whose source makes a format's rows and tokens: part of the Arrow cache's key."""


def format_of(card: TaskCard) -> Format:
    return FORMATS[card.format]


__all__ = ["CODE", "FORMATS", "EntityCloze", "Format", "Grouped", "MultipleChoice", "PairTemplate", "Regression",
           "encode_pairs", "extra_features", "find_mistakes", "format_of", "log_likelihood", "is_pair", "pad_token_columns", "softmax"]
