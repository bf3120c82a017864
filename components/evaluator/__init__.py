"""Evaluator: per-task metrics of the candidate and the baseline on meta-test tasks, and blessing.

TFMA evaluates example by example; the CMML protocols score *tasks* (a user's query ratings, a
scenario user's ranking of all candidate items), so this component computes the task metrics
itself (``cmml.models.evaluation``) on TaskGen's fixed meta-test episodes, for both Trainer
outputs (their ``Format-Ids`` models), and blesses the candidate only if it beats the baseline on
the primary metric (MAE for users, Recall@20 for scenarios) by ``min_improvement`` and meets every
absolute threshold.

Outputs: ``evaluation`` (``metrics.json``, ``report.md``) and a standard ``ModelBlessing`` whose
``blessed`` property the stock Pusher reads.

Modules: ``component`` (the component, its spec and the ``EvaluationReport`` artifact),
``executor``, ``blessing`` (the blessing rule and the Markdown report).
"""
