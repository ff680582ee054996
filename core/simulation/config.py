"""The simulator's configuration: the run's size and seed, and how simulated users behave.

``SimulationConfig`` holds what a run is (how many users, which seed, which period, which
experiments) and a ``Behaviour``: the parameters of the data-generating process, i.e. the ground
truth's knobs. Both are frozen and their ``repr`` is the content hash of a simulated store.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP")
CHANNELS = ("organic", "paid_search", "social", "referral", "email")
PLATFORMS = ("ios", "android", "web")
PLANS = ("free", "plus", "pro")
POLICIES = ("popularity", "personalised")
VARIANTS = ("control", "treatment")
EVENT_NAMES = ("app_open", "view", "click", "add_to_cart", "purchase", "recommendation_click")
ENGAGEMENT_BUCKETS = ("low", "medium", "high")


@dataclass(frozen=True)
class Behaviour:
    """Parameters of simulated behaviour. Rates are per day, times in seconds, money in dollars.

    Engagement is a number in [0, 1]: on a day, a user is active with probability engagement
    times the weekday factor. Each day engagement decays by ``exp(-decay)`` (a per-user rate,
    gamma distributed, scaled by channel and plan); a clicked recommendation of quality ``q``
    renews it to ``1 - (1 - e) * (1 - renewal * q)``. Below ``dormant_below`` the user has left
    for good.
    """

    arrival_growth: float = 0.7
    arrival_weekday: tuple[float, ...] = (0.95, 0.95, 0.95, 1.0, 1.0, 1.1, 1.05)
    activity_weekday: tuple[float, ...] = (0.88, 0.86, 0.86, 0.88, 0.95, 1.3, 1.35)
    hour_weights: tuple[float, ...] = (
        0.3, 0.15, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 1.4, 1.3, 1.2, 1.3,
        1.6, 1.4, 1.2, 1.2, 1.3, 1.6, 2.0, 2.4, 2.5, 2.1, 1.3, 0.0,
    )  # fmt: skip
    country_weights: tuple[float, ...] = (0.34, 0.1, 0.1, 0.08, 0.14, 0.16, 0.08)
    country_spend: tuple[float, ...] = (1.3, 1.1, 1.1, 1.0, 0.6, 0.45, 1.2)
    channel_weights: tuple[float, ...] = (0.38, 0.22, 0.2, 0.1, 0.1)
    channel_engagement: tuple[float, ...] = (1.0, 0.95, 0.8, 1.15, 1.05)
    channel_decay: tuple[float, ...] = (0.9, 1.15, 1.7, 0.75, 1.0)
    platform_weights: tuple[float, ...] = (0.38, 0.42, 0.2)
    platform_engagement: tuple[float, ...] = (1.1, 1.0, 0.85)
    platform_personalised: tuple[float, ...] = (0.7, 0.5, 0.3)
    plan_weights: tuple[float, ...] = (0.82, 0.13, 0.05)
    plan_decay: tuple[float, ...] = (1.0, 0.7, 0.55)
    plan_spend: tuple[float, ...] = (1.0, 2.0, 4.0)
    engagement_logit_mean: float = 0.0
    engagement_logit_sd: float = 0.9
    decay_shape: float = 0.8
    decay_scale: float = 0.21
    dormant_below: float = 0.02
    renewal: float = 0.15
    extra_sessions_mean: float = 0.25
    extra_sessions_sd: float = 0.7
    max_sessions: int = 8
    views_base: float = 1.0
    views_per_engagement: float = 1.6
    max_views: int = 40
    buyer_log_mean: float = -3.9
    buyer_log_sd: float = 1.4
    recommendation_request: float = 0.6
    # Per match level of an item with a user's taste: 0 other, 1 second category, 2 favourite.
    rec_click: tuple[float, ...] = (0.035, 0.05, 0.075)
    rec_quality: tuple[float, ...] = (0.05, 0.4, 1.0)
    view_click: tuple[float, ...] = (0.22, 0.3, 0.4)
    cart: tuple[float, ...] = (0.15, 0.22, 0.3)
    buy_match: tuple[float, ...] = (0.6, 1.0, 1.4)
    max_buy: float = 0.95
    popularity_exponent: float = 1.3
    personalised_popularity_exponent: float = 0.3
    personalised_taste: tuple[float, ...] = (0.1, 1.5, 8.0)
    browse_popularity_exponent: float = 0.6
    browse_taste: tuple[float, ...] = (0.5, 1.5, 4.0)
    event_gap_mean: float = 35.0
    onboarding_engagement: float = 1.2
    onboarding_buyer: float = 1.6
    onboarding_days: int = 30


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated dataset.

    Args:
        users: how many users arrive over the period.
        seed: the seed of every random draw.
        start: the day the first users arrive (UTC).
        days: length of the period; no event falls on or after ``start + days``.
        chunk_users: users simulated together (bounds memory; the data does not depend on it).
        items: catalog size.
        slots: recommendations shown per request.
        onboarding_window: arrival days (from ``start``) of users in ``onboarding_checklist``.
        checkout_window: days during which active users enter ``checkout_button_color``.
        truth_replications: Monte Carlo continuations per user for ``truth.user_outcomes``.
        truth_as_of_days: as-of dates of ``truth.user_outcomes``, in days before the period end.
        truth_horizon_days: the horizon of ``truth.user_outcomes``.
        behaviour: the parameters of simulated behaviour.
    """

    users: int = 20_000
    seed: int = 7
    start: dt.date = dt.date(2025, 7, 1)
    days: int = 365
    chunk_users: int = 50_000
    items: int = 600
    slots: int = 3
    onboarding_window: tuple[int, int] = (90, 150)
    checkout_window: tuple[int, int] = (200, 260)
    truth_replications: int = 32
    truth_as_of_days: tuple[int, ...] = (90, 180)
    truth_horizon_days: int = 90
    behaviour: Behaviour = field(default_factory=Behaviour)

    def parameters(self) -> dict[str, str]:
        """Every knob as text, for ``truth.parameters``."""
        knobs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "behaviour"}
        knobs.update({f"behaviour.{f.name}": getattr(self.behaviour, f.name) for f in fields(self.behaviour)})
        return {key: str(value) for key, value in knobs.items()}
