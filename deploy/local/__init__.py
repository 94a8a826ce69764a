"""``make run`` and ``make test`` on one machine: ``python -m deploy.local run|test`` (see services.py)."""
