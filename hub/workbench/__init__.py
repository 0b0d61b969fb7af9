"""The steward workbench and the customers' self-service pages (`hub workbench`):
app.py (the process, its producer, the review feed, middlewares), auth.py
(users, roles, sessions, tokens), views.py (pages), templates/ and static/
(htmx and Chart.js vendored: nothing is fetched from elsewhere at run time)."""
