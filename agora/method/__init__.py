"""Agora's method: the teacher and its cache, the generators G, the expansion step, distillation,
reweighting, the training set and the callback that combines them in one fit (the third stage a
run crosses; :mod:`agora.method.extension` plugs it into :func:`agora.fit.run.run_fit`)."""
