"""The item catalog and the item distributions that recommendations and browsing draw from.

Items belong to categories; each has a price (lognormal per category), a popularity (Zipf) and
a click-bait factor that grows with popularity: popular items attract clicks but satisfy less.
A user's taste is a favourite and a second category; an item's *match level* with a user is 2
(favourite), 1 (second) or 0 (other).

Item distributions are rows of one matrix: row 0 is the ``popularity`` policy (the same for
everyone), then one row per taste for the ``personalised`` policy, then one row per taste for
organic browsing. Drawing an item is inversion of the row's cumulative distribution, so the
probability of the drawn item (the logging propensity) is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.simulation.config import Behaviour

CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "electronics": (
        ("Wireless", "Smart", "Portable", "Compact", "Ultra-Slim", "Pro"),
        ("Noise-Cancelling", "Bluetooth", "4K", "Fast-Charging", "Waterproof"),
        ("Headphones", "Speaker", "Earbuds", "Monitor", "Charger", "Keyboard", "Webcam", "Smartwatch"),
    ),
    "home": (
        ("Cozy", "Modern", "Handcrafted", "Minimalist", "Rustic"),
        ("Ceramic", "Bamboo", "Linen", "Cast-Iron", "Stainless Steel"),
        ("Vase", "Table Lamp", "Throw Blanket", "Skillet", "Cutting Board", "Cushion"),
    ),
    "fashion": (
        ("Classic", "Slim-Fit", "Vintage", "Everyday", "Oversized"),
        ("Cotton", "Denim", "Leather", "Merino Wool", "Linen"),
        ("Jacket", "Jeans", "Sneakers", "Scarf", "T-Shirt", "Backpack"),
    ),
    "beauty": (
        ("Hydrating", "Gentle", "Organic", "Nourishing", "Radiant"),
        ("Vitamin C", "Hyaluronic", "Rose", "Charcoal", "Aloe"),
        ("Serum", "Face Cream", "Cleanser", "Lip Balm", "Shampoo", "Face Mask"),
    ),
    "sports": (
        ("Lightweight", "Durable", "Adjustable", "Foldable", "Trail"),
        ("Carbon", "Neoprene", "Non-Slip", "Breathable", "Insulated"),
        ("Yoga Mat", "Water Bottle", "Running Shoes", "Dumbbells", "Bike Helmet", "Tent"),
    ),
    "books": (
        ("Illustrated", "Collected", "Pocket", "Annotated", "Hardcover"),
        ("Mystery", "Science Fiction", "History", "Poetry", "Travel"),
        ("Novel", "Anthology", "Guide", "Memoir", "Atlas", "Cookbook"),
    ),
    "toys": (
        ("Colorful", "Magnetic", "Wooden", "Interactive", "Giant"),
        ("Building", "Puzzle", "Plush", "Remote-Control", "Musical"),
        ("Blocks", "Robot", "Dinosaur", "Train Set", "Craft Kit", "Teddy Bear"),
    ),
    "grocery": (
        ("Organic", "Single-Origin", "Artisan", "Roasted", "Spicy"),
        ("Arabica", "Dark Chocolate", "Green Tea", "Olive", "Wildflower Honey"),
        ("Coffee Beans", "Bar", "Sampler", "Oil", "Granola", "Sauce"),
    ),
}
CATEGORY_NAMES = tuple(CATEGORIES)
CATEGORY_WEIGHTS = (0.18, 0.14, 0.16, 0.12, 0.1, 0.1, 0.08, 0.12)
# Median price and log-scale spread of each category's lognormal price.
CATEGORY_PRICES = (
    (60.0, 0.7),
    (30.0, 0.6),
    (40.0, 0.5),
    (18.0, 0.5),
    (35.0, 0.7),
    (14.0, 0.3),
    (22.0, 0.5),
    (9.0, 0.4),
)


@dataclass(frozen=True)
class Catalog:
    """Items and the item distributions; arrays are indexed by item number."""

    titles: tuple[str, ...]
    category: np.ndarray
    price: np.ndarray
    popularity: np.ndarray
    bait: np.ndarray
    distribution: np.ndarray
    shifted_cdf: np.ndarray

    @property
    def size(self) -> int:
        return len(self.titles)

    @property
    def categories(self) -> int:
        return len(CATEGORY_NAMES)

    def taste_index(self, favourite: np.ndarray, second: np.ndarray) -> np.ndarray:
        return favourite.astype(np.int64) * self.categories + second

    def personalised_row(self, taste: np.ndarray) -> np.ndarray:
        return 1 + taste

    def browse_row(self, taste: np.ndarray) -> np.ndarray:
        return 1 + self.categories**2 + taste

    def draw(self, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Items drawn by inversion: ``u`` in (0, 1) against each draw's distribution row."""
        flat = np.searchsorted(self.shifted_cdf, rows + u, side="right")
        return np.minimum(flat - rows * self.size, self.size - 1)

    def match_level(self, items: np.ndarray, favourite: np.ndarray, second: np.ndarray) -> np.ndarray:
        category = self.category[items]
        return np.where(category == favourite, 2, np.where(category == second, 1, 0))


def build_catalog(size: int, seed: int, behaviour: Behaviour) -> Catalog:
    """The catalog of ``size`` items; a loop per item is fine here (hundreds of items)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA7A106]))
    weights = np.asarray(CATEGORY_WEIGHTS) / sum(CATEGORY_WEIGHTS)
    category = np.sort(rng.choice(len(CATEGORY_NAMES), size=size, p=weights))
    titles: list[str] = []
    price = np.empty(size)
    for index, (adjectives, features, nouns) in enumerate(CATEGORIES.values()):
        members = np.flatnonzero(category == index)
        combinations = len(adjectives) * len(features) * len(nouns)
        picks = rng.permutation(combinations)[: len(members)] if len(members) <= combinations else None
        for rank in range(len(members)):
            pick = int(picks[rank]) if picks is not None else int(rng.integers(combinations))
            noun = nouns[pick % len(nouns)]
            feature = features[(pick // len(nouns)) % len(features)]
            adjective = adjectives[pick // (len(nouns) * len(features))]
            titles.append(f"{adjective} {feature} {noun}")
        median, spread = CATEGORY_PRICES[index]
        raw = median * np.exp(spread * rng.standard_normal(len(members)))
        price[members] = np.maximum(np.round(raw) - 0.01, 1.99)
    rank = rng.permutation(size) + 1
    popularity = rank.astype(np.float64) ** -0.9
    popularity /= popularity.sum()
    percentile = 1.0 - (rank - 1) / max(size - 1, 1)
    bait = 0.8 + 2.2 * percentile**4
    distribution = _distributions(category, popularity, behaviour)
    cumulative = np.cumsum(distribution, axis=1)
    cumulative /= cumulative[:, -1:]
    cumulative[:, -1] = 1.0
    shifted = (cumulative + np.arange(len(distribution))[:, None]).ravel()
    return Catalog(tuple(titles), category, price, popularity, bait, distribution, shifted)


def _distributions(category: np.ndarray, popularity: np.ndarray, behaviour: Behaviour) -> np.ndarray:
    count = len(CATEGORY_NAMES)
    tastes = [(favourite, second) for favourite in range(count) for second in range(count)]

    def taste_rows(exponent: float, by_level: tuple[float, ...]) -> np.ndarray:
        rows = np.empty((len(tastes), len(category)))
        for index, (favourite, second) in enumerate(tastes):
            level = np.where(category == favourite, 2, np.where(category == second, 1, 0))
            rows[index] = popularity**exponent * np.asarray(by_level)[level]
        return rows

    popular = popularity[None, :] ** behaviour.popularity_exponent
    personalised = taste_rows(behaviour.personalised_popularity_exponent, behaviour.personalised_taste)
    browse = taste_rows(behaviour.browse_popularity_exponent, behaviour.browse_taste)
    matrix = np.vstack([popular, personalised, browse])
    return matrix / matrix.sum(axis=1, keepdims=True)
