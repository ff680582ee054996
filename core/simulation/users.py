"""Who arrives and when: attributes and latent traits of simulated users.

Arrivals are stratified: user ``i`` of ``n`` arrives at quantile ``(i + u) / n`` of an arrival
rate that grows exponentially over the period, with weekday seasonality. User numbers are thus
in arrival order, and a chunk of consecutive users covers a stretch of time.

Latent traits (never written to the event tables):
- engagement at arrival: logit-normal, scaled by channel and platform;
- decay rate of engagement: gamma, scaled by channel (``social`` decays fastest) and plan;
- extra sessions on an active day: lognormal mean;
- buyer propensity: lognormal, scaled by plan (``pro`` spends most) and country;
- taste: a favourite and a different second category.
Each user is served by one recommendation policy, ``personalised`` with a probability that
depends on the platform; users who arrive during the onboarding window are split 50/50.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.special import expit, gammaincinv

from core.simulation.catalog import CATEGORY_WEIGHTS
from core.simulation.config import SimulationConfig
from core.simulation.streams import Purpose, categorical, counter, normal, uniform, user_keys


@dataclass
class Cohort:
    """Users being simulated together, one entry per user (or per replication of a user).

    ``engagement`` is the only state that changes from day to day; the rest is fixed at arrival.
    ``onboarding`` is -1 for users outside the onboarding experiment, else the variant index.
    """

    user: np.ndarray
    key: np.ndarray
    arrival_day: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    platform: np.ndarray
    plan: np.ndarray
    initial_engagement: np.ndarray
    decay: np.ndarray
    extra_sessions: np.ndarray
    buyer: np.ndarray
    favourite: np.ndarray
    second: np.ndarray
    policy: np.ndarray
    policy_propensity: np.ndarray
    onboarding: np.ndarray
    engagement: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> Cohort:
        """A copy holding the given entries (fancy indexing copies every array)."""
        return Cohort(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def reset(self, onboarding_engagement: float) -> None:
        """Set engagement to its value at arrival, with the onboarding treatment applied."""
        boost = np.where(self.onboarding == 1, onboarding_engagement, 1.0)
        self.engagement = np.minimum(self.initial_engagement * boost, 0.97)


def arrival_days(config: SimulationConfig, user: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Arrival day (days from ``start``) of each user, by stratified inversion of the rate."""
    behaviour = config.behaviour
    day = np.arange(config.days)
    weekday = (config.start.weekday() + day) % 7
    rate = (
        np.exp(behaviour.arrival_growth * day / config.days) * np.asarray(behaviour.arrival_weekday)[weekday]
    )
    cumulative = np.cumsum(rate) / rate.sum()
    quantile = (user + uniform(keys, counter(0, Purpose.ARRIVAL))) / config.users
    return np.minimum(np.searchsorted(cumulative, quantile, side="right"), config.days - 1).astype(np.int32)


def build_cohort(config: SimulationConfig, first_user: int, last_user: int) -> Cohort:
    """Users ``first_user`` to ``last_user - 1`` with their attributes and latent traits."""
    behaviour = config.behaviour
    user = np.arange(first_user, last_user, dtype=np.int64)
    keys = user_keys(config.seed, user)

    def draw(purpose: Purpose) -> np.ndarray:
        return uniform(keys, counter(0, purpose))

    country = categorical(draw(Purpose.COUNTRY), behaviour.country_weights).astype(np.int8)
    channel = categorical(draw(Purpose.CHANNEL), behaviour.channel_weights).astype(np.int8)
    platform = categorical(draw(Purpose.PLATFORM), behaviour.platform_weights).astype(np.int8)
    plan = categorical(draw(Purpose.PLAN), behaviour.plan_weights).astype(np.int8)
    logit = behaviour.engagement_logit_mean + behaviour.engagement_logit_sd * normal(
        keys, counter(0, Purpose.ENGAGEMENT)
    )
    engagement = expit(logit) * np.asarray(behaviour.channel_engagement)[channel]
    engagement *= np.asarray(behaviour.platform_engagement)[platform]
    decay = behaviour.decay_scale * gammaincinv(behaviour.decay_shape, draw(Purpose.DECAY))
    decay *= np.asarray(behaviour.channel_decay)[channel] * np.asarray(behaviour.plan_decay)[plan]
    extra_sessions = behaviour.extra_sessions_mean * np.exp(
        behaviour.extra_sessions_sd * normal(keys, counter(0, Purpose.SESSIONS_RATE))
        - behaviour.extra_sessions_sd**2 / 2
    )
    buyer = np.exp(
        behaviour.buyer_log_mean + behaviour.buyer_log_sd * normal(keys, counter(0, Purpose.BUYER))
    )
    buyer *= np.asarray(behaviour.plan_spend)[plan] * np.asarray(behaviour.country_spend)[country]
    categories = len(CATEGORY_WEIGHTS)
    favourite = categorical(draw(Purpose.TASTE), CATEGORY_WEIGHTS).astype(np.int8)
    offset = 1 + np.floor(draw(Purpose.TASTE_SECOND) * (categories - 1)).astype(np.int8)
    second = ((favourite + offset) % categories).astype(np.int8)
    policy_propensity = np.asarray(behaviour.platform_personalised)[platform]
    policy = (draw(Purpose.POLICY) < policy_propensity).astype(np.int8)
    arrival = arrival_days(config, user, keys)
    low, high = config.onboarding_window
    in_onboarding = (arrival >= low) & (arrival < high)
    onboarding = np.where(in_onboarding, (draw(Purpose.ONBOARDING) < 0.5).astype(np.int8), -1).astype(np.int8)
    cohort = Cohort(
        user=user,
        key=keys,
        arrival_day=arrival,
        country=country,
        channel=channel,
        platform=platform,
        plan=plan,
        initial_engagement=engagement,
        decay=decay,
        extra_sessions=extra_sessions,
        buyer=buyer,
        favourite=favourite,
        second=second,
        policy=policy,
        policy_propensity=np.where(policy == 1, policy_propensity, 1.0 - policy_propensity),
        onboarding=onboarding,
        engagement=engagement,
    )
    cohort.reset(behaviour.onboarding_engagement)
    return cohort
