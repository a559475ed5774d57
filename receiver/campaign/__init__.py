"""Connecting Campaign: its REST API for webhooks (`client`) and registering the receiver with
it (`registration`: setup, status, teardown). The command line is receiver/cli/campaign.py.

Also the one list of Campaign's event types, which the rest of the receiver imports from here.
"""

# The documented event types, as a webhook of each is created. Campaign's list has grown over
# the years: an event of any other type is validated and stored all the same (docs/answers.md);
# these are the ones the metrics name, `receiver campaign setup` registers and `receiver
# simulate` makes up.
EVENT_TYPES = (
    "open", "click", "sent", "bounce", "unsubscribe", "spamcomplaint", "singleoptin",
    "confirmedoptin", "doubleoptin", "blocklist", "archive", "filteredbyblocklist",
)  # fmt: skip
# The name Campaign lists a webhook type back under, and gives its events, where it differs.
LISTED_AS = {"archive": "archived"}
# The types that can change a recipient's status: event_status() in migrations/004_reporting.sql
# decides which status (and a bounce changes it only when hard).
STATUS_TYPES = (
    "singleoptin", "doubleoptin", "confirmedoptin", "unsubscribe", "bounce", "spamcomplaint",
    "blocklist", "filteredbyblocklist",
)  # fmt: skip
