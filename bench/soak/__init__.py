"""The soak: the demo models under mixed open-loop load and scheduled faults, every request accounted for.

``run.py`` (the command, ``python -m bench soak``), ``kinds.py`` (the requests and how an answer is judged),
``client.py`` (retries, outcomes, open-loop arrivals), ``faults.py`` (what is injected and how recovery is
timed), ``drift.py`` (per-process resources over the run), ``report.py`` (the accounting and the table).
"""
