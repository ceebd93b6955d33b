"""A discrete-event simulator of a contact centre's day: the real router against baselines."""
