"""The app's views, once: the navigation in app.py and the Home page's links both read this list,
so a new view is linked from Home as soon as it is in the navigation."""

from __future__ import annotations

from typing import NamedTuple


class View(NamedTuple):
    path: str
    title: str
    icon: str
    description: str


HOME = View("pages/home/home.py", "Home", ":material/home:", "Headline figures and links to every view.")

# Navigation groups, in the sidebar's order.
VIEW_GROUPS: dict[str, tuple[View, ...]] = {
    "Explore": (
        View(
            "pages/explore/retention.py",
            "Retention",
            ":material/grid_on:",
            "Cohort triangle, curves and who came back.",
        ),
        View(
            "pages/explore/survival.py",
            "Survival",
            ":material/timeline:",
            "Kaplan-Meier curves, medians, RMST, log-rank and Cox.",
        ),
        View(
            "pages/explore/lifecycle.py",
            "Lifecycle",
            ":material/cycle:",
            "New, returning, resurrecting and dormant users; stages on a date.",
        ),
        View(
            "pages/explore/funnels.py",
            "Funnels",
            ":material/filter_alt:",
            "Step conversion within a window, drop-offs, conversion by week.",
        ),
        View(
            "pages/explore/stickiness.py",
            "Stickiness",
            ":material/push_pin:",
            "DAU, WAU, MAU and how many days users are active.",
        ),
    ),
    "Experiments": (
        View(
            "pages/experiments/experiments.py",
            "Experiments",
            ":material/science:",
            "A/B reviews: metrics, intervals, SRM, segments, planning.",
        ),
        View(
            "pages/whatif/whatif.py",
            "What-if",
            ":material/alt_route:",
            "Other recommendation policies and targeting rules, from logged data.",
        ),
    ),
    "Models": (
        View(
            "pages/models/models.py",
            "Models",
            ":material/model_training:",
            "Train churn and LTV models and compare them on held-out users.",
        ),
        View(
            "pages/models/score.py",
            "Score",
            ":material/online_prediction:",
            "Score an uploaded events file without touching the store.",
        ),
    ),
    "Data": (
        View(
            "pages/data/data.py",
            "Data",
            ":material/database:",
            "Tables, load history, uploads, dataset switch.",
        ),
    ),
}
