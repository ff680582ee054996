"""Churn and lifetime-value models, all behind one interface.

Every model is fitted on data known before an as-of date and predicts, per user, the probability
of churn (no activity over the horizon) and the lifetime value (revenue over the horizon):
``fit`` learns, ``predict`` returns a DataFrame ``(user_id, churn_prob, ltv_pred, ...)``, and
``save(dir)`` / ``load(dir)`` write and read a folder of JSON (never a pickle). Definitions:
docs/METRICS.md, "Churn and lifetime value models".
"""
