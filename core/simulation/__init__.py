"""The pieces of Tenure's seeded simulator; ``core.simulate`` is the entry point.

- ``config``: the configuration and the behavioural parameters (the ground truth's knobs);
- ``streams``: counter-based random numbers keyed by (user, day, purpose, slot);
- ``catalog``: items, titles, prices and the item distributions of the recommendation policies;
- ``users``: arrivals, attributes and latent traits;
- ``process``: the day-stepped behaviour of a cohort of users;
- ``truth``: counterfactual runs that give the ground truth.
"""
