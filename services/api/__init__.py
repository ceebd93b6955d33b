"""The HTTP API: routes, access rules, the live view of the log (see README, *Agents* and *API*)."""
