"""The day-stepped behaviour of a cohort: who is active, their sessions, recommendations, events.

One call of ``step_day`` simulates one day for every present user of a cohort at once, with
numpy arrays over users, sessions, recommendation slots and item views; there is no loop over
users or events. A day goes:

1. each present user is active with probability engagement x weekday factor (always on the
   arrival day, whose first session is the signup);
2. an active user has 1 + geometric sessions at times drawn from a diurnal profile;
3. a session opens the app and, with some probability, requests recommendations: ``slots``
   items drawn independently from the user's policy distribution; each is clicked with a
   probability that grows with its click-bait factor and its match with the user's taste;
4. clicked recommendations, then a geometric number of browsed items (drawn from the user's
   taste), each go through the funnel view -> click -> add_to_cart -> purchase;
5. at the end of the day engagement decays and clicked recommendations renew it in proportion
   to their quality (match with taste, divided by click-bait); below a floor the user is gone.

Every draw is keyed by (user, day, purpose, slot) (``streams``), so a counterfactual run shares
its random numbers with the actual one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.simulation.catalog import Catalog
from core.simulation.config import SimulationConfig
from core.simulation.streams import Purpose, counter, geometric, uniform
from core.simulation.users import Cohort

SECONDS_PER_DAY = 86_400.0
SESSION_SLOTS = 4096
EVENT_CODES = {
    "app_open": 0,
    "view": 1,
    "click": 2,
    "add_to_cart": 3,
    "purchase": 4,
    "recommendation_click": 5,
}


@dataclass(frozen=True)
class World:
    """What every day of a run shares: the configuration, the catalog, precomputed tables."""

    config: SimulationConfig
    catalog: Catalog
    hour_cdf: np.ndarray
    hour_weight: np.ndarray

    @classmethod
    def build(cls, config: SimulationConfig, catalog: Catalog) -> World:
        weight = np.asarray(config.behaviour.hour_weights, dtype=np.float64)
        weight = weight / weight.sum()
        return cls(config, catalog, np.concatenate([[0.0], np.cumsum(weight)]), weight)

    def weekday_factor(self, day: int) -> float:
        weekday = (self.config.start.weekday() + day) % 7
        return self.config.behaviour.activity_weekday[weekday]


@dataclass(frozen=True)
class Sessions:
    """A day's sessions, in (cohort entry, time) order.

    ``entry`` indexes the cohort; ``seconds`` is the start time in seconds since the period
    start; ``rank`` is the session's number within the user's day.
    """

    entry: np.ndarray
    seconds: np.ndarray
    rank: np.ndarray
    revenue: np.ndarray
    purchases: np.ndarray


@dataclass(frozen=True)
class Events:
    """A day's events in time order within each session."""

    entry: np.ndarray
    seconds: np.ndarray
    code: np.ndarray
    item: np.ndarray
    revenue: np.ndarray
    quantity: np.ndarray
    rank: np.ndarray


@dataclass(frozen=True)
class Shown:
    """A day's shown recommendations: one per slot of each request."""

    entry: np.ndarray
    seconds: np.ndarray
    rank: np.ndarray
    item: np.ndarray
    position: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    bucket: np.ndarray


@dataclass(frozen=True)
class Day:
    """What one day produced; ``events`` and ``shown`` only when the run writes data."""

    day: int
    sessions: Sessions
    shown_count: int
    click_count: int
    events: Events | None
    shown: Shown | None


def step_day(cohort: Cohort, present: np.ndarray, day: int, world: World, emit: bool) -> Day:
    """Simulate ``day`` for the cohort entries ``present``; updates their engagement in place."""
    config, catalog, behaviour = world.config, world.catalog, world.config.behaviour
    keys = cohort.key[present]
    engagement = cohort.engagement[present]
    arrived_today = cohort.arrival_day[present] == day
    probability = np.minimum(engagement * world.weekday_factor(day), 1.0)
    active_mask = arrived_today | (uniform(keys, counter(day, Purpose.ACTIVE)) < probability)
    active = np.flatnonzero(active_mask)
    active_entry = present[active]
    active_keys = keys[active]
    active_engagement = engagement[active]

    # Sessions: 1 + geometric per active user, times from the diurnal profile, sorted per user.
    extra_mean = cohort.extra_sessions[active_entry] * (0.5 + active_engagement)
    session_count = 1 + geometric(
        uniform(active_keys, counter(day, Purpose.SESSION_COUNT)), extra_mean, behaviour.max_sessions - 1
    )
    owner = np.repeat(np.arange(len(active)), session_count)
    first_session = np.cumsum(session_count) - session_count
    rank = np.arange(len(owner)) - first_session[owner]
    session_keys = active_keys[owner]
    time_of_day = _time_of_day(world, uniform(session_keys, counter(day, Purpose.SESSION_TIME), rank))
    time_of_day = time_of_day[np.lexsort((time_of_day, owner))]
    session_entry = active_entry[owner]
    session_seconds = day * SECONDS_PER_DAY + time_of_day
    session_slot = rank * SESSION_SLOTS

    # Recommendation requests: `slots` independent draws from the user's policy distribution.
    slots = config.slots
    requested = np.flatnonzero(
        uniform(session_keys, counter(day, Purpose.REC_REQUEST), rank) < behaviour.recommendation_request
    )
    slot_session = np.repeat(requested, slots)
    position = np.tile(np.arange(1, slots + 1), len(requested))
    slot_entry = session_entry[slot_session]
    slot_keys = session_keys[slot_session]
    slot_counter = session_slot[slot_session] + position
    favourite, second = cohort.favourite[slot_entry], cohort.second[slot_entry]
    taste = catalog.taste_index(favourite, second)
    row = np.where(cohort.policy[slot_entry] == 1, catalog.personalised_row(taste), 0)
    slot_item = catalog.draw(row, uniform(slot_keys, counter(day, Purpose.REC_ITEM), slot_counter))
    level = catalog.match_level(slot_item, favourite, second)
    click_probability = np.minimum(np.asarray(behaviour.rec_click)[level] * catalog.bait[slot_item], 0.9)
    clicked = uniform(slot_keys, counter(day, Purpose.REC_CLICK), slot_counter) < click_probability
    quality = np.asarray(behaviour.rec_quality)[level] / catalog.bait[slot_item]

    # Funnel entries: clicked recommendations first (by position), then browsed items.
    view_mean = behaviour.views_base + behaviour.views_per_engagement * active_engagement[owner]
    view_count = geometric(
        uniform(session_keys, counter(day, Purpose.VIEW_COUNT), rank), view_mean, behaviour.max_views
    )
    browse_session = np.repeat(np.arange(len(owner)), view_count)
    browse_index = np.arange(len(browse_session)) - (np.cumsum(view_count) - view_count)[browse_session]
    browse_entry = session_entry[browse_session]
    browse_taste = catalog.taste_index(cohort.favourite[browse_entry], cohort.second[browse_entry])
    browse_item = catalog.draw(
        catalog.browse_row(browse_taste),
        uniform(
            session_keys[browse_session],
            counter(day, Purpose.BROWSE_ITEM),
            session_slot[browse_session] + browse_index,
        ),
    )
    funnel_session = np.concatenate([slot_session[clicked], browse_session])
    funnel_item = np.concatenate([slot_item[clicked], browse_item])
    from_recommendation = np.concatenate([np.ones(clicked.sum(), bool), np.zeros(len(browse_session), bool)])
    order = np.argsort(funnel_session, kind="stable")
    funnel_session, funnel_item, from_recommendation = (
        funnel_session[order],
        funnel_item[order],
        from_recommendation[order],
    )
    funnel_per_session = np.bincount(funnel_session, minlength=len(owner))
    funnel_start = np.cumsum(funnel_per_session) - funnel_per_session
    funnel_rank = np.arange(len(funnel_session)) - funnel_start[funnel_session]
    funnel_entry = session_entry[funnel_session]
    funnel_keys = session_keys[funnel_session]
    funnel_counter = session_slot[funnel_session] + funnel_rank
    funnel_level = catalog.match_level(
        funnel_item, cohort.favourite[funnel_entry], cohort.second[funnel_entry]
    )
    clicks = (
        uniform(funnel_keys, counter(day, Purpose.CLICK), funnel_counter)
        < np.asarray(behaviour.view_click)[funnel_level]
    )
    carts = clicks & (
        uniform(funnel_keys, counter(day, Purpose.CART), funnel_counter)
        < np.asarray(behaviour.cart)[funnel_level]
    )
    onboarded = (cohort.onboarding[funnel_entry] == 1) & (
        day < cohort.arrival_day[funnel_entry] + behaviour.onboarding_days
    )
    buy_probability = np.minimum(
        cohort.buyer[funnel_entry]
        * np.asarray(behaviour.buy_match)[funnel_level]
        * np.where(onboarded, behaviour.onboarding_buyer, 1.0),
        behaviour.max_buy,
    )
    purchases = carts & (uniform(funnel_keys, counter(day, Purpose.BUY), funnel_counter) < buy_probability)
    quantity = np.where(
        purchases,
        1 + geometric(uniform(funnel_keys, counter(day, Purpose.QUANTITY), funnel_counter), 0.25, 4),
        0,
    )
    revenue = np.round(catalog.price[funnel_item] * quantity, 2)
    session_revenue = np.bincount(funnel_session, weights=revenue, minlength=len(owner))
    session_purchases = np.bincount(funnel_session, weights=purchases, minlength=len(owner)).astype(np.int32)

    # End of day: decay, then renewal by clicked recommendations, then the dormancy floor.
    keep = np.bincount(
        np.searchsorted(present, slot_entry[clicked]),
        weights=np.log1p(-behaviour.renewal * np.minimum(quality[clicked], 1.0)),
        minlength=len(present),
    )
    renewed = 1.0 - (1.0 - engagement * np.exp(-cohort.decay[present])) * np.exp(keep)
    cohort.engagement[present] = np.where(renewed < behaviour.dormant_below, 0.0, renewed)

    sessions = Sessions(session_entry, session_seconds, rank, session_revenue, session_purchases)
    if not emit:
        return Day(day, sessions, len(slot_item), int(clicked.sum()), None, None)

    bucket = np.digitize(engagement[np.searchsorted(present, slot_entry)], (0.2, 0.5)).astype(np.int8)
    shown = Shown(
        slot_entry,
        session_seconds[slot_session],
        rank[slot_session],
        slot_item,
        position,
        catalog.distribution[row, slot_item],
        clicked.astype(np.float64),
        bucket,
    )
    events = _events(
        world,
        sessions,
        session_keys,
        funnel_session,
        funnel_item,
        from_recommendation,
        clicks,
        carts,
        purchases,
        quantity,
        revenue,
        day,
    )
    return Day(day, sessions, len(slot_item), int(clicked.sum()), events, shown)


def _time_of_day(world: World, u: np.ndarray) -> np.ndarray:
    """Seconds after midnight, by inversion of the piecewise-uniform hourly profile."""
    hour = np.minimum(np.searchsorted(world.hour_cdf, u, side="right") - 1, 23)
    within = (u - world.hour_cdf[hour]) / np.maximum(world.hour_weight[hour], 1e-12)
    return (hour + np.clip(within, 0.0, 1.0)) * 3600.0


def _events(
    world: World,
    sessions: Sessions,
    session_keys: np.ndarray,
    funnel_session: np.ndarray,
    funnel_item: np.ndarray,
    from_recommendation: np.ndarray,
    clicks: np.ndarray,
    carts: np.ndarray,
    purchases: np.ndarray,
    quantity: np.ndarray,
    revenue: np.ndarray,
    day: int,
) -> Events:
    """Lay out each session's events: app_open, then per funnel entry its steps in order."""
    per_entry = from_recommendation.astype(np.int64) + 1 + clicks + carts + purchases
    session_count = len(sessions.entry)
    per_session = 1 + np.bincount(funnel_session, weights=per_entry, minlength=session_count).astype(np.int64)
    session_offset = np.cumsum(per_session) - per_session
    entry_cumulative = np.cumsum(per_entry) - per_entry
    first_entry = np.searchsorted(funnel_session, np.arange(session_count))
    first_cumulative = np.append(entry_cumulative, 0)[first_entry]
    base = session_offset[funnel_session] + 1 + entry_cumulative - first_cumulative[funnel_session]

    total = int(per_session.sum())
    code = np.zeros(total, np.int8)
    item = np.full(total, -1, np.int32)
    money = np.zeros(total)
    amount = np.zeros(total, np.int8)
    position = base + from_recommendation
    code[base[from_recommendation]] = EVENT_CODES["recommendation_click"]
    item[base[from_recommendation]] = funnel_item[from_recommendation]
    code[position] = EVENT_CODES["view"]
    item[position] = funnel_item
    for step, mask in (("click", clicks), ("add_to_cart", carts), ("purchase", purchases)):
        position = position + 1
        code[position[mask]] = EVENT_CODES[step]
        item[position[mask]] = funnel_item[mask]
    position = position[purchases]
    money[position] = revenue[purchases]
    amount[position] = quantity[purchases]

    event_session = np.repeat(np.arange(session_count), per_session)
    index_in_session = np.arange(total) - session_offset[event_session]
    gap = -world.config.behaviour.event_gap_mean * np.log(
        uniform(
            session_keys[event_session],
            counter(day, Purpose.GAP),
            sessions.rank[event_session] * SESSION_SLOTS + index_in_session,
        )
    )
    gap[session_offset] = 0.0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[session_offset][event_session]
    day_end = (day + 1) * SECONDS_PER_DAY - 1e-3
    seconds = np.minimum(sessions.seconds[event_session] + elapsed, day_end)
    return Events(
        sessions.entry[event_session],
        seconds,
        code,
        item,
        money,
        amount,
        sessions.rank[event_session].astype(np.int16),
    )


def run_days(cohort: Cohort, world: World, first_day: int, last_day: int, emit: bool) -> Iterator[Day]:
    """Step the cohort through days ``first_day`` to ``last_day - 1``; yields each day's output.

    Only present users are simulated: arrived, and not yet gone (engagement above zero). The
    caller may read or copy the cohort between days (e.g. to snapshot state at an as-of date).
    """
    order = np.argsort(cohort.arrival_day, kind="stable")
    arrivals = cohort.arrival_day[order]
    next_arrival = int(np.searchsorted(arrivals, first_day))
    present = np.sort(order[arrivals < first_day])
    present = present[cohort.engagement[present] > 0]
    for day in range(first_day, last_day):
        upto = int(np.searchsorted(arrivals, day, side="right"))
        if upto > next_arrival:
            present = np.union1d(present, order[next_arrival:upto])
            next_arrival = upto
        if len(present) == 0:
            yield Day(day, _no_sessions(), 0, 0, None, None)
            continue
        yield step_day(cohort, present, day, world, emit)
        present = present[cohort.engagement[present] > 0]


def _no_sessions() -> Sessions:
    empty = np.empty(0)
    return Sessions(empty.astype(np.int64), empty, empty.astype(np.int64), empty, empty.astype(np.int32))
