"""Leaderboard submissions: GLUE and SuperGLUE zips, and RACE's test predictions, from finished runs.

    agora-finetune submit glue runs/ -o glue.zip          # every task's run found under runs/
    agora-finetune submit superglue runs/ --run RTE=runs/rte-sg-2 -o superglue.zip
    agora-finetune submit --check glue.zip                 # check any zip, ours or not

```python
from agora import submission
submission.build("glue", runs=["runs/"], out="glue.zip")
submission.check("glue.zip")
```

Modules: :mod:`~agora.submission.spec` (what each benchmark expects, and the test split each file
is checked against), :mod:`~agora.submission.render` (writing and checking one file),
:mod:`~agora.submission.runs` (finding runs, predicting a missing test split),
:mod:`~agora.submission.build` (the zip), :mod:`~agora.submission.check` (checking any zip).
"""

from agora.submission.build import SubmissionIncomplete, SubmissionReport, build
from agora.submission.check import check, validate_zip
from agora.submission.spec import BENCHMARKS, OFFICIAL_ROWS, SubmissionError, specs_for

__all__ = ["BENCHMARKS", "OFFICIAL_ROWS", "SubmissionError", "SubmissionIncomplete", "SubmissionReport", "build",
           "check", "specs_for", "validate_zip"]
