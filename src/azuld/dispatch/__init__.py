"""The dispatcher: where the sans-I/O core (`azuld.core`) meets the event log.

One `Dispatcher` (`dispatcher.py`) is made of parts, one per module:

    fetch.py       a plugin's long-poll: fill the lanes, filter, lease, wait (`Dispatcher.fetch`)
    statuses.py    posted events and the statuses that finish jobs (`Dispatcher.publish`)
    leases.py      the lease reaper: expiry, and the error-timeout of a job out of attempts
    keys.py        the plugin-key registry: each key's lanes, built once, assigned, committed
    replay.py      the replay cache's I/O: loaded, followed, answering jobs without the plugin
    security.py    `max-security`: the checker, and background checks of undecided pairs
    admin.py       dead letters, re-offers, lag and the per-key summaries (the admin API)
    background.py  what `Dispatcher.run` starts, and the log follower that wakes long-polls
    scan.py        reading topics through to their end, in batches
    avro_records.py  each handed-out record's Avro, written once, for Go plugins' fetches

A job's life: a fetch (`fetch.py`) finds it in one of its plugin key's lanes (`keys.py`) and hands
it out as a lease; the plugin's heartbeats extend the lease and its final status, once stored,
finishes the job and moves the key's commit (`statuses.py`); a lease that runs out puts the job
back at the front of its lane, and after the last attempt the dispatcher stores an
`error-timeout` status of its own (`leases.py`).
"""

from azuld.dispatch.dispatcher import Dispatcher
from azuld.dispatch.fetch import FetchResult
from azuld.dispatch.leases import TICK_SECONDS

__all__ = ["TICK_SECONDS", "Dispatcher", "FetchResult"]
